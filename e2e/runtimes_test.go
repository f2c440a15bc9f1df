package e2e

// The language matrix: every runtime proven by the runtime itself, in the
// runtimes image, against the run's HTTPS servers.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// probe is one client of one runtime.
type probe struct {
	name string
	cmd  func(url string) []string
	// tlsOK tells whether TLS verification succeeded, for a client that
	// fails afterwards by design (pip finds no package on the test server);
	// nil means exit 0.
	tlsOK func(execResult) bool
	// ownRoots: the runtime trusts roots compiled into it, not the image's
	// store, so the public server (its CA is in the image's store) fails
	// with and without injection.
	ownRoots bool
}

func (p probe) ok(r execResult) bool {
	if p.tlsOK != nil {
		return p.tlsOK(r)
	}
	return r.code == 0
}

func hostPort(u string) string {
	parsed, _ := url.Parse(u)
	return parsed.Host
}

// python3 is the interpreter first in the image's PATH: the virtualenv's,
// whose certifi is a pip-style one with a bundle of its own.
var runtimeProbes = []probe{
	{name: "curl", cmd: curlProbe},
	{name: "wget", cmd: func(u string) []string { return []string{"wget", "-nv", "-O", "/dev/null", u} }},
	{name: "openssl s_client", cmd: func(u string) []string {
		return []string{"sh", "-c", "openssl s_client -connect " + hostPort(u) + " -verify_return_error -brief </dev/null"}
	}},
	{name: "git ls-remote", cmd: func(u string) []string { return []string{"git", "ls-remote", u} }},
	{name: "python ssl", cmd: func(u string) []string {
		return []string{"python3", "-c", "import ssl, sys, urllib.request; urllib.request.urlopen(sys.argv[1], context=ssl.create_default_context(), timeout=20)", u}
	}},
	{name: "python requests", cmd: requestsProbe},
	{name: "python app verifying with its own certifi", cmd: func(u string) []string { return []string{"/opt/app/app.py", u} }},
	{name: "pip", cmd: pipProbe, tlsOK: pipReachedIndex},
	{name: "botocore (AWS SDK)", cmd: botocoreProbe("python3")},
	{name: "node https.get", cmd: nodeProbe},
	{name: "deno fetch", cmd: denoProbe, ownRoots: true},
	{name: "java HttpsURLConnection", cmd: func(u string) []string { return []string{"java", "-cp", "/opt/probe", "Probe", "urlconnection", u} }},
	{name: "java HttpClient", cmd: func(u string) []string { return []string{"java", "-cp", "/opt/probe", "Probe", "httpclient", u} }},
	{name: "ruby Net::HTTP", cmd: func(u string) []string {
		return []string{"ruby", "-rnet/http", "-e", "Net::HTTP.get_response(URI(ARGV[0])).value", u}
	}},
	{name: "php file_get_contents", cmd: func(u string) []string {
		return []string{"php", "-r", "if (file_get_contents($argv[1]) === false) exit(1);", u}
	}},
}

func pipProbe(u string) []string {
	return []string{"pip", "download", "--no-deps", "--no-cache-dir", "--retries", "0", "--timeout", "10",
		"-d", "/tmp/pip", "--index-url", u + "simple/", "cainjekt-probe"}
}

// pipReachedIndex: the test server has no package, so pip fails after a
// verified connection, saying it found no version.
func pipReachedIndex(r execResult) bool {
	out := r.stdout + r.stderr
	return strings.Contains(out, "from versions: none") && !certificateError(out)
}

func botocoreProbe(python string) func(string) []string {
	return func(u string) []string {
		return []string{python, "-c", "import sys, botocore.config, botocore.session; " +
			"c = botocore.session.get_session().create_client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', " +
			"aws_access_key_id='e2e', aws_secret_access_key='e2e', config=botocore.config.Config(retries={'max_attempts': 1})); " +
			"c.list_buckets()", u}
	}
}

func nodeProbe(u string) []string {
	return []string{"node", "-e", `require("https").get(process.argv[1], r => process.exit(r.statusCode === 200 ? 0 : 2))` +
		`.on("error", e => { console.error(e.message); process.exit(1) })`, u}
}

func denoProbe(u string) []string {
	return []string{"env", "PROBE_URL=" + u, "DENO_DIR=/tmp/deno", "DENO_NO_UPDATE_CHECK=1", "deno", "eval",
		`const r = await fetch(Deno.env.get("PROBE_URL")); await r.body?.cancel(); if (!r.ok) Deno.exit(2);`}
}

