package main

// Metrics in the Prometheus text exposition format, written by hand, and the
// HTTP endpoints: /metrics, /healthz and /readyz.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// Stages at which an error is counted.
const (
	stageBundle  = "bundle"  // the CA file is unusable when a container needs it
	stageStaging = "staging" // writing a container's staging directory failed
	stageHook    = "hook"    // the hook reported a failure
	stageCleanup = "cleanup" // removing a staging directory failed
	stageNRI     = "nri"     // connecting or registering with the runtime failed
)

var errorStages = []string{stageBundle, stageStaging, stageHook, stageCleanup, stageNRI}

// hookResultMissing counts injected containers removed without the hook
// having reported anything: it never ran, or was killed.
const hookResultMissing = "missing"

// counterVec is a counter with one label whose values are known up front,
// so every series exists from the start and rates never see a gap.
type counterVec struct {
	label  string
	values []string
	counts []atomic.Uint64
}

func newCounterVec(label string, values ...string) *counterVec {
	return &counterVec{label: label, values: values, counts: make([]atomic.Uint64, len(values))}
}

// inc counts one event; a value not declared up front is a programming error.
func (c *counterVec) inc(value string) {
	for i, v := range c.values {
		if v == value {
			c.counts[i].Add(1)
			return
		}
	}
	panic(fmt.Sprintf("metrics: %q is not a declared %s", value, c.label))
}

// setCounts makes the vector a gauge: how often each value occurs in values.
func (c *counterVec) setCounts(values []string) {
	for i, v := range c.values {
		c.counts[i].Store(uint64(countOf(values, v)))
	}
}

func countOf(values []string, v string) int {
	n := 0
	for _, x := range values {
		if x == v {
			n++
		}
	}
	return n
}

func (c *counterVec) get(value string) uint64 {
	for i, v := range c.values {
		if v == value {
			return c.counts[i].Load()
		}
	}
	return 0
}

// metrics holds everything /metrics reports.
type metrics struct {
	injections         atomic.Uint64
	skips              *counterVec
	errors             *counterVec
	hookRuns           *counterVec
	cleanups           *counterVec
	bundleReloads      *counterVec
	bundleFindings     *counterVec // a gauge: findings of the bundle being injected, by kind
	annotationWarnings *counterVec
	nriConnected       atomic.Bool
	nriRegistrations   atomic.Uint64
	bundleCerts        atomic.Int64
	bundleLoaded       atomic.Int64 // unix time of the last successful load
	activeContainers   func() int
	outdated           func() int
}

func newMetrics(active, outdated func() int) *metrics {
	return &metrics{
		skips:              newCounterVec("reason", skipReasons...),
		errors:             newCounterVec("stage", errorStages...),
		hookRuns:           newCounterVec("result", append(hookResults[:len(hookResults):len(hookResults)], hookResultMissing)...),
		cleanups:           newCounterVec("reason", cleanupRemoved, cleanupOrphan),
		bundleReloads:      newCounterVec("result", append([]string{"ok"}, bundleErrorReasons...)...),
		bundleFindings:     newCounterVec("kind", findingKinds...),
		annotationWarnings: newCounterVec("kind", annotationWarningKinds...),
		activeContainers:   active,
		outdated:           outdated,
	}
}

// write renders the exposition format.
func (m *metrics) write(w io.Writer) {
	e := &expo{w: w}
	e.family("cainjekt_build_info", "gauge", "Build information; the value is always 1.")
	e.sample("cainjekt_build_info", fmt.Sprintf(`{version="%s",goversion="%s"}`, escapeLabel(version), escapeLabel(runtime.Version())), 1)
	e.single("cainjekt_injections_total", "counter", "Containers adjusted for CA injection.", float64(m.injections.Load()))
	e.vec("cainjekt_skips_total", "Containers not injected, by reason.", m.skips)
	e.vec("cainjekt_errors_total", "Errors, by the stage they happened in.", m.errors)
	e.vec("cainjekt_annotation_warnings_total", "Odd pod annotations (typos, unknown processors, invalid or too long values), by kind.", m.annotationWarnings)
	e.vec("cainjekt_hook_runs_total", "OCI hook outcomes of injected containers, by result.", m.hookRuns)
	e.vec("cainjekt_staging_cleanups_total", "Staging directories removed, by reason.", m.cleanups)
	e.vec("cainjekt_ca_bundle_reloads_total", "Loads of the CA bundle file, by result: ok, or why it was unusable.", m.bundleReloads)
	e.vecOf("cainjekt_ca_bundle_findings", "gauge", "Findings about the CA bundle being injected, by kind: blocks dropped or converted, certificates some runtime will not use.", m.bundleFindings)
	e.single("cainjekt_ca_bundle_certificates", "gauge", "Certificates in the CA bundle being injected.", float64(m.bundleCerts.Load()))
	e.single("cainjekt_ca_bundle_last_success_timestamp_seconds", "gauge", "Unix time the CA bundle was last loaded successfully; 0 if never.", float64(m.bundleLoaded.Load()))
	e.single("cainjekt_active_containers", "gauge", "Injected containers with a staging directory.", float64(m.activeContainers()))
	e.single("cainjekt_outdated_containers", "gauge", "Injected containers started with a CA bundle other than the current one; their OS and runtime trust stores keep it until they restart.", float64(m.outdated()))
	e.single("cainjekt_nri_connected", "gauge", "1 while registered with the container runtime over NRI, else 0.", boolValue(m.nriConnected.Load()))
	e.single("cainjekt_nri_registrations_total", "counter", "Successful registrations with the container runtime.", float64(m.nriRegistrations.Load()))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// expo writes metric families.
type expo struct{ w io.Writer }

func (e *expo) family(name, typ, help string) {
	fmt.Fprintf(e.w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

func (e *expo) sample(name, labels string, v float64) {
	fmt.Fprintf(e.w, "%s%s %g\n", name, labels, v)
}

func (e *expo) single(name, typ, help string, v float64) {
	e.family(name, typ, help)
	e.sample(name, "", v)
}

func (e *expo) vec(name, help string, c *counterVec) {
	e.vecOf(name, "counter", help, c)
}

func (e *expo) vecOf(name, typ, help string, c *counterVec) {
	e.family(name, typ, help)
	for i, v := range c.values {
		e.sample(name, fmt.Sprintf(`{%s="%s"}`, c.label, escapeLabel(v)), float64(c.counts[i].Load()))
	}
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

// readiness reports whether the plugin is registered with the runtime, and
// why not.
type readiness interface {
	ready() (bool, string)
}

// newHTTPHandler serves /metrics, /healthz and /readyz.
func newHTTPHandler(m *metrics, r readiness) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.write(w)
	})
	// Alive as long as the process serves: the plugin never gives up on
	// the runtime, so there is nothing a restart would fix.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := r.ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", why)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

// serveHTTP serves h on addr until the returned stop is called. The listener
// is opened before it returns, so a port in use is a startup error.
func serveHTTP(addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "error", err)
		}
	}()
	log.Info("serving /metrics, /healthz and /readyz", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}
