// The real-node tests: a private node of each container runtime the test
// bed runs (containerd 2.4, 2.2 and 1.7, CRI-O), with NRI and runc, the test
// images built from Debian packages, HTTPS servers whose CAs exist only for
// this run, `cainjekt plugin` against the node's runtime, and pods driven
// through the CRI API as kubelet drives them. Every test runs on today's
// containerd; those of containerRuntimeCases marked everywhere on each other
// runtime too (suite_test.go).
//
// Run with `make e2e` (root). The last line printed is "N passed, N failed".
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const prefix = "cainjekt.natron.io"

// bed is the node and everything around it, shared by the tests.
var bed struct {
	runtime testbed.Runtime // the node's
	node    *testbed.Node
	pause   *testbed.Image
	image   *testbed.Image // Debian with curl and python3-requests
	// The language matrix, images without a shell, and a trust store with
	// extended attributes.
	runtimes, scratch, distroless, hostile, labels *testbed.Image
	bin                                            string
	dir                                            string // the run's own files: CA bundle, staging
	caFile                                         string
	staging                                        string

	// The injected bundle holds three CAs: a root, an intermediate it
	// signed, and an unrelated second root.
	ca, intermediate, secondCA *testbed.CA
	publicCA, otherCA          *testbed.CA
	server                     *testbed.Server // signed by the intermediate, sending no chain
	server2                    *testbed.Server // signed by the second root
	publicServer               *testbed.Server // signed by a CA the image trusted already
	otherServer                *testbed.Server // signed by otherCA, for rotation

	mu     sync.Mutex
	plugin *testbed.Plugin
}

var verbose = flag.Bool("e2e.verbose", false, "copy the runtime's and the plugin's logs to stderr")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testbed.RunSuite(m, "e2e", setUp))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
}

