package e2e

import (
	"context"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// containerRuntimeCases are the real-node tests. Each runs on today's
// containerd (testbed.Runtimes[0]); those marked everywhere run on each
// other runtime of the test bed too: what a platform team running that
// runtime needs to hold before it installs cainjekt.
var containerRuntimeCases = []struct {
	name       string
	test       func(*testing.T)
	everywhere bool
}{
	{"PodWithoutAnnotationIsUntouched", testPodWithoutAnnotationIsUntouched, true},
	{"OptedInPodTrustsTheCA", testOptedInPodTrustsTheCA, true},
	{"MainProcessTrustsTheCA", testMainProcessTrustsTheCA, true},
	{"JVMAndPythonTrustTheCA", testJVMAndPythonTrustTheCA, true},
	{"ScratchGoImage", testScratchGoImage, true},
	{"ReadOnlyRootfsIsInjected", testReadOnlyRootfsIsInjected, true},
	{"ExecSessionSeesTheTrustEnv", testExecSessionSeesTheTrustEnv, true},
	{"InitContainerIsInjected", testInitContainerIsInjected, true},
	{"PluginSurvivesARuntimeRestart", testPluginSurvivesARuntimeRestart, true},
	{"RotatedCAFileReachesTheNextPod", testRotatedCAFileReachesTheNextPod, true},
	{"FailPolicyWithoutCAFile", testFailPolicyWithoutCAFile, true},
	{"HostileImageOnTheNode", testHostileImageOnTheNode, true},
	{"StagingIsRemovedWithTheContainer", testStagingIsRemovedWithTheContainer, true},
	{"UserNamespacedPods", testUserNamespacedPods, true},
	{"ContainersOfAnImageOnTheNode", testContainersOfAnImageOnTheNode, true},
	{"DoctorAndGracefulShutdown", testDoctorAndGracefulShutdown, true},
	{"ExcludedContainerIsUntouched", testExcludedContainerIsUntouched, false},
	{"MetricsAreValidAndCount", testMetricsAreValidAndCount, false},
	{"PodMountedBundleStaysTrusted", testPodMountedBundleStaysTrusted, true},
	{"ReplacedTrustStoreKeepsItsXattrs", testReplacedTrustStoreKeepsItsXattrs, false},
	{"SecondPluginRefusesToRun", testSecondPluginRefusesToRun, false},
	{"NamespaceOptInAndOptOut", testNamespaceOptInAndOptOut, false},
	{"PodPicksANamedBundle", testPodPicksANamedBundle, false},
	{"RequiredPluginsAnnotation", testRequiredPluginsAnnotation, true},
	{"LanguageRuntimesTrustTheCA", testLanguageRuntimesTrustTheCA, false},
	{"EachTrustVariableIsHonoured", testEachTrustVariableIsHonoured, false},
	{"JavaFallbackTruststore", testJavaFallbackTruststore, false},
	{"GRPCTrustsTheCA", testGRPCTrustsTheCA, false},
	{"DistrolessImage", testDistrolessImage, false},
}

var onlyRuntimes = flag.String("e2e.runtimes", "", "comma-separated runtimes to run the tests on (default: every one: "+runtimeNames()+")")

func runtimeNames() string {
	var names []string
	for _, rt := range testbed.Runtimes {
		names = append(names, rt.Name)
	}
	return strings.Join(names, ",")
}

// TestOnEachContainerRuntime runs the cases on a node of each runtime in
// turn: each test's name says which, and a runtime whose node does not
// come up counts as one failure.
func TestOnEachContainerRuntime(t *testing.T) {
	for i, rt := range testbed.Runtimes {
		if *onlyRuntimes != "" && !slices.Contains(strings.Split(*onlyRuntimes, ","), rt.Name) {
			continue
		}
		t.Run(rt.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			if err := startNode(ctx, rt, i == 0); err != nil {
				track(t)
				t.Fatalf("the %s node: %v", rt.Name, err)
			}
			defer stopNode()
			for _, c := range containerRuntimeCases {
				if i == 0 || c.everywhere {
					t.Run(c.name, c.test)
				}
			}
		})
	}
}

// skipWhere skips the test on a runtime that lacks what it needs, saying
// so: the summary counts it passed, its log says why it did not run.
func skipWhere(t *testing.T, lacks bool, why string) {
	t.Helper()
	if lacks {
		t.Skipf("%s: %s", bed.runtime.Name, why)
	}
}
