package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireTool finds a tool the tests need. `make test` installs them and sets
// CAINJEKT_REQUIRE_TOOLS=1, so there a missing tool fails instead of skipping.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CAINJEKT_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not installed (make deps installs it)", name)
		}
		t.Skipf("%s not installed (make deps installs it)", name)
	}
	return p
}

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
	m.injections.Add(7)
	m.skips.inc(skipNotEnabled)
	m.errors.inc(stageHook)
	m.hookRuns.inc(hookResultOK)
	m.hookRuns.inc(hookResultMissing)
	m.cleanups.inc(cleanupOrphan)
	m.nriConnected.Store(true)
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
		`cainjekt_ca_certificate_expiry_timestamp_seconds{bundle="default",subject="CN=Example Corp Root CA,O=Example Corp",sha256="effa93284e6c5a4e"} 4949051013`,
		`cainjekt_hook_duration_seconds_bucket{le="0.005"} 1`,
		`cainjekt_hook_duration_seconds_bucket{le="0.5"} 2`,
		`cainjekt_hook_duration_seconds_bucket{le="+Inf"} 2`,
		"cainjekt_hook_duration_seconds_count 2",
		`cainjekt_namespace_lookups_total{result="cached"} 1`,
		"# TYPE process_resident_memory_bytes gauge",
		"# TYPE process_open_fds gauge",
		"# TYPE go_goroutines gauge",
	} {
		if !strings.Contains(buf.String(), line+"\n") {
			t.Errorf("missing %q in\n%s", line, buf.String())
		}
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

func TestHTTPEndpoints(t *testing.T) {
	m := busyMetrics(t)
	for _, tc := range []struct {
		path  string
		ready fixedReadiness
		code  int
		body  string
	}{
		{"/healthz", fixedReadiness{}, 200, "ok"},
		{"/readyz", fixedReadiness{ok: true}, 200, "ok"},
		{"/readyz", fixedReadiness{why: "no socket"}, 503, "not ready: no socket"},
		{"/metrics", fixedReadiness{}, 200, "# TYPE cainjekt_injections_total counter"},
	} {
		rec := httptest.NewRecorder()
		newHTTPHandler(m, tc.ready).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s: %d %q", tc.path, rec.Code, rec.Body.String())
		}
	}
}