// setUp builds (or takes from the cache) what the node needs and starts it.
func setUp(cleanup func(func())) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	start := time.Now()

	bed.bin = os.Getenv("CAINJEKT_BIN")
	if bed.bin == "" {
		return fmt.Errorf("CAINJEKT_BIN must name the cainjekt binary (make e2e sets it)")
	}
	var err error
	if bed.pause, err = testbed.BuildPauseImage(ctx, logf); err != nil {
		return err
	}
	if err := buildImages(ctx); err != nil {
		return err
	}

	if bed.dir, err = os.MkdirTemp("", "cainjekt-e2e-"); err != nil {
		return err
	}
	cleanup(func() { os.RemoveAll(bed.dir) })
	bed.caFile = filepath.Join(bed.dir, "ca-bundle.pem")

	if err := startServers(); err != nil {
		return err
	}
	cleanup(func() {
		for _, s := range []*testbed.Server{bed.server, bed.server2, bed.publicServer, bed.otherServer} {
			s.Close()
		}
	})
	if err := os.WriteFile(bed.caFile, injectedPEM(), 0o644); err != nil {
		return err
	}
	logf("set up in %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// startNode starts a node of the runtime, building the runtime first if
// need be, imports the images, and starts the main plugin against it. The
// runtimes other than today's containerd get the images of the tests that
// run everywhere.
func startNode(ctx context.Context, rt testbed.Runtime, everyImage bool) error {
	start := time.Now()
	bins, err := testbed.EnsureRuntime(ctx, rt, logf)
	if err != nil {
		return err
	}
	opts := testbed.NodeOptions{Bins: bins, PauseImage: bed.pause}
	if *verbose {
		opts.Log = os.Stderr
	}
	node, err := testbed.StartNode(ctx, opts)
	if err != nil {
		return err
	}
	bed.runtime, bed.node, bed.staging = rt, node, filepath.Join(bed.dir, "staging-"+rt.Name)
	images := []*testbed.Image{bed.image, bed.runtimes, bed.scratch, bed.hostile}
	if everyImage {
		images = append(images, bed.distroless, bed.labels)
	}
	for _, img := range images {
		if err := bed.node.ImportImage(ctx, img); err != nil {
			return err
		}
	}
	if err := startMainPlugin(ctx); err != nil {
		return err
	}
	logf("%s node ready in %s", rt.Name, time.Since(start).Round(time.Millisecond))
	return nil
}

// stopNode stops the plugin and tears the node down.
func stopNode() {
	if p := currentPlugin(); p != nil {
		p.Stop()
		bed.mu.Lock()
		bed.plugin = nil
		bed.mu.Unlock()
	}
	if err := bed.node.Close(); err != nil {
		logf("%s node teardown: %v", bed.runtime.Name, err)
	}
}

// injectedPEM is the CA bundle the plugin injects.
func injectedPEM() []byte {
	return slices.Concat(bed.ca.CertPEM, bed.intermediate.CertPEM, bed.secondCA.CertPEM)
}

// buildImages builds the test images, or takes them from the cache.
func buildImages(ctx context.Context) error {
	pub, err := testbed.PublicCA()
	if err != nil {
		return err
	}
	if bed.image, err = testbed.BuildDebianImage(ctx, testbed.DebianTestImage(), logf); err != nil {
		return err
	}
	spec, err := testbed.RuntimesTestImage(ctx, pub, logf)
	if err != nil {
		return err
	}
	if bed.runtimes, err = testbed.BuildDebianImage(ctx, spec, logf); err != nil {
		return err
	}
	if bed.scratch, err = testbed.ScratchTestImage(ctx, logf); err != nil {
		return err
	}
	if bed.distroless, err = testbed.DistrolessTestImage(ctx, pub, logf); err != nil {
		return err
	}
	if bed.hostile, err = testbed.HostileTestImage(ctx, logf); err != nil {
		return err
	}
	bed.labels, err = testbed.LabelsTestImage(ctx, pub, labelXattrs, logf)
	return err
}

func startServers() error {
	var err error
	if bed.ca, err = testbed.NewCA("cainjekt e2e injected root CA"); err != nil {
		return err
	}
	if bed.intermediate, err = bed.ca.Intermediate("cainjekt e2e injected intermediate CA"); err != nil {
		return err
	}
	if bed.secondCA, err = testbed.NewCA("cainjekt e2e second injected root CA"); err != nil {
		return err
	}
	if bed.otherCA, err = testbed.NewCA("cainjekt e2e rotated CA"); err != nil {
		return err
	}
	if bed.publicCA, err = testbed.PublicCA(); err != nil {
		return err
	}
	for _, s := range []struct {
		ca  *testbed.CA
		dst **testbed.Server
	}{{bed.intermediate, &bed.server}, {bed.secondCA, &bed.server2}, {bed.publicCA, &bed.publicServer}, {bed.otherCA, &bed.otherServer}} {
		if *s.dst, err = s.ca.Serve(); err != nil {
			return err
		}
	}
	return nil
}

// startPlugin starts a plugin against the node with extra flags, replacing
// the one running, and waits until it is ready.
func startPlugin(ctx context.Context, caFile string, args ...string) (*testbed.Plugin, error) {
	p, err := launchPlugin(caFile, args...)
	if err != nil {
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return p, p.WaitReady(readyCtx)
}

// launchPlugin starts a plugin against the node with extra flags,
// replacing the one running.
func launchPlugin(caFile string, args ...string) (*testbed.Plugin, error) {
	bed.mu.Lock()
	defer bed.mu.Unlock()
	if bed.plugin != nil {
		if err := bed.plugin.Stop(); err != nil {
			return nil, err
		}
	}
	opts := testbed.PluginOptions{
		Bin: bed.bin, Socket: bed.node.NRISocket, CAFile: caFile,
		DynamicCARoot: bed.staging, Args: args,
	}
	if *verbose {
		opts.Log = os.Stderr
	}
	p, err := testbed.StartPlugin(opts)
	if err != nil {
		return nil, err
	}
	bed.plugin = p
	return p, nil
}

// startUnreadyPlugin starts a plugin whose default CA bundle cannot load:
// it registers, and /readyz says it is not ready, and why.
func startUnreadyPlugin(t *testing.T, ctx context.Context, caFile string, args ...string) {
	t.Helper()
	p, err := launchPlugin(caFile, args...)
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitRegistered(waitCtx); err != nil {
		t.Fatal(err)
	}
	code, body, err := p.Get("/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "no usable CA bundle") || !strings.Contains(body, caFile) {
		t.Errorf("/readyz without a CA bundle: %d %q %v, want 503 naming %s", code, body, err, caFile)
	}
}

func startMainPlugin(ctx context.Context) error {
	_, err := startPlugin(ctx, bed.caFile)
	return err
}

// restoreMainPlugin puts the main plugin back when the test ends, for a
// test that runs the plugin with flags of its own.
func restoreMainPlugin(t *testing.T) {
	t.Cleanup(func() {
		if err := startMainPlugin(context.Background()); err != nil {
			t.Errorf("restore plugin: %v", err)
		}
	})
}

func currentPlugin() *testbed.Plugin {
	bed.mu.Lock()
	defer bed.mu.Unlock()
	return bed.plugin
}

// track records the test's outcome for the summary, and on failure dumps
// the plugin's log.
func track(t *testing.T) {
	testbed.Track(t, func() {
		if p := currentPlugin(); p != nil {
			t.Logf("plugin log:\n%s", p.Logs())
		}
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pod runs a host-network pod in the namespace e2e and removes it when the
// test ends.
func pod(t *testing.T, ctx context.Context, name string, annotations map[string]string) *testbed.Pod {
	t.Helper()
	return podOf(t, ctx, testbed.PodSpec{Name: name, Namespace: "e2e", Annotations: annotations})
}

// podIn runs a host-network pod in a namespace and removes it when the test ends.
func podIn(t *testing.T, ctx context.Context, namespace, name string, annotations map[string]string) *testbed.Pod {
	t.Helper()
	return podOf(t, ctx, testbed.PodSpec{Name: name, Namespace: namespace, Annotations: annotations})
}

// podOf runs a pod and removes it when the test ends.
func podOf(t *testing.T, ctx context.Context, spec testbed.PodSpec) *testbed.Pod {
	t.Helper()
	p, err := bed.node.RunPod(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Remove(context.Background()); err != nil {
			t.Errorf("remove pod %s: %v", spec.Name, err)
		}
	})
	return p
}

func optIn(extra ...string) map[string]string {
	ann := map[string]string{prefix + "/enabled": "true"}
	for i := 0; i+1 < len(extra); i += 2 {
		ann[prefix+"/"+extra[i]] = extra[i+1]
	}
	return ann
}

// sleepIn is a container "app" of image that stays up for exec.
func sleepIn(image *testbed.Image) testbed.ContainerSpec {
	return testbed.ContainerSpec{Name: "app", Image: image.Ref, Command: []string{"sleep", "3600"}}
}

// sleeper runs a container of the Debian test image that stays up for exec.
func sleeper(t *testing.T, ctx context.Context, p *testbed.Pod, name string, readOnly bool) string {
	t.Helper()
	spec := sleepIn(bed.image)
	spec.Name, spec.ReadOnlyRootfs = name, readOnly
	id, err := p.Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type execResult struct {
	stdout, stderr string
	code           int32
}

func run(t *testing.T, ctx context.Context, id string, cmd ...string) execResult {
	t.Helper()
	stdout, stderr, code, err := bed.node.Exec(ctx, id, cmd, time.Minute)
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	return execResult{stdout, stderr, code}
}

// The probes: each is a command that exits 0 only if TLS verification of
// url succeeds, and says why on stderr if not.
func curlProbe(url string) []string { return []string{"curl", "-sS", "-o", "/dev/null", url} }

func requestsProbe(url string) []string {
	return []string{"python3", "-c", "import requests, sys; requests.get(sys.argv[1], timeout=20)", url}
}

// trustVars are the variables cainjekt may set.
var trustVars = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
	"NODE_EXTRA_CA_CERTS", "DENO_CERT", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"}

// without runs cmd with the named variables removed.
func without(vars []string, cmd []string) []string {
	args := []string{"env"}
	for _, v := range vars {
		args = append(args, "-u", v)
	}
	return append(args, cmd...)
}

// withoutTrustEnv runs cmd with the trust variables removed: it then relies
// on the image's trust stores alone.
func withoutTrustEnv(cmd []string) []string { return without(trustVars, cmd) }

// expectTLS runs cmd, a probe that exits 0 when TLS verification succeeds,
// and checks that it succeeds, or fails for the certificate.
func expectTLS(t *testing.T, ctx context.Context, id, what string, cmd []string, ok bool) {
	t.Helper()
	expectProbe(t, ctx, id, probe{name: what}, cmd, ok)
}

// certificateError reports whether output says that TLS verification failed,
// in the words of any runtime: curl, OpenSSL, GnuTLS, Go, Python, Node, Java,
// Ruby, PHP, Deno, botocore.
func certificateError(output string) bool {
	out := strings.ToLower(output)
	return strings.Contains(out, "certif") || strings.Contains(out, "pkix") || strings.Contains(out, "verify error") ||
		strings.Contains(out, "ssl validation failed") || strings.Contains(out, "unknownissuer")
}

// expectInjected checks that the container trusts our CA at both layers,
// through the env (exec sessions see it) and through the OS trust store
// alone, and still trusts what the image trusted.
func expectInjected(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	for _, tc := range []struct {
		what string
		cmd  []string
	}{
		{"curl", curlProbe(bed.server.URL)},
		{"curl, second root", curlProbe(bed.server2.URL)},
		{"python requests", requestsProbe(bed.server.URL)},
		{"python requests, second root", requestsProbe(bed.server2.URL)},
		{"curl, OS trust store only", withoutTrustEnv(curlProbe(bed.server.URL))},
		{"python requests, OS trust store only", withoutTrustEnv(requestsProbe(bed.server.URL))},
		{"curl to a server the image already trusted", curlProbe(bed.publicServer.URL)},
		{"python requests to a server the image already trusted", requestsProbe(bed.publicServer.URL)},
	} {
		expectTLS(t, ctx, id, tc.what, tc.cmd, true)
	}
	for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/cainjekt/bundle.pem"} {
		expectSuperset(t, ctx, id, p)
	}
}

// expectSuperset checks that a bundle in the container holds every
// certificate of the image's original bundle, and our CA.
func expectSuperset(t *testing.T, ctx context.Context, id, p string) {
	t.Helper()
	r := run(t, ctx, id, "cat", p)
	if r.code != 0 {
		t.Errorf("cat %s: %s", p, r.stderr)
		return
	}
	have := certSums([]byte(r.stdout))
	for sum := range certSums(bed.image.OriginalBundle) {
		if !have[sum] {
			t.Errorf("%s lost a certificate of the image's original bundle", p)
			break
		}
	}
	for sum := range certSums(injectedPEM()) {
		if !have[sum] {
			t.Errorf("%s lacks an injected CA", p)
		}
	}
}

func certSums(data []byte) map[[32]byte]bool {
	sums := map[[32]byte]bool{}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return sums
		}
		if b.Type == "CERTIFICATE" {
			sums[sha256.Sum256(b.Bytes)] = true
		}
	}
}

// expectUntouched checks that nothing of cainjekt is in the container and
// that it does not trust our CA.
func expectUntouched(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	expectTLS(t, ctx, id, "curl", curlProbe(bed.server.URL), false)
	expectTLS(t, ctx, id, "python requests", requestsProbe(bed.server.URL), false)
	script := "ls -d /etc/cainjekt /.cainjekt 2>/dev/null; env | grep -E '^(" + strings.Join(trustVars, "|") + ")='; tr '\\0' ' ' </proc/1/cmdline"
	if r := run(t, ctx, id, "sh", "-c", script); !strings.HasPrefix(r.stdout, "sleep 3600") {
		t.Errorf("cainjekt traces in an untouched container: %q", r.stdout)
	}
	if r := run(t, ctx, id, "cat", "/etc/ssl/certs/ca-certificates.crt"); r.stdout != string(bed.image.OriginalBundle) {
		t.Error("the OS trust store of an untouched container changed")
	}
}

// hookStatus reads /etc/cainjekt/status.json in the container.
func hookStatus(t *testing.T, ctx context.Context, id string) hookReport {
	t.Helper()
	r := run(t, ctx, id, "cat", "/etc/cainjekt/status.json")
	var st hookReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status.json: %v (%q, %s)", err, r.stdout, r.stderr)
	}
	return st
}

// 1. A pod without the annotation: nothing changes.
func testPodWithoutAnnotationIsUntouched(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "plain", nil)
	expectUntouched(t, ctx, sleeper(t, ctx, p, "app", false))
}

