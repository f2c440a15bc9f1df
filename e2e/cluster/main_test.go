// The install path on a real Kubernetes node: the release image from
// `make push`, pulled by the node's containerd from a registry; `kubectl
// apply -k deploy/` on a real kube-apiserver that limits the critical
// priority classes as GKE's does; the DaemonSet run by a real kubelet on
// the test bed's containerd and runc; pods networked by CNI; the plugin's
// namespace lookups through the kubernetes Service (kube-proxy) with the
// projected service account token and the shipped RBAC.
//
// Each test follows docs/operations.md and the README literally, in the
// order a platform engineer meets them. Run with `make cluster-e2e` (root).
// The last line printed is "N passed, N failed".
package cluster

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

const prefix = "cainjekt.natron.io"

// bed is the cluster and everything around it, shared by the tests, which
// run in order: each builds on what the one before installed.
var bed struct {
	cluster *testbed.Cluster
	debian  *testbed.Image // curl, python3-requests
	bin     string         // bin/cainjekt, for `cainjekt lint`
	repo    string         // the repository root
	deploy  string         // a copy of deploy/, as a user's checkout
	dir     string         // the run's own files

	image, nextImage string // the release image's reference, and the upgrade's
	archive          string // make image's archive
	version          string
	registry         *testbed.Registry // the user's registry, where make push pushes
	pushed           string            // what make push pointed deploy/ at: REF:TAG@DIGEST

	ca, rotated       *testbed.CA
	server, rotServer *testbed.Server // signed by ca, by rotated
	caFile            string          // ca-bundle.pem, as the user has it
}

var verbose = flag.Bool("cluster.verbose", false, "print the Kubernetes components' log tails after each failed test")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testbed.RunSuite(m, "cluster-e2e", setUp))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cluster-e2e: "+format+"\n", args...)
}

// setUp builds (or takes from the cache) the cluster's binaries and the test
// image, starts the cluster and the HTTPS servers.
func setUp(cleanup func(func())) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	start := time.Now()
	bed.bin = os.Getenv("CAINJEKT_BIN")
	bed.archive = os.Getenv("CAINJEKT_IMAGE_ARCHIVE")
	bed.image = os.Getenv("CAINJEKT_IMAGE")
	bed.version = os.Getenv("CAINJEKT_VERSION")
	if bed.bin == "" || bed.archive == "" || bed.image == "" || bed.version == "" {
		return fmt.Errorf("CAINJEKT_BIN, CAINJEKT_IMAGE_ARCHIVE, CAINJEKT_IMAGE and CAINJEKT_VERSION must be set (make cluster-e2e sets them)")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	bed.repo = repo

	bins, err := testbed.EnsureKubeBinaries(ctx, logf)
	if err != nil {
		return err
	}
	pause, err := testbed.BuildPauseImage(ctx, logf)
	if err != nil {
		return err
	}
	if bed.debian, err = testbed.BuildDebianImage(ctx, testbed.DebianTestImage(), logf); err != nil {
		return err
	}
	logf("binaries and images ready in %s", time.Since(start).Round(time.Second))

	if bed.dir, err = os.MkdirTemp("", "cainjekt-cluster-e2e-"); err != nil {
		return err
	}
	cleanup(func() { os.RemoveAll(bed.dir) })
	// The user's checkout: kustomize edit changes deploy/base in place.
	bed.deploy = filepath.Join(bed.dir, "deploy")
	if err := os.CopyFS(bed.deploy, os.DirFS(filepath.Join(repo, "deploy"))); err != nil {
		return fmt.Errorf("copy deploy/: %w", err)
	}

	// The user's registry, on the loopback: containerd, as Docker and
	// registry clients, speaks plain HTTP to a loopback registry.
	if err := os.Mkdir(filepath.Join(bed.dir, "registry"), 0o755); err != nil {
		return err
	}
	if bed.registry, err = testbed.StartRegistry(ctx, filepath.Join(bed.dir, "registry"), ""); err != nil {
		return err
	}
	cleanup(bed.registry.Close)

	// Valid for a year: the docs lint the bundle with --strict first.
	if bed.ca, err = testbed.NewCAValidFor("cainjekt cluster-e2e CA", 365*24*time.Hour); err != nil {
		return err
	}
	if bed.rotated, err = testbed.NewCAValidFor("cainjekt cluster-e2e rotated CA", 365*24*time.Hour); err != nil {
		return err
	}
	bed.caFile = filepath.Join(bed.dir, "ca-bundle.pem")
	if err := os.WriteFile(bed.caFile, bed.ca.CertPEM, 0o644); err != nil {
		return err
	}

	clusterStart := time.Now()
	// The DaemonSet's host directories: a run owns them while it lasts.
	opts := testbed.ClusterOptions{Bins: bins, PauseImage: pause, HostDirs: []string{"/run/cainjekt", "/opt/cainjekt"}}
	bed.cluster, err = testbed.StartCluster(ctx, opts)
	if err != nil {
		return err
	}
	cleanup(func() {
		if err := bed.cluster.Close(); err != nil {
			logf("cluster teardown: %v", err)
		}
	})
	logf("cluster ready in %s", time.Since(clusterStart).Round(time.Second))
	// Servers on the node's bridge address, where pods reach the host.
	if bed.server, err = bed.ca.ServeOn(net.ParseIP(testbed.HostIP)); err != nil {
		return err
	}
	if bed.rotServer, err = bed.rotated.ServeOn(net.ParseIP(testbed.HostIP)); err != nil {
		return err
	}
	cleanup(func() { bed.server.Close(); bed.rotServer.Close() })
	// The test pods' image; the cainjekt image is imported by the tests, as
	// the docs tell a user.
	if err := bed.cluster.Node.ImportImage(ctx, bed.debian); err != nil {
		return err
	}
	logf("set up in %s", time.Since(start).Round(time.Second))
	return nil
}