func runtimesSleeper(t *testing.T, ctx context.Context, p *testbed.Pod) string {
	t.Helper()
	id, err := p.Run(ctx, sleepIn(bed.runtimes))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// expectProbe runs a probe and checks that TLS verification succeeded, or
// failed for the certificate.
func expectProbe(t *testing.T, ctx context.Context, id string, p probe, cmd []string, want bool) {
	t.Helper()
	r := run(t, ctx, id, cmd...)
	what := p.name + " (" + strings.Join(cmd, " ") + ")"
	switch got := p.ok(r); {
	case want && !got:
		t.Errorf("%s: TLS failed, want success: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
	case !want && got:
		t.Errorf("%s: TLS succeeded, want a certificate verification failure", what)
	case !want && !certificateError(r.stdout+r.stderr):
		t.Errorf("%s: failed, but not for the certificate: exit %d\n%s%s", what, r.code, r.stdout, r.stderr)
	}
}

// Each runtime: without the annotation the call fails verification; with
// it, calls to servers of both injected roots (one through an intermediate
// the bundle carries) succeed, and whatever the runtime trusted before, the
// public server, it still trusts.
func testLanguageRuntimesTrustTheCA(t *testing.T) {
	expectRuntimesTrust(t, runtimeProbes)
}

// The JVM's two clients and Python's (a pip-style certifi of its own, and
// requests), on every container runtime.
func testJVMAndPythonTrustTheCA(t *testing.T) {
	expectRuntimesTrust(t, slices.DeleteFunc(slices.Clone(runtimeProbes), func(p probe) bool {
		return !strings.HasPrefix(p.name, "java") && !strings.HasPrefix(p.name, "python")
	}))
}

func expectRuntimesTrust(t *testing.T, probes []probe) {
	track(t)
	ctx := testContext(t)
	plain := runtimesSleeper(t, ctx, pod(t, ctx, "runtimes-plain", nil))
	injected := runtimesSleeper(t, ctx, pod(t, ctx, "runtimes-injected", optIn()))
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			expectProbe(t, ctx, plain, p, p.cmd(bed.server.URL), false)
			expectProbe(t, ctx, injected, p, p.cmd(bed.server.URL), true)
			expectProbe(t, ctx, injected, p, p.cmd(bed.server2.URL), true)
			expectProbe(t, ctx, plain, p, p.cmd(bed.publicServer.URL), !p.ownRoots)
			expectProbe(t, ctx, injected, p, p.cmd(bed.publicServer.URL), !p.ownRoots)
		})
	}
}