// 2. An opted-in pod trusts the CA at every layer and keeps the image's trust.
func testOptedInPodTrustsTheCA(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "injected", optIn())
	id := sleeper(t, ctx, p, "app", false)
	expectInjected(t, ctx, id)
	if st := hookStatus(t, ctx, id); st.Result != "ok" || st.Family != "debian" {
		t.Errorf("hook status: %+v", st)
	}
	if r := run(t, ctx, id, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline"); r.stdout != "sleep 3600 " {
		t.Errorf("PID 1 is %q: the wrapper must exec the original command", r.stdout)
	}
}

// 2b. The main process, started through the wrapper, trusts the CA too.
func testMainProcessTrustsTheCA(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "main-process", optIn())
	script := fmt.Sprintf("%s && %s && echo TRUSTED", strings.Join(curlProbe(bed.server.URL), " "),
		fmt.Sprintf(`python3 -c 'import requests; requests.get("%s", timeout=20)'`, bed.server.URL))
	// Command and args apart, as kubelet sends them: the wrapper goes before both.
	id, err := p.Run(ctx, testbed.ContainerSpec{Name: "app", Image: bed.image.Ref, Command: []string{"sh"}, Args: []string{"-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	code, err := bed.node.WaitExit(ctx, id)
	logs, _ := bed.node.Logs(id)
	if err != nil || code != 0 || !strings.Contains(logs, "TRUSTED") {
		t.Errorf("exit %d (%v), logs:\n%s", code, err, logs)
	}
}

// 3. The same with a read-only root filesystem.
func testReadOnlyRootfsIsInjected(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "readonly", optIn())
	id := sleeper(t, ctx, p, "app", true)
	if r := run(t, ctx, id, "touch", "/probe"); r.code == 0 || !strings.Contains(r.stderr, "Read-only") {
		t.Fatalf("the rootfs is not read-only: exit %d %s", r.code, r.stderr)
	}
	expectInjected(t, ctx, id)
}

// 4. exclude-containers: only the other container is injected.
func testExcludedContainerIsUntouched(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "two-containers", optIn("exclude-containers", "sidecar"))
	app := sleeper(t, ctx, p, "app", false)
	sidecar := sleeper(t, ctx, p, "sidecar", false)
	expectInjected(t, ctx, app)
	expectUntouched(t, ctx, sidecar)
}

