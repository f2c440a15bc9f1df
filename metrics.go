//go:build !hookonly

package main

// Metrics in the Prometheus text exposition format, written by hand, and the
// HTTP endpoints: /metrics, /healthz and /readyz.

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// hookDurationBuckets are the upper bounds, in seconds, of the hook
// duration histogram: the hook takes milliseconds, its timeout seconds.
var hookDurationBuckets = []float64{0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// histogram is a Prometheus histogram with fixed buckets.
type histogram struct {
	mu      sync.Mutex
	buckets []float64
	counts  []uint64 // per bucket, not cumulative
	sum     float64
	count   uint64
}

func newHistogram(buckets []float64) *histogram {
	return &histogram{buckets: buckets, counts: make([]uint64, len(buckets))}
}

func (h *histogram) observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.buckets {
		if v <= b {
			h.counts[i]++
			break
		}
	}
	h.sum += v
	h.count++
}

// metrics holds everything /metrics reports.
type metrics struct {
	injections         atomic.Uint64
	skips              *counterVec
	errors             *counterVec
	hookRuns           *counterVec
	hookDuration       *histogram
	cleanups           *counterVec
	annotationWarnings *counterVec
	namespaceLookups   *counterVec
	events             *counterVec
	wrapperless        atomic.Uint64
	nriConnected       atomic.Bool
	nriRegistrations   atomic.Uint64
	activeContainers   func() int
	outdated           func() int
	runtime            func() runtimeInfo // the runtime registered with; none in doctor
	bundles            func() []bundleSnapshot
}

func newMetrics(active, outdated func() int, bundles func() []bundleSnapshot) *metrics {
	return &metrics{
		skips:              newCounterVec("reason", skipReasons...),
		errors:             newCounterVec("stage", errorStages...),
		hookRuns:           newCounterVec("result", hookResultOK, hookResultFailed, hookResultTimeout, hookResultMissing),
		hookDuration:       newHistogram(hookDurationBuckets),
		cleanups:           newCounterVec("reason", cleanupRemoved, cleanupOrphan),
		annotationWarnings: newCounterVec("kind", annotationWarningKinds...),
		namespaceLookups:   newCounterVec("result", lookupResults...),
		events:             newCounterVec("result", eventResults...),
		activeContainers:   active,
		outdated:           outdated,
		bundles:            bundles,
	}
}

// write renders the exposition format.
func (m *metrics) write(w io.Writer) {
	e := &expo{w: w}
	e.family("cainjekt_build_info", "gauge", "Build information; the value is always 1.")
	e.sample("cainjekt_build_info", labels("version", version, "goversion", runtime.Version()), 1)
	e.single("cainjekt_injections_total", "counter", "Containers adjusted for CA injection.", float64(m.injections.Load()))
	e.vec("cainjekt_skips_total", "Containers not injected, by reason.", m.skips)
	e.vec("cainjekt_errors_total", "Errors, by the stage they happened in.", m.errors)
	e.vec("cainjekt_annotation_warnings_total", "Odd pod annotations (typos, unknown processors, invalid or too long values, failed namespace lookups), by kind.", m.annotationWarnings)
	e.vec("cainjekt_namespace_lookups_total", "Namespace lookups at the API server, by result.", m.namespaceLookups)
	e.vec("cainjekt_pod_events_total", "Kubernetes Events about pods (misspelt annotations, unknown bundles, failed injections, volumes over trust files), by result: posted, aggregated into a later one, dropped (rate_limited, queue_full), or failed.", m.events)
	e.vec("cainjekt_hook_runs_total", "OCI hook outcomes of injected containers, by result.", m.hookRuns)
	e.histogram("cainjekt_hook_duration_seconds", "Wall time of the OCI hook, as the hook reports it.", m.hookDuration)
	e.single("cainjekt_wrapperless_starts_total", "counter", "Injected containers started without the wrapper: earlier containers of their image, CA set and variables needed none.", float64(m.wrapperless.Load()))
	e.vec("cainjekt_staging_cleanups_total", "Staging directories removed, by reason.", m.cleanups)
	m.writeBundles(e)
	e.single("cainjekt_active_containers", "gauge", "Injected containers with a staging directory.", float64(m.activeContainers()))
	e.single("cainjekt_outdated_containers", "gauge", "Injected containers started with a CA bundle other than the current one; their OS and runtime trust stores keep it until they restart.", float64(m.outdated()))
	e.single("cainjekt_nri_connected", "gauge", "1 while registered with the container runtime over NRI, else 0.", boolValue(m.nriConnected.Load()))
	if m.runtime != nil {
		if rt := m.runtime(); rt.name != "" {
			e.family("cainjekt_runtime_info", "gauge", "The container runtime registered with, its NRI version, and whether it names each container's image by its config digest (yes, no, unknown); the value is always 1.")
			e.sample("cainjekt_runtime_info", labels("runtime", rt.name, "version", rt.version, "nri_version", cmp.Or(rt.nriVersion, "unknown"),
				"image_digests", cmp.Or(rt.imageDigests, "unknown")), 1)
		}
	}
	e.single("cainjekt_nri_registrations_total", "counter", "Successful registrations with the container runtime.", float64(m.nriRegistrations.Load()))
	writeProcess(e)
}

