//go:build !hookonly

package main

import (
	"bytes"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requireTool finds a tool the tests need. `make test` installs them and sets
// CAINJEKT_REQUIRE_TOOLS=1, so there a missing tool fails instead of skipping.

func busyMetrics(t testing.TB) *metrics {
	cert, _, _ := parseCABundle(readTestdata(t, "certs/corp-root.pem"))
	bundles := func() []bundleSnapshot {
		return []bundleSnapshot{{name: "default", reloads: map[string]uint64{"ok": 1}, certs: cert.certs,
			loaded: time.Unix(1700000000, 0), findings: map[string]int{findExpiresSoon: 2}}}
	}
	m := newMetrics(func() int { return 3 }, func() int { return 1 }, bundles)
	m.hookDuration.observe(0.004)
	m.hookDuration.observe(0.3)
	m.namespaceLookups.inc(lookupCached)
	m.events.inc(eventPosted)
	m.injections.Add(7)
	m.skips.inc(skipNotEnabled)
	m.errors.inc(stageHook)
	m.hookRuns.inc(hookResultOK)
	m.hookRuns.inc(hookResultMissing)
	m.cleanups.inc(cleanupOrphan)
	m.nriConnected.Store(true)
	m.runtime = func() runtimeInfo {
		return runtimeInfo{name: "containerd", version: "1.7.29", imageDigests: "no"}
	}
	return m
}

func TestMetricsPassPromtool(t *testing.T) {
	promtool := requireTool(t, "promtool")
	var buf bytes.Buffer
	busyMetrics(t).write(&buf)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\n--- exposition:\n%s", err, out, buf.String())
	}
}

func TestMetricsValues(t *testing.T) {
	var buf bytes.Buffer
	busyMetrics(t).write(&buf)
	for _, line := range []string{
		"cainjekt_injections_total 7",
		`cainjekt_skips_total{reason="not_enabled"} 1`,
		`cainjekt_skips_total{reason="container_excluded"} 0`,
		`cainjekt_errors_total{stage="hook"} 1`,
		`cainjekt_hook_runs_total{result="missing"} 1`,
		`cainjekt_staging_cleanups_total{reason="orphan"} 1`,
		"cainjekt_active_containers 3",
		"cainjekt_outdated_containers 1",
		"cainjekt_nri_connected 1",
		`cainjekt_ca_bundle_certificates{bundle="default"} 1`,
		`cainjekt_ca_bundle_findings{bundle="default",kind="expires_soon"} 2`,
		`cainjekt_ca_bundle_findings{bundle="default",kind="private_key"} 0`,
		`cainjekt_ca_bundle_reloads_total{bundle="default",result="ok"} 1`,
		`cainjekt_ca_bundle_last_success_timestamp_seconds{bundle="default"} 1700000000`,
		`cainjekt_ca_certificate_expiry_timestamp_seconds{bundle="default",subject="CN=Example Corp Root CA,O=Example Corp",sha256="effa93284e6c5a4ec349faf71e63dc39d3e70bc651ffa70760e8a029844d7ea8"} 4949051013`, // openssl x509 -outform DER | sha256sum
		`cainjekt_hook_duration_seconds_bucket{le="0.005"} 1`,
		`cainjekt_hook_duration_seconds_bucket{le="0.5"} 2`,
		`cainjekt_hook_duration_seconds_bucket{le="+Inf"} 2`,
		"cainjekt_hook_duration_seconds_count 2",
		`cainjekt_namespace_lookups_total{result="cached"} 1`,
		`cainjekt_pod_events_total{result="posted"} 1`,
		`cainjekt_pod_events_total{result="queue_full"} 0`,
		"# TYPE process_resident_memory_bytes gauge",
		"# TYPE process_virtual_memory_bytes gauge",
		"# TYPE process_open_fds gauge",
		"# TYPE process_max_fds gauge",
		"# TYPE process_cpu_seconds_total counter",
		"# TYPE process_start_time_seconds gauge",
		"# TYPE go_goroutines gauge",
	} {
		if !strings.Contains(buf.String(), line+"\n") {
			t.Errorf("missing %q in\n%s", line, buf.String())
		}
	}
}