// 5. The runtime restarts under the plugin: it re-registers by itself.
func testPluginSurvivesARuntimeRestart(t *testing.T) {
	track(t)
	ctx := testContext(t)
	plugin := currentPlugin()
	before, err := plugin.Metric("cainjekt_nri_registrations_total")
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.node.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if n, _ := plugin.Metric("cainjekt_nri_registrations_total"); n > before {
			break
		}
		if waitCtx.Err() != nil {
			t.Fatalf("the plugin did not re-register after %s restarted:\n%s", bed.runtime.Name, plugin.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if exited, err := plugin.Exited(); exited {
		t.Fatalf("the plugin exited (%v)", err)
	}
	p := pod(t, ctx, "after-restart", optIn())
	expectInjected(t, ctx, sleeper(t, ctx, p, "app", false))
	if exited, err := plugin.Exited(); exited {
		t.Fatalf("the plugin exited (%v)", err)
	}
}

// 6. The CA file replaced on disk, as kubelet updates a ConfigMap: the next
// pod trusts the new CA, and no longer the old one.
func testRotatedCAFileReachesTheNextPod(t *testing.T) {
	track(t)
	ctx := testContext(t)
	dir := t.TempDir()
	// The ConfigMap volume layout: key -> ..data/key, ..data -> a timestamped dir.
	swap := func(name string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "ca-bundle.pem"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "..data_tmp"))
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap("..v1", injectedPEM())
	caFile := filepath.Join(dir, "ca-bundle.pem")
	if err := os.Symlink("..data/ca-bundle.pem", caFile); err != nil {
		t.Fatal(err)
	}
	restoreMainPlugin(t)
	if _, err := startPlugin(ctx, caFile); err != nil {
		t.Fatal(err)
	}
	first := sleeper(t, ctx, pod(t, ctx, "before-rotation", optIn()), "app", false)
	expectTLS(t, ctx, first, "curl, first CA", curlProbe(bed.server.URL), true)

	swap("..v2", bed.otherCA.CertPEM)
	// The running container: its staged files are refreshed in place, so
	// what reads them per call trusts the new CA and no longer the old one;
	// its OS store keeps the CA it started with until it restarts.
	if err := waitForFile(ctx, filepath.Join(bed.staging, first, "ca.pem"), bed.otherCA.CertPEM); err != nil {
		t.Fatal(err)
	}
	expectTLS(t, ctx, first, "running container, curl, rotated-in CA", curlProbe(bed.otherServer.URL), true)
	expectTLS(t, ctx, first, "running container, curl, rotated-out CA", curlProbe(bed.server.URL), false)
	expectTLS(t, ctx, first, "running container, python requests, rotated-in CA", requestsProbe(bed.otherServer.URL), true)
	expectTLS(t, ctx, first, "running container, OS store, still the CA it started with", withoutTrustEnv(curlProbe(bed.server.URL)), true)
	if n, err := currentPlugin().Metric("cainjekt_outdated_containers"); err != nil || n < 1 {
		t.Errorf("cainjekt_outdated_containers = %v (%v), want the running container counted", n, err)
	}

	second := sleeper(t, ctx, pod(t, ctx, "after-rotation", optIn()), "app", false)
	expectTLS(t, ctx, second, "curl, rotated-in CA", curlProbe(bed.otherServer.URL), true)
	expectTLS(t, ctx, second, "curl, rotated-out CA", curlProbe(bed.server.URL), false)
	expectTLS(t, ctx, second, "curl, OS store, rotated-in CA", withoutTrustEnv(curlProbe(bed.otherServer.URL)), true)

	// A broken update keeps the last good bundle.
	swap("..v3", []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
	third := sleeper(t, ctx, pod(t, ctx, "after-broken-update", optIn()), "app", false)
	expectTLS(t, ctx, third, "curl after a broken update", curlProbe(bed.otherServer.URL), true)
	if n, err := currentPlugin().Metric(`cainjekt_ca_bundle_reloads_total{bundle="default",result="not_pem"}`); err != nil || n < 1 {
		t.Errorf("broken bundle not counted: %v %v", n, err)
	}
}

// 7. No usable CA file: the plugin is not ready, and says why; fail-closed
// keeps the container from starting, fail-open starts it without injection.
func testFailPolicyWithoutCAFile(t *testing.T) {
	track(t)
	ctx := testContext(t)
	missing := filepath.Join(bed.dir, "no-such-ca.pem")
	restoreMainPlugin(t)

	startUnreadyPlugin(t, ctx, missing, "--fail-policy", "fail-closed")
	p := pod(t, ctx, "fail-closed", optIn())
	_, err := p.Create(ctx, sleepIn(bed.image))
	if err == nil || !strings.Contains(err.Error(), "CA injection failed (fail-closed)") {
		t.Errorf("fail-closed: want the plugin's refusal, got %v", err)
	}

	startUnreadyPlugin(t, ctx, missing, "--fail-policy", "fail-open")
	q := pod(t, ctx, "fail-open", optIn())
	expectUntouched(t, ctx, sleeper(t, ctx, q, "app", false))
	if n, err := currentPlugin().Metric(`cainjekt_skips_total{reason="injection_failed"}`); err != nil || n != 1 {
		t.Errorf("fail-open skip not counted: %v %v", n, err)
	}
}

// 8. An exec session (what kubectl exec does) sees the variables and trusts
// the CA: the variables are in the spec, not only in PID 1's environment.
func testExecSessionSeesTheTrustEnv(t *testing.T) {
	track(t)
	ctx := testContext(t)
	id := sleeper(t, ctx, pod(t, ctx, "exec", optIn()), "app", false)
	r := run(t, ctx, id, "sh", "-c", "echo $SSL_CERT_FILE $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS $GIT_SSL_CAINFO")
	if want := "/etc/cainjekt/bundle.pem /etc/cainjekt/bundle.pem /etc/cainjekt/ca.pem /etc/cainjekt/bundle.pem\n"; r.stdout != want {
		t.Errorf("exec env: %q, want %q", r.stdout, want)
	}
	expectTLS(t, ctx, id, "curl in an exec session", curlProbe(bed.server.URL), true)
	expectTLS(t, ctx, id, "python requests in an exec session", requestsProbe(bed.server.URL), true)
}

// 9. Init containers are containers too: injected like the others.
func testInitContainerIsInjected(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "with-init", optIn())
	// kubelet runs an init container to completion before the others.
	initID, err := p.Run(ctx, testbed.ContainerSpec{Name: "init", Image: bed.image.Ref, Command: curlProbe(bed.server.URL)})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := bed.node.WaitExit(ctx, initID); err != nil || code != 0 {
		logs, _ := bed.node.Logs(initID)
		t.Fatalf("init container exit %d (%v):\n%s", code, err, logs)
	}
	expectInjected(t, ctx, sleeper(t, ctx, p, "app", false))
}

// The plugin's metrics pass the reference linter, and count what happened.
func testMetricsAreValidAndCount(t *testing.T) {
	track(t)
	ctx := testContext(t)
	sleeper(t, ctx, pod(t, ctx, "metrics", optIn()), "app", false)
	plugin := currentPlugin()
	code, body, err := plugin.Get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	for _, series := range []string{"cainjekt_injections_total", `cainjekt_hook_runs_total{result="ok"}`, "cainjekt_active_containers",
		"cainjekt_hook_duration_seconds_count", `cainjekt_ca_bundle_certificates{bundle="default"}`} {
		if n, err := plugin.Metric(series); err != nil || n < 1 {
			t.Errorf("%s = %v (%v)", series, n, err)
		}
	}
	if n, err := plugin.Metric("cainjekt_nri_connected"); err != nil || n != 1 {
		t.Errorf("cainjekt_nri_connected = %v (%v)", n, err)
	}
}

// Two containers of one image on the real node: a runtime that gives the
// plugin the image's config digest lets it learn that the first one (with
// these variables) needed no wrapper, so the second starts without it. Each is injected alone, from its own image files: the dynamic CA
// root holds nothing but each container's own staging, and no staged file
// shares its inode with another.
func testContainersOfAnImageOnTheNode(t *testing.T) {
	track(t)
	ctx := testContext(t)
	spec := sleepIn(bed.image)
	// A JAVA_HOME of its own: an image entry no other test shares.
	spec.Env = map[string]string{"JAVA_HOME": "/nonexistent/" + strconv.FormatInt(time.Now().UnixNano(), 10)}
	first, err := pod(t, ctx, "image-first", optIn()).Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	second, err := pod(t, ctx, "image-second", optIn()).Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	expectInjected(t, ctx, first)
	expectInjected(t, ctx, second)
	if r := run(t, ctx, first, "test", "-x", "/.cainjekt/cainjekt"); r.code != 0 {
		t.Error("the first container of an image has no wrapper")
	}
	// A runtime that names no image config digest teaches the plugin
	// nothing per image: every container gets the wrapper, and the plugin
	// says why.
	digests := map[bool]string{true: "no", false: "yes"}[bed.runtime.NoImageDigest]
	if r := run(t, ctx, second, "test", "-e", "/.cainjekt/cainjekt"); (r.code == 0) != bed.runtime.NoImageDigest {
		t.Errorf("image config digests %s: the second container has the wrapper: %v", digests, r.code == 0)
	}
	_, metrics, err := currentPlugin().Get("/metrics")
	if want := fmt.Sprintf(`image_digests=%q`, digests); err != nil || !strings.Contains(metrics, want) {
		t.Errorf("cainjekt_runtime_info does not say %s (%v):\n%s", want, err, metrics)
	}
	entries, err := os.ReadDir(bed.staging)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != ".lock" && (!e.IsDir() || len(e.Name()) != 64) {
			t.Errorf("the dynamic CA root holds %s, which is no container's staging or the plugin's lock", e.Name())
		}
	}
	for _, id := range []string{first, second} {
		if r := run(t, ctx, id, "sh", "-c", "stat -c '%h %n' /etc/cainjekt/*"); strings.Contains(r.stdout, "\n2 ") || !strings.HasPrefix(r.stdout, "1 ") {
			t.Errorf("staged files with more than one link:\n%s", r.stdout)
		}
	}
}