// processStart is when the process started, near enough: package
// variables are initialised before main runs.
var processStart = time.Now()

// writeProcess reports the process's own footprint, under the names and
// meanings of Prometheus client libraries' process collector, so restarts
// and leaks show on the usual dashboards.
func writeProcess(e *expo) {
	e.single("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	e.single("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", float64(processStart.UnixNano())/1e9)
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) == nil {
		cpu := time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
		e.single("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu.Seconds())
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		e.single("process_open_fds", "gauge", "Number of open file descriptors.", float64(len(fds)))
	}
	var limit syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit) == nil {
		e.single("process_max_fds", "gauge", "Maximum number of open file descriptors.", float64(limit.Cur))
	}
	if statm, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, resident uint64
		if _, err := fmt.Sscan(string(statm), &size, &resident); err == nil {
			page := uint64(os.Getpagesize())
			e.single("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", float64(size*page))
			e.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", float64(resident*page))
		}
	}
}

// writeBundles renders the CA bundles' families, a series per bundle.
func (m *metrics) writeBundles(e *expo) {
	bundles := m.bundles()
	e.family("cainjekt_ca_bundle_reloads_total", "counter", "Loads of a CA bundle file, by bundle and result: ok, or why it was unusable.")
	for _, b := range bundles {
		for _, r := range append([]string{"ok"}, bundleErrorReasons...) {
			e.sample("cainjekt_ca_bundle_reloads_total", labels("bundle", b.name, "result", r), float64(b.reloads[r]))
		}
	}
	e.family("cainjekt_ca_bundle_findings", "gauge", "Findings about a CA bundle being injected, by kind: blocks dropped or converted, certificates some runtime will not use.")
	for _, b := range bundles {
		for _, k := range findingKinds {
			e.sample("cainjekt_ca_bundle_findings", labels("bundle", b.name, "kind", k), float64(b.findings[k]))
		}
	}
	e.family("cainjekt_ca_bundle_certificates", "gauge", "Certificates in a CA bundle being injected.")
	for _, b := range bundles {
		e.sample("cainjekt_ca_bundle_certificates", labels("bundle", b.name), float64(len(b.certs)))
	}
	e.family("cainjekt_ca_bundle_last_success_timestamp_seconds", "gauge", "Unix time a CA bundle last loaded successfully; 0 if never.")
	for _, b := range bundles {
		var t float64
		if !b.loaded.IsZero() {
			t = float64(b.loaded.Unix())
		}
		e.sample("cainjekt_ca_bundle_last_success_timestamp_seconds", labels("bundle", b.name), t)
	}
	e.family("cainjekt_ca_certificate_expiry_timestamp_seconds", "gauge", "Unix time each injected CA certificate expires.")
	for _, b := range bundles {
		for _, c := range b.certs {
			subject, notAfter := about(c)
			e.sample("cainjekt_ca_certificate_expiry_timestamp_seconds",
				labels("bundle", b.name, "subject", subject, "sha256", hex.EncodeToString(c.sum[:])), float64(notAfter.Unix()))
		}
	}
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
	fmt.Fprintf(e.w, "%s%s %s\n", name, labels, strconv.FormatFloat(v, 'f', -1, 64))
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
		e.sample(name, labels(c.label, v), float64(c.counts[i].Load()))
	}
}