// process_start_time_seconds is when this process started, as the kernel
// has it: /proc/self/stat's start time, in clock ticks (100 a second on
// Linux) after boot, plus /proc/stat's boot time.
func TestProcessStartTimeIsThisProcesss(t *testing.T) {
	var buf bytes.Buffer
	busyMetrics(t).write(&buf)
	_, after, _ := strings.Cut(buf.String(), "\nprocess_start_time_seconds ")
	reported, err := strconv.ParseFloat(strings.Fields(after)[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	_, fields, _ := strings.Cut(string(stat), ") ")
	ticks, _ := strconv.ParseFloat(strings.Fields(fields)[19], 64) // field 22 of stat, the 20th after the command
	procStat, _ := os.ReadFile("/proc/stat")
	_, btimeLine, _ := strings.Cut(string(procStat), "\nbtime ")
	boot, _ := strconv.ParseFloat(strings.Fields(btimeLine)[0], 64)
	if kernel := boot + ticks/100; math.Abs(reported-kernel) > 2 {
		t.Errorf("process_start_time_seconds %f, the kernel says %f", reported, kernel)
	}
}

func TestUndeclaredLabelValuePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("an undeclared label value was counted silently")
		}
	}()
	zero := func() int { return 0 }
	newMetrics(zero, zero, func() []bundleSnapshot { return nil }).skips.inc("made_up")
}

type fixedReadiness struct {
	ok  bool
	why string
}

func (f fixedReadiness) ready() (bool, string) { return f.ok, f.why }

// serveTest serves the endpoints on a port of the loopback, for the test.
func serveTest(t *testing.T, m *metrics, r readiness) string {
	t.Helper()
	stop, addr, err := serveHTTP("127.0.0.1:0", endpoints(m, r), newLogger(io.Discard, "text", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return "http://" + addr
}

func TestHTTPEndpoints(t *testing.T) {
	m := busyMetrics(t)
	for _, tc := range []struct {
		method, path string
		ready        fixedReadiness
		code         int
		body         string
	}{
		{"GET", "/healthz", fixedReadiness{}, 200, "ok"},
		{"GET", "/readyz", fixedReadiness{ok: true}, 200, "ok"},
		{"GET", "/readyz", fixedReadiness{why: "no socket"}, 503, "not ready: no socket"},
		{"GET", "/metrics", fixedReadiness{}, 200, "# TYPE cainjekt_injections_total counter"},
		{"GET", "/nothing", fixedReadiness{}, 404, "not found"},
		{"POST", "/metrics", fixedReadiness{}, 405, "only GET"},
	} {
		req, _ := http.NewRequest(tc.method, serveTest(t, m, tc.ready)+tc.path, strings.NewReader(""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: %d %q", tc.method, tc.path, resp.StatusCode, body)
		}
		if tc.path == "/metrics" && tc.code == 200 && resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
			t.Errorf("/metrics content type %q", resp.Header.Get("Content-Type"))
		}
	}
}

// The endpoints are one GET per connection and nothing more: a request
// over the size bound, or garbage, is refused, and a client that sends
// nothing is cut off, while the others are served.
func TestHTTPServerRefusesWhatIsNotAGet(t *testing.T) {
	addr := strings.TrimPrefix(serveTest(t, busyMetrics(t), fixedReadiness{ok: true}), "http://")
	for name, req := range map[string]string{
		"headers over the bound": "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxRequestBytes) + "\r\n\r\n",
		"not HTTP":               "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(req))
		reply, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.HasPrefix(string(reply), "HTTP/1.1 400 ") {
			t.Errorf("%s: %.60q", name, reply)
		}
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if resp, err := http.Get("http://" + addr + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("with an idle client connected: %v", err)
	}
	began := time.Now()
	io.ReadAll(idle)
	if took := time.Since(began); took > httpTimeout+time.Second {
		t.Errorf("an idle client was cut off after %s, want %s", took, httpTimeout)
	}
}

// get is the count of one value.
func (c *counterVec) get(value string) uint64 {
	for i, v := range c.values {
		if v == value {
			return c.counts[i].Load()
		}
	}
	return 0
}

// docs/operations.md lists every metric family /metrics has, and no other.
func TestOperationsListsEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "\n### Metrics\n")
	section, _, _ = strings.Cut(section, "\n#") // the next heading
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if first, _, ok := strings.Cut(strings.TrimPrefix(line, "| "), " |"); ok && strings.HasPrefix(line, "| `") {
			for _, name := range strings.Split(first, ", ") {
				name, _, _ = strings.Cut(strings.Trim(name, "`"), "{")
				documented[name] = true
			}
		}
	}
	var buf bytes.Buffer
	busyMetrics(t).write(&buf)
	exported := map[string]bool{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			exported[strings.Fields(rest)[0]] = true
		}
	}
	for name := range exported {
		if !documented[name] {
			t.Errorf("%s is not in docs/operations.md's Metrics table", name)
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("docs/operations.md lists %s, which /metrics does not have", name)
		}
	}
}
