package e2e

// Opt-in models, named bundles, fleet-wide fail-closed, and the operating
// commands, on the real node.

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// fakeAPIServer answers namespace GETs like the API server, for one token.
func fakeAPIServer(t *testing.T, namespaces map[string]string) (url, caFile, tokenFile string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _ := strings.CutPrefix(r.URL.Path, "/api/v1/namespaces/")
		body, ok := namespaces[name]
		switch {
		case r.Header.Get("Authorization") != "Bearer e2e-token":
			http.Error(w, "{}", http.StatusUnauthorized)
		case !ok:
			http.Error(w, "{}", http.StatusNotFound)
		default:
			fmt.Fprint(w, body)
		}
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile, tokenFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile, tokenFile
}

func namespaceJSON(name string, labels map[string]string) string {
	var pairs []string
	for k, v := range labels {
		pairs = append(pairs, fmt.Sprintf("%q:%q", k, v))
	}
	return fmt.Sprintf(`{"kind":"Namespace","metadata":{"name":%q,"labels":{%s}}}`, name, strings.Join(pairs, ","))
}

// Namespaces opt in and pick bundles through their labels; a pod's "false"
// wins; in opt-out mode every pod outside the excluded namespaces is
// injected.
func testNamespaceOptInAndOptOut(t *testing.T) {
	track(t)
	ctx := testContext(t)
	bundles := filepath.Join(bed.dir, "bundles")
	if err := os.MkdirAll(bundles, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundles, "rotated.pem"), bed.otherCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	api, caFile, tokenFile := fakeAPIServer(t, map[string]string{
		"team-a": namespaceJSON("team-a", map[string]string{prefix + "/enabled": "true"}),
		"team-b": namespaceJSON("team-b", map[string]string{prefix + "/enabled": "true", prefix + "/bundle": "rotated"}),
		"plain":  namespaceJSON("plain", nil),
		"legacy": namespaceJSON("legacy", map[string]string{prefix + "/enabled": "false"}),
	})
	kube := []string{"--kube-api", api, "--kube-ca-file", caFile, "--kube-token-file", tokenFile, "--bundles-dir", bundles}
	restoreMainPlugin(t)
	if _, err := startPlugin(ctx, bed.caFile, kube...); err != nil {
		t.Fatal(err)
	}
	off := map[string]string{prefix + "/enabled": "false"}
	injected := func(id string) bool {
		_, err := os.Stat(filepath.Join(bed.staging, id))
		return err == nil
	}

	teamA := sleeper(t, ctx, podIn(t, ctx, "team-a", "by-namespace", nil), "app", false)
	if !injected(teamA) {
		t.Fatal("no staging for a pod of a namespace that opts in: the checks below would prove nothing")
	}
	expectTLS(t, ctx, teamA, "namespace opt-in", curlProbe(bed.server.URL), true)
	if no := sleeper(t, ctx, podIn(t, ctx, "team-a", "pod-says-no", off), "app", false); injected(no) {
		t.Error("a pod's \"false\" must win over its namespace's label")
	}
	teamB := sleeper(t, ctx, podIn(t, ctx, "team-b", "namespace-bundle", nil), "app", false)
	expectTLS(t, ctx, teamB, "the namespace's bundle", curlProbe(bed.otherServer.URL), true)
	expectTLS(t, ctx, teamB, "not the default bundle", curlProbe(bed.server.URL), false)
	if plain := sleeper(t, ctx, podIn(t, ctx, "plain", "plain", nil), "app", false); injected(plain) {
		t.Error("opt-in: a pod of a namespace without the label was injected")
	}
	byLabel := podOf(t, ctx, testbed.PodSpec{Name: "pod-label", Namespace: "plain", Labels: optIn()})
	expectTLS(t, ctx, sleeper(t, ctx, byLabel, "app", false), "a pod's own label", curlProbe(bed.server.URL), true)

	if _, err := startPlugin(ctx, bed.caFile, append(kube, "--injection-policy", "opt-out", "--exclude-namespaces", "kube-system")...); err != nil {
		t.Fatal(err)
	}
	everyone := sleeper(t, ctx, podIn(t, ctx, "plain", "opt-out", nil), "app", false)
	expectTLS(t, ctx, everyone, "opt-out: an unannotated pod", curlProbe(bed.server.URL), true)
	if sys := sleeper(t, ctx, podIn(t, ctx, "kube-system", "opt-out-excluded", nil), "app", false); injected(sys) {
		t.Error("opt-out: a pod of an excluded namespace was injected")
	}
	if legacy := sleeper(t, ctx, podIn(t, ctx, "legacy", "opt-out-namespace-no", nil), "app", false); injected(legacy) {
		t.Error("opt-out: a pod of a namespace labelled false was injected")
	}
	if n, err := currentPlugin().Metric(`cainjekt_namespace_lookups_total{result="ok"}`); err != nil || n < 1 {
		t.Errorf("namespace lookups not counted: %v %v", n, err)
	}
}