// Pods with user namespaces of their own (hostUsers: false), each mapping
// its IDs elsewhere on the host, are injected like any other. What the
// hook made in each belongs to that pod's root, which the host's root would
// not be: the container sees it as nobody. Such pods have a network of
// their own (loopback only here, as Kubernetes refuses hostNetwork with
// hostUsers: false), so what they trust is read, not dialled. Where the
// runtime cannot start such a pod at all, the test says so, having seen a
// pod without cainjekt fail too.
func testUserNamespacedPods(t *testing.T) {
	track(t)
	ctx := testContext(t)
	spec := sleepIn(bed.image)
	spec.Env = map[string]string{"JAVA_HOME": "/nonexistent/" + strconv.FormatInt(time.Now().UnixNano(), 10)}
	if bed.runtime.NoUserNamespaces {
		p, err := bed.node.RunPod(ctx, testbed.PodSpec{Name: "userns-plain", Namespace: "e2e", UsernsHostID: 2 << 16})
		if err == nil {
			defer p.Remove(context.Background())
			_, err = p.Run(ctx, spec)
		}
		if err == nil {
			t.Fatalf("%s started a pod with a user namespace: the test bed says it cannot", bed.runtime.Name)
		}
		skipWhere(t, true, "a pod with a user namespace does not start, with or without cainjekt: "+err.Error())
	}
	var ids []string
	for i, hostID := range []uint32{2 << 16, 3 << 16} {
		p := podOf(t, ctx, testbed.PodSpec{Name: fmt.Sprintf("userns-%d", i), Namespace: "e2e", Annotations: optIn(), UsernsHostID: hostID})
		id, err := p.Run(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if r := run(t, ctx, id, "cat", "/proc/self/uid_map"); len(strings.Fields(r.stdout)) < 2 || strings.Fields(r.stdout)[1] == "0" {
			t.Fatalf("not in a user namespace: uid_map %q", r.stdout)
		}
		for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/cainjekt/bundle.pem"} {
			expectSuperset(t, ctx, id, p)
		}
		r := run(t, ctx, id, "stat", "-c", "%u:%g %n", "/usr/local/share/ca-certificates/cainjekt.crt",
			"/etc/ssl/certs/ca-certificates.crt", "/etc/cainjekt/bundle.pem")
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if !strings.HasPrefix(line, "0:0 ") {
				t.Errorf("in the container: %s, want it owned by its root (%s)", line, r.stderr)
			}
		}
	}
}