// track records the test's outcome for the summary; a failed test prints
// the plugin's log and, with -cluster.verbose, the components' logs.
func track(t *testing.T) {
	testbed.Track(t, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := bed.cluster.Kubectl(ctx, "-n", "cainjekt", "logs", "ds/cainjekt", "--tail=40")
		t.Logf("plugin log:\n%s", out)
		if *verbose {
			t.Logf("components:\n%s", bed.cluster.Tail(30))
		}
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// kubectl runs kubectl as cluster-admin and fails the test on error.
func kubectl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := bed.cluster.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shell runs a command line as the docs write it, in dir, with kubectl and
// kustomize on PATH and KUBECONFIG set, as a user's shell would have them.
// It returns stdout and stderr apart: kubectl warns on stderr.
func shell(ctx context.Context, dir, line string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-ec", line)
	cmd.Dir = dir
	cmd.Env = append(bed.cluster.Env(), "PATH="+filepath.Dir(bed.bin)+":"+pathOf(bed.cluster.Env()))
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w\n%s%s", line, err, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// mustShell is shell failing the test on error.
func mustShell(t *testing.T, ctx context.Context, dir, line string) string {
	t.Helper()
	out, _, err := shell(ctx, dir, line)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pathOf(env []string) string {
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v // the last one wins, as in exec
		}
	}
	return path
}

// podOptions shape a test pod.
type podOptions struct {
	annotations, labels map[string]string
	restricted          bool // the securityContext Pod Security "restricted" demands
	ownUsers            bool // hostUsers: false, a user namespace of the pod's own
	volumes             []any
	volumeMounts        []any // of the container
}

// runPod creates a pod running sleep from the Debian test image and waits
// until it is Ready; it is deleted when the test ends unless keep.
func runPod(t *testing.T, ctx context.Context, ns, name string, opts podOptions) {
	t.Helper()
	container := map[string]any{
		"name":            "app",
		"image":           bed.debian.Ref,
		"imagePullPolicy": "Never",
		"command":         []string{"sleep", "infinity"},
	}
	spec := map[string]any{
		"containers": []any{container},
		// sleep ignores SIGTERM: do not wait 30 s for it.
		"terminationGracePeriodSeconds": 1,
	}
	if opts.ownUsers {
		spec["hostUsers"] = false
	}
	if opts.volumes != nil {
		spec["volumes"], container["volumeMounts"] = opts.volumes, opts.volumeMounts
	}
	if opts.restricted {
		spec["securityContext"] = map[string]any{
			"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
			"seccompProfile": map[string]string{"type": "RuntimeDefault"},
		}
		container["securityContext"] = map[string]any{
			"allowPrivilegeEscalation": false,
			"capabilities":             map[string]any{"drop": []string{"ALL"}},
			"readOnlyRootFilesystem":   true,
		}
	}
	pod := map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   map[string]any{"name": name, "namespace": ns, "annotations": opts.annotations, "labels": opts.labels},
		"spec":       spec,
	}
	apply(t, ctx, pod)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		bed.cluster.Kubectl(ctx, "-n", ns, "delete", "pod", name, "--wait=true", "--ignore-not-found")
	})
	if _, err := bed.cluster.Kubectl(ctx, "-n", ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=2m"); err != nil {
		desc, _ := bed.cluster.Kubectl(ctx, "-n", ns, "describe", "pod", name)
		t.Fatalf("%v\n%s", err, desc)
	}
}

// namespace creates a namespace with labels and waits for its default
// service account, without which no pod is admitted. It is deleted when
// the test ends.
func namespace(t *testing.T, ctx context.Context, name string, labels map[string]string) {
	t.Helper()
	apply(t, ctx, map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name, "labels": labels}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		bed.cluster.Kubectl(ctx, "delete", "namespace", name, "--wait=true", "--ignore-not-found")
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := bed.cluster.Kubectl(ctx, "-n", name, "get", "serviceaccount", "default"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s has no default service account after a minute", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// apply creates or updates an object with kubectl apply.
func apply(t *testing.T, ctx context.Context, obj map[string]any) {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.cluster.KubectlIn(ctx, data, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// inPod runs a command in a pod's container with kubectl exec and returns
// its output and whether it exited 0.
func inPod(ctx context.Context, ns, pod string, cmd ...string) (string, bool) {
	out, err := bed.cluster.Kubectl(ctx, append([]string{"-n", ns, "exec", pod, "--"}, cmd...)...)
	if err != nil {
		return out + err.Error(), false
	}
	return out, true
}

// trusts reports whether curl and Python requests in the pod verify url's
// server; both must agree, else the test fails.
func trusts(t *testing.T, ctx context.Context, ns, pod, url string) bool {
	t.Helper()
	curlOut, curlOK := inPod(ctx, ns, pod, "curl", "-sS", "--max-time", "20", url)
	pyOut, pyOK := inPod(ctx, ns, pod, "python3", "-c", "import sys, requests; requests.get(sys.argv[1], timeout=20)", url)
	if curlOK != pyOK {
		t.Fatalf("pod %s/%s: curl and python disagree on %s:\ncurl: %s\npython: %s", ns, pod, url, curlOut, pyOut)
	}
	if !curlOK && !strings.Contains(curlOut, "certificate") {
		t.Fatalf("pod %s/%s: curl %s failed, but not on the certificate: %s", ns, pod, url, curlOut)
	}
	return curlOK
}

// injected reports whether the pod's container has cainjekt's staging.
func injected(ctx context.Context, ns, pod string) bool {
	_, ok := inPod(ctx, ns, pod, "test", "-e", "/etc/cainjekt/status.json")
	return ok
}