// A pod picks a named bundle; an unknown name is an error the fail policy
// handles.
func testPodPicksANamedBundle(t *testing.T) {
	track(t)
	ctx := testContext(t)
	bundles := filepath.Join(bed.dir, "named")
	if err := os.MkdirAll(bundles, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundles, "tenant.pem"), bed.otherCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	restoreMainPlugin(t)
	if _, err := startPlugin(ctx, bed.caFile, "--bundles-dir", bundles, "--fail-policy", "fail-closed"); err != nil {
		t.Fatal(err)
	}
	id := sleeper(t, ctx, pod(t, ctx, "tenant", optIn("bundle", "tenant")), "app", false)
	expectTLS(t, ctx, id, "the tenant's bundle", curlProbe(bed.otherServer.URL), true)
	expectTLS(t, ctx, id, "not the default bundle", curlProbe(bed.server.URL), false)
	_, err := pod(t, ctx, "no-such-tenant", optIn("bundle", "nobody")).Create(ctx,
		sleepIn(bed.image))
	if err == nil || !strings.Contains(err.Error(), `no CA bundle named "nobody"`) {
		t.Errorf("fail-closed, unknown bundle: %v", err)
	}
}

// Fail-closed across a fleet lives in containerd: with its NRI default
// validator on, a pod that requires the plugin is refused where cainjekt is
// not registered.
func testRequiredPluginsAnnotation(t *testing.T) {
	track(t)
	ctx := testContext(t)
	required := optIn()
	required["required-plugins.noderesource.dev/pod"] = `["cainjekt"]`
	restoreMainPlugin(t)
	bed.mu.Lock()
	err := bed.plugin.Stop()
	bed.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	_, err = pod(t, ctx, "required-absent", required).Create(ctx,
		sleepIn(bed.image))
	switch {
	case bed.runtime.NoValidator && err != nil:
		t.Errorf("%s has no NRI validator, yet refused the container: %v", bed.runtime.Name, err)
	case bed.runtime.NoValidator:
		t.Logf("%s has no NRI validator: the annotation is not enforced, as docs/operations.md says", bed.runtime.Name)
	case err == nil || !strings.Contains(err.Error(), `required plugin "cainjekt" not present`):
		t.Errorf("without cainjekt: %v", err)
	}
	if err := startMainPlugin(ctx); err != nil {
		t.Fatal(err)
	}
	expectInjected(t, ctx, sleeper(t, ctx, pod(t, ctx, "required-present", required), "app", false))
}

// cainjekt doctor, with the running plugin's configuration, finds the node
// healthy; SIGTERM stops the plugin cleanly and leaves running containers
// their staging, which a new plugin adopts.
func testDoctorAndGracefulShutdown(t *testing.T) {
	track(t)
	ctx := testContext(t)
	id := sleeper(t, ctx, pod(t, ctx, "survivor", optIn()), "app", false)
	out, err := exec.CommandContext(ctx, bed.bin, "doctor", "--ca-file", bed.caFile, "--dynamic-ca-root", bed.staging,
		"--socket", bed.node.NRISocket).CombinedOutput()
	// It names the runtime and its version, and says what it lacks.
	runtime := map[bool]string{true: "cri-o", false: "containerd"}[bed.runtime.CRIO] + " " + strings.TrimPrefix(bed.runtime.Version, "v")
	if err != nil || !strings.Contains(string(out), "NRI socket "+bed.node.NRISocket+": "+runtime) || strings.Contains(string(out), "FAIL") {
		t.Errorf("doctor: %v, want it to name %s\n%s", err, runtime, out)
	}
	if lacks := strings.Contains(string(out), "names no image config digest"); lacks != bed.runtime.NoImageDigest {
		t.Errorf("doctor says the runtime names no image config digest: %v, want %v\n%s", lacks, bed.runtime.NoImageDigest, out)
	}

	plugin := currentPlugin()
	if err := plugin.Stop(); err != nil { // SIGTERM, then SIGKILL after a grace period
		t.Fatalf("the plugin did not stop on SIGTERM: %v", err)
	}
	if _, exitErr := plugin.Exited(); exitErr != nil {
		t.Errorf("SIGTERM: the plugin exited with %v", exitErr)
	}
	if _, err := os.Stat(filepath.Join(bed.staging, id, "bundle.pem")); err != nil {
		t.Errorf("a running container lost its staging when the plugin stopped: %v", err)
	}
	if err := startMainPlugin(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := currentPlugin().Metric("cainjekt_active_containers"); err != nil || n < 1 {
		t.Errorf("the new plugin did not adopt the running container: %v %v", n, err)
	}
	expectTLS(t, ctx, id, "after the plugin's restart", curlProbe(bed.server.URL), true)
}