func (e *expo) histogram(name, help string, h *histogram) {
	e.family(name, "histogram", help)
	h.mu.Lock()
	defer h.mu.Unlock()
	var cumulative uint64
	for i, b := range h.buckets {
		cumulative += h.counts[i]
		e.sample(name+"_bucket", labels("le", strconv.FormatFloat(b, 'g', -1, 64)), float64(cumulative))
	}
	e.sample(name+"_bucket", labels("le", "+Inf"), float64(h.count))
	e.sample(name+"_sum", "", h.sum)
	e.sample(name+"_count", "", float64(h.count))
}

// labels renders name/value pairs as a label set.
func labels(pairs ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, pairs[i], escapeLabel(pairs[i+1]))
	}
	b.WriteByte('}')
	return b.String()
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

// The HTTP endpoints. The plugin answers three GETs on a port any pod of
// the cluster may reach, and nothing else of HTTP: each connection gets one
// request, read by the standard library's parser (http.ReadRequest) under a
// deadline and a size bound, and one answer, after which it is closed.
// net/http's server and client would take the plugin's binary, on every
// node, from 9 MiB to 11.
const (
	httpTimeout     = 5 * time.Second // to read the request and write the answer
	maxRequestBytes = 8 << 10         // request line and headers
	maxConnections  = 128             // served at once; more are closed at once
)

// answer is a response: its status, content type and body.
type answer struct {
	status      int
	contentType string
	body        []byte
}

func textAnswer(status int, body string) answer {
	return answer{status: status, contentType: "text/plain; charset=utf-8", body: []byte(body)}
}

// endpoints answers a request for /metrics, /healthz or /readyz.
func endpoints(m *metrics, r readiness) func(*http.Request) answer {
	return func(req *http.Request) answer {
		if req.Method != http.MethodGet {
			return textAnswer(http.StatusMethodNotAllowed, "only GET\n")
		}
		switch req.URL.Path {
		case "/metrics":
			var buf bytes.Buffer
			m.write(&buf)
			return answer{status: http.StatusOK, contentType: "text/plain; version=0.0.4; charset=utf-8", body: buf.Bytes()}
		case "/healthz":
			// Alive as long as the process serves: the plugin never gives up
			// on the runtime, so there is nothing a restart would fix.
			return textAnswer(http.StatusOK, "ok\n")
		case "/readyz":
			if ok, why := r.ready(); !ok {
				return textAnswer(http.StatusServiceUnavailable, "not ready: "+why+"\n")
			}
			return textAnswer(http.StatusOK, "ok\n")
		}
		return textAnswer(http.StatusNotFound, "not found\n")
	}
}

// serveHTTP serves handle on addr until the returned stop is called, and
// says where it listens. The listener is opened before it returns, so a
// port in use is a startup error.
func serveHTTP(addr string, handle func(*http.Request) answer, log *slog.Logger) (stop func(), bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	slots := make(chan struct{}, maxConnections)
	var served sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				log.Error("HTTP accept", "error", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			select {
			case slots <- struct{}{}:
			default:
				conn.Close() // a flood: those already in are served first
				continue
			}
			served.Go(func() {
				defer func() { <-slots }()
				serveConn(conn, handle)
			})
		}
	}()
	log.Info("serving /metrics, /healthz and /readyz", "addr", ln.Addr().String())
	return func() {
		ln.Close()
		<-done
		served.Wait() // each connection ends within httpTimeout
	}, ln.Addr().String(), nil
}

// serveConn reads one request from conn and writes its answer.
func serveConn(conn net.Conn, handle func(*http.Request) answer) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(httpTimeout))
	a := textAnswer(http.StatusBadRequest, "bad request\n")
	req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(conn, maxRequestBytes)))
	if err == nil {
		a = handle(req)
	}
	resp := &http.Response{
		StatusCode: a.status, ProtoMajor: 1, ProtoMinor: 1, Close: true,
		Header:        http.Header{"Content-Type": {a.contentType}},
		ContentLength: int64(len(a.body)), Body: io.NopCloser(bytes.NewReader(a.body)),
	}
	resp.Write(conn)
}