// The variables for tools that ignore SSL_CERT_FILE, each proven by its tool
// with the OS store left alone: the tool trusts the CA with the variable and
// does not without it.
func testEachTrustVariableIsHonoured(t *testing.T) {
	track(t)
	ctx := testContext(t)
	id := runtimesSleeper(t, ctx, pod(t, ctx, "long-tail", optIn("processors.exclude", "os-debian")))
	// Debian's own python3, pip and botocore read Debian's certifi, which is
	// the OS bundle: with the OS store alone, only the variable can help.
	for _, tc := range []struct {
		variable string
		probe    probe
		also     []string // other variables the tool would fall back on
	}{
		{"SSL_CERT_FILE", probe{name: "python ssl", cmd: func(u string) []string {
			return []string{"/usr/bin/python3", "-c", "import ssl, sys, urllib.request; urllib.request.urlopen(sys.argv[1], context=ssl.create_default_context(), timeout=20)", u}
		}}, nil},
		{"REQUESTS_CA_BUNDLE", probe{name: "requests", cmd: func(u string) []string {
			return []string{"/usr/bin/python3", "-c", "import requests, sys; requests.get(sys.argv[1], timeout=20)", u}
		}}, []string{"CURL_CA_BUNDLE"}},
		{"CURL_CA_BUNDLE", probe{name: "curl", cmd: curlProbe}, []string{"SSL_CERT_FILE"}},
		{"GIT_SSL_CAINFO", probe{name: "git", cmd: func(u string) []string { return []string{"git", "ls-remote", u} }}, []string{"SSL_CERT_FILE"}},
		{"PIP_CERT", probe{name: "pip", cmd: pipProbe, tlsOK: pipReachedIndex}, []string{"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}},
		{"AWS_CA_BUNDLE", probe{name: "botocore", cmd: botocoreProbe("/usr/bin/python3")}, []string{"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}},
		// Debian's node uses OpenSSL's default paths, so SSL_CERT_FILE too;
		// Deno 2 reads NODE_EXTRA_CA_CERTS too (both measured here).
		{"NODE_EXTRA_CA_CERTS", probe{name: "node", cmd: nodeProbe}, []string{"SSL_CERT_FILE"}},
		{"DENO_CERT", probe{name: "deno", cmd: denoProbe}, []string{"NODE_EXTRA_CA_CERTS"}},
	} {
		t.Run(tc.variable, func(t *testing.T) {
			expectProbe(t, ctx, id, tc.probe, without(tc.also, tc.probe.cmd(bed.server.URL)), true)
			expectProbe(t, ctx, id, tc.probe, without(append(tc.also, tc.variable), tc.probe.cmd(bed.server.URL)), false)
		})
	}
}

// grpcProbe opens a gRPC channel over TLS with grpcio's default roots, as
// a client that passes none does, and waits for the handshake; gRPC's core
// logs why a handshake failed with GRPC_VERBOSITY=debug.
func grpcProbe(u string) []string {
	return []string{"env", "GRPC_VERBOSITY=debug", "/usr/bin/python3", "-c", "import grpc, sys, urllib.parse; " +
		"ch = grpc.secure_channel(urllib.parse.urlparse(sys.argv[1]).netloc, grpc.ssl_channel_credentials()); " +
		"grpc.channel_ready_future(ch).result(timeout=15)", u}
}

// gRPC's C core, through Python's grpcio: it reads the file
// GRPC_DEFAULT_SSL_ROOTS_FILE_PATH names, else the roots.pem grpcio ships,
// and never the OS store. With the variable it trusts the CA and what the
// image trusted; without it, its own roots.pem, which the hook merged, so
// the CA still but not the image's own roots.
func testGRPCTrustsTheCA(t *testing.T) {
	track(t)
	ctx := testContext(t)
	grpc := probe{name: "grpcio", cmd: grpcProbe}
	plain := runtimesSleeper(t, ctx, pod(t, ctx, "grpc-plain", nil))
	injected := runtimesSleeper(t, ctx, pod(t, ctx, "grpc-injected", optIn()))
	noVar := func(u string) []string { return without([]string{"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"}, grpcProbe(u)) }
	for _, tc := range []struct {
		what string
		id   string
		cmd  []string
		ok   bool
	}{
		{"not injected", plain, grpcProbe(bed.server.URL), false},
		{"injected", injected, grpcProbe(bed.server.URL), true},
		{"injected, second root", injected, grpcProbe(bed.server2.URL), true},
		{"injected, a root of the image's store", injected, grpcProbe(bed.publicServer.URL), true},
		{"injected, without the variable: its roots.pem", injected, noVar(bed.server.URL), true},
		{"injected, without the variable: not the image's store", injected, noVar(bed.publicServer.URL), false},
	} {
		expectProbe(t, ctx, tc.id, grpc, tc.cmd, tc.ok)
	}
}

// A JVM store the hook cannot rewrite (here: JAVA_HOME names a JDK whose
// cacerts is a password-protected PKCS#12) gets the fallback: a JKS of the
// merged bundle, named by JAVA_TOOL_OPTIONS for the main process. The JVM
// then trusts that store alone, so its calls succeeding prove the store.
func testJavaFallbackTruststore(t *testing.T) {
	track(t)
	ctx := testContext(t)
	p := pod(t, ctx, "java-fallback", optIn())
	script := fmt.Sprintf("java -cp /opt/probe Probe httpclient %s && java -cp /opt/probe Probe urlconnection %s && echo JAVA_OK",
		bed.server.URL, bed.publicServer.URL)
	id, err := p.Run(ctx, testbed.ContainerSpec{Name: "app", Image: bed.runtimes.Ref, Command: []string{"sh", "-c", script},
		Env: map[string]string{"JAVA_HOME": testbed.EncryptedJDK, "JAVA_TOOL_OPTIONS": "-Xshare:auto"}})
	if err != nil {
		t.Fatal(err)
	}
	code, err := bed.node.WaitExit(ctx, id)
	logs, _ := bed.node.Logs(id)
	want := "Picked up JAVA_TOOL_OPTIONS: -Xshare:auto -Djavax.net.ssl.trustStore=/etc/cainjekt/java-cacerts.jks"
	if err != nil || code != 0 || !strings.Contains(logs, "JAVA_OK") || !strings.Contains(logs, want) {
		t.Errorf("exit %d (%v); want %q and JAVA_OK in the logs:\n%s", code, err, want, logs)
	}
	st := stagedStatus(t, id)
	if !strings.Contains(fmt.Sprint(st.Files), testbed.EncryptedJDK+"/lib/security/cacerts fallback") {
		t.Errorf("status does not report the fallback: %+v", st.Files)
	}
}

// runTLSGet runs /tlsget URLS as the container's main process, through the
// wrapper, in an image without a shell, and returns its log lines.
func runTLSGet(t *testing.T, ctx context.Context, p *testbed.Pod, image *testbed.Image, urls ...string) (string, string) {
	t.Helper()
	id, err := p.Run(ctx, testbed.ContainerSpec{Name: "app", Image: image.Ref, Command: append([]string{"/tlsget"}, urls...)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.node.WaitExit(ctx, id); err != nil {
		t.Fatal(err)
	}
	logs, err := bed.node.Logs(id)
	if err != nil {
		t.Fatal(err)
	}
	return id, logs
}

// expectLines checks tlsget's verdict per URL.
func expectLines(t *testing.T, logs string, want map[string]bool) {
	t.Helper()
	for u, ok := range want {
		verdict := "FAIL " + u
		if ok {
			verdict = "OK " + u
		}
		if !strings.Contains(logs, verdict) {
			t.Errorf("want %q in the logs:\n%s", verdict, logs)
		}
	}
}

// A static Go binary in a scratch image (no shell, no os-release, no trust
// store): cainjekt creates a trust store, and with CAINJEKT_BASE_BUNDLE the
// image gets public roots too.
func testScratchGoImage(t *testing.T) {
	track(t)
	ctx := testContext(t)
	_, logs := runTLSGet(t, ctx, pod(t, ctx, "scratch-plain", nil), bed.scratch, bed.server.URL, bed.publicServer.URL)
	expectLines(t, logs, map[string]bool{bed.server.URL: false, bed.publicServer.URL: false})

	id, logs := runTLSGet(t, ctx, pod(t, ctx, "scratch-injected", optIn()), bed.scratch, bed.server.URL, bed.server2.URL, bed.publicServer.URL)
	expectLines(t, logs, map[string]bool{bed.server.URL: true, bed.server2.URL: true, bed.publicServer.URL: false})
	if st := stagedStatus(t, id); st.Family != "fallback" || !strings.Contains(fmt.Sprint(st.Files), "created") {
		t.Errorf("status: %+v", st)
	}

	base := filepath.Join(bed.dir, "base-bundle.pem")
	if err := os.WriteFile(base, bed.publicCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	restoreMainPlugin(t)
	if _, err := startPlugin(ctx, bed.caFile, "--base-bundle", base); err != nil {
		t.Fatal(err)
	}
	_, logs = runTLSGet(t, ctx, pod(t, ctx, "scratch-base-bundle", optIn()), bed.scratch, bed.server.URL, bed.publicServer.URL)
	expectLines(t, logs, map[string]bool{bed.server.URL: true, bed.publicServer.URL: true})
}

// A distroless-style image (no shell, no package manager, SSL_CERT_FILE in
// its config): the image's own variable is kept, and the file it names is
// merged.
func testDistrolessImage(t *testing.T) {
	track(t)
	ctx := testContext(t)
	_, logs := runTLSGet(t, ctx, pod(t, ctx, "distroless-plain", nil), bed.distroless, bed.server.URL, bed.publicServer.URL)
	expectLines(t, logs, map[string]bool{bed.server.URL: false, bed.publicServer.URL: true})

	id, logs := runTLSGet(t, ctx, pod(t, ctx, "distroless-injected", optIn()), bed.distroless, bed.server.URL, bed.server2.URL, bed.publicServer.URL)
	expectLines(t, logs, map[string]bool{bed.server.URL: true, bed.server2.URL: true, bed.publicServer.URL: true})
	if st := stagedStatus(t, id); st.Family != "debian" || st.Result != "ok" {
		t.Errorf("status: %+v", st)
	}
}

// stagedStatus reads a container's status.json from the host side, for
// images without cat.
func stagedStatus(t *testing.T, id string) hookReport {
	t.Helper()
	var st hookReport
	data, err := os.ReadFile(filepath.Join(bed.staging, id, "status.json"))
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err != nil {
		t.Fatalf("status.json of %s: %v", id, err)
	}
	return st
}

// hookReport is the part of status.json the tests read.
type hookReport struct {
	Result string       `json:"result"`
	Family string       `json:"family"`
	Errors []string     `json:"errors"`
	Files  []fileReport `json:"files"`
}

// fileReport is what status.json says the hook did at a path.
type fileReport struct {
	Path   string `json:"path"`
	Action string `json:"action"`
}

// waitForFile waits until the file holds want: the plugin refreshes staged
// files on its bundle check, every few seconds.
func waitForFile(ctx context.Context, p string, want []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if got, err := os.ReadFile(p); err == nil && string(got) == string(want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never held the expected content: %w", p, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