// A pod that mounts its own CA bundle over the image's (a volume, as the
// charts that take an extra volume for CAs do) keeps trusting it once
// opted in: the tools that read SSL_CERT_FILE or REQUESTS_CA_BUNDLE trust
// its CAs and ours; the bundle it mounted is left as it is. (A hook that
// renames a file over the mounted one, in the host's view, makes the
// kernel detach the container's mount: the pod lost its bundle that way.)
func testPodMountedBundleStaysTrusted(t *testing.T) {
	track(t)
	ctx := testContext(t)
	own := filepath.Join(t.TempDir(), "ca-certificates.crt")
	if err := os.WriteFile(own, slices.Concat(bed.otherCA.CertPEM, bed.publicCA.CertPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := sleepIn(bed.image)
	spec.Mounts = []*runtimeapi.Mount{{ContainerPath: "/etc/ssl/certs/ca-certificates.crt", HostPath: own, Readonly: true}}
	id, err := pod(t, ctx, "mounted-bundle", optIn()).Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{bed.otherServer.URL, bed.server.URL, bed.publicServer.URL} {
		expectTLS(t, ctx, id, "curl "+url, curlProbe(url), true)
		expectTLS(t, ctx, id, "python requests "+url, requestsProbe(url), true)
	}
	if r := run(t, ctx, id, "cat", "/etc/ssl/certs/ca-certificates.crt"); r.stdout != string(slices.Concat(bed.otherCA.CertPEM, bed.publicCA.CertPEM)) {
		t.Error("the bundle the pod mounted changed")
	}
	if st := stagedStatus(t, id); st.Result != "ok" || !slices.ContainsFunc(st.Files, func(f fileReport) bool {
		return f.Path == "/etc/ssl/certs/ca-certificates.crt" && f.Action == "mounted"
	}) {
		t.Errorf("status: %+v", st)
	}
}

// labelXattrs are the extended attributes of the labels image's trust store.
var labelXattrs = map[string]string{
	"security.selinux":  "system_u:object_r:cert_t:s0",
	"user.cainjekt-e2e": "kept",
}

// The files the hook replaces in an image keep their extended attributes:
// on an SELinux node, a trust store relabelled with the hook's context
// would be unreadable to the container. SELinux is not enabled here, so the
// label is checked as the attribute it is, on the file the container sees.
func testReplacedTrustStoreKeepsItsXattrs(t *testing.T) {
	track(t)
	ctx := testContext(t)
	id, err := pod(t, ctx, "labels", optIn()).Run(ctx, testbed.ContainerSpec{Name: "app", Image: bed.labels.Ref, Command: []string{"/pause"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := stagedStatus(t, id); st.Result != "ok" {
		t.Fatalf("hook result %q: %v", st.Result, st.Errors)
	}
	store := filepath.Join(bed.node.ContainerRootfs(id), "etc/ssl/certs/ca-certificates.crt")
	data, err := os.ReadFile(store)
	if err != nil || !bytes.Contains(data, bed.ca.CertPEM) || !bytes.Contains(data, bed.publicCA.CertPEM) {
		t.Fatalf("the trust store does not hold the image's CA and ours: %v", err)
	}
	for name, want := range labelXattrs {
		got := make([]byte, 256)
		n, err := unix.Getxattr(store, name, got)
		if err != nil || string(got[:n]) != want {
			t.Errorf("%s of the replaced trust store: %q (%v), want %q", name, got[:max(n, 0)], err, want)
		}
	}
}

// Removing a pod removes its staging; nothing is left behind.
func testStagingIsRemovedWithTheContainer(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p, err := bed.node.RunPod(ctx, testbed.PodSpec{Name: "cleanup", Namespace: "e2e", Annotations: optIn()})
	if err != nil {
		t.Fatal(err)
	}
	id := sleeper(t, ctx, p, "app", false)
	if _, err := os.Stat(filepath.Join(bed.staging, id)); err != nil {
		t.Fatalf("no staging for an injected container: %v", err)
	}
	if err := p.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	// The plugin's worker removes it, moments after the runtime's call.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := os.Stat(filepath.Join(bed.staging, id))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging left 5 s after the pod was removed: %v", err)
		}
	}
}

// Two plugins on one node would make every CreateContainer fail: the second
// one refuses to run, and the first keeps working.
func testSecondPluginRefusesToRun(t *testing.T) {
	track(t)
	ctx := testContext(t)
	second, err := testbed.StartPlugin(testbed.PluginOptions{
		Bin: bed.bin, Socket: bed.node.NRISocket, CAFile: bed.caFile, DynamicCARoot: bed.staging,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if exited, err := second.Exited(); exited {
			if err == nil || !strings.Contains(second.Logs(), "refusing to run twice") {
				t.Errorf("second plugin exited with %v:\n%s", err, second.Logs())
			}
			break
		}
		if waitCtx.Err() != nil {
			t.Fatalf("a second plugin kept running:\n%s", second.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	expectInjected(t, ctx, sleeper(t, ctx, pod(t, ctx, "one-plugin", optIn()), "app", false))
}
