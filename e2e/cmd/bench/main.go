// Command bench measures what cainjekt costs on a real node, with a fat
// image (a JVM, a virtualenv with a pip-installed certifi, Node, Ruby, PHP):
// the hook on its root filesystem in go benchmarks, then pod start latency
// without the plugin, with the plugin and an unannotated pod, with an
// injected pod, and with a plugin whose hook and wrapper do nothing (what
// running any hook costs), interleaved on three private nodes so that
// machine noise hits all variants alike; the hook as a process against its
// floor, a Go program writing the same files; the wrapper's and the hook
// binary's start; the plugin's footprint after a churn of injected
// containers; the binaries' sizes. It prints a table and each budget line
// with its verdict, each timing line against a floor measured in the same
// run. Run it with `make bench` (root).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

var (
	bin    = flag.String("cainjekt", "", "the cainjekt binary (cainjekt-hook beside it)")
	repo   = flag.String("repo", "", "the repository, whose go benchmarks run first on the image's root filesystem (none if empty)")
	rounds = flag.Int("pods", 100, "pods per variant")
	churn  = flag.Int("churn", 500, "injected containers created and removed before the footprint is read")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

// bench is the set-up: three nodes, one without a plugin, one with the
// plugin and one with the plugin running a no-op hook and wrapper. The roles
// rotate twice, so whatever differs between the nodes weighs on all
// variants alike.
type bench struct {
	nodes        [3]*testbed.Node
	rotation     int
	plugin, noop *testbed.Plugin
	image        *testbed.Image
	imageEnv     []string // the image config's environment
	dir, caFile  string
	staging      string // the plugin's
}

func (b *bench) plain() *testbed.Node      { return b.nodes[b.rotation%3] }
func (b *bench) withPlugin() *testbed.Node { return b.nodes[(b.rotation+1)%3] }
func (b *bench) withNoop() *testbed.Node   { return b.nodes[(b.rotation+2)%3] }

func run() error {
	if *bin == "" || os.Geteuid() != 0 {
		return fmt.Errorf("needs --cainjekt and root")
	}
	// Ctrl-C cancels: the nodes are stopped and removed on the way out, not left running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Minute)
	defer cancel()
	b, cleanup, err := setUp(ctx)
	defer cleanup()
	if err != nil {
		return err
	}
	if err := goBenchmarks(ctx, b.image); err != nil {
		return err
	}
	var r report
	if err := b.podStarts(ctx, &r); err != nil {
		return err
	}
	if err := b.hookProcesses(ctx, &r); err != nil {
		return err
	}
	if err := b.wrapperCost(ctx, &r); err != nil {
		return err
	}
	if err := b.footprint(ctx, &r); err != nil {
		return err
	}
	r.sizes()
	r.print()
	return nil
}

func setUp(ctx context.Context) (*bench, func(), error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	b := &bench{}
	bins, err := testbed.EnsureBinaries(ctx, logf)
	if err != nil {
		return nil, cleanup, err
	}
	pause, err := testbed.BuildPauseImage(ctx, logf)
	if err != nil {
		return nil, cleanup, err
	}
	pub, err := testbed.PublicCA()
	if err != nil {
		return nil, cleanup, err
	}
	spec, err := testbed.RuntimesTestImage(ctx, pub, logf)
	if err != nil {
		return nil, cleanup, err
	}
	if b.image, err = testbed.BuildDebianImage(ctx, spec, logf); err != nil {
		return nil, cleanup, err
	}
	b.imageEnv = spec.Env
	for i := range b.nodes {
		node, err := testbed.StartNode(ctx, testbed.NodeOptions{Bins: bins, PauseImage: pause})
		if err != nil {
			return nil, cleanup, err
		}
		cleanups = append(cleanups, func() { node.Close() })
		if err := node.ImportImage(ctx, b.image); err != nil {
			return nil, cleanup, err
		}
		b.nodes[i] = node
	}
	// The staging directory on tmpfs, as /run is on a node.
	dir, err := os.MkdirTemp("/dev/shm", "cainjekt-bench-")
	if err != nil {
		return nil, cleanup, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	ca, err := testbed.NewCA("cainjekt bench CA")
	if err != nil {
		return nil, cleanup, err
	}
	b.dir, b.caFile = dir, filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(b.caFile, ca.CertPEM, 0o644); err != nil {
		return nil, cleanup, err
	}
	cleanups = append(cleanups, b.stopPlugins)
	return b, cleanup, b.startPlugins(ctx)
}

// noopBinary stands in for cainjekt-hook in the no-op variant: as the hook
// it exits at once, as the wrapper (`/bin/true wrap -- /bin/true`, with
// the Debian image's own libc) it is the pod's command. What remains is
// what mounting the staging and the wrapper and running a hook cost.
const noopBinary = "/bin/true"

// startPlugins starts the plugin, and the no-op one, on their nodes.
func (b *bench) startPlugins(ctx context.Context) error {
	b.staging = filepath.Join(b.dir, fmt.Sprintf("staging-%d", b.rotation))
	var err error
	b.plugin, err = testbed.StartPlugin(testbed.PluginOptions{Bin: *bin, Socket: b.withPlugin().NRISocket, CAFile: b.caFile,
		DynamicCARoot: b.staging, Args: []string{"--log-level", "warn"}})
	if err != nil {
		return err
	}
	b.noop, err = testbed.StartPlugin(testbed.PluginOptions{Bin: *bin, Socket: b.withNoop().NRISocket, CAFile: b.caFile,
		DynamicCARoot: filepath.Join(b.dir, fmt.Sprintf("noop-%d", b.rotation)),
		Args:          []string{"--log-level", "warn", "--host-binary", noopBinary}})
	if err != nil {
		return err
	}
	if err := b.plugin.WaitReady(ctx); err != nil {
		return err
	}
	return b.noop.WaitReady(ctx)
}

func (b *bench) stopPlugins() {
	for _, p := range []*testbed.Plugin{b.plugin, b.noop} {
		if p != nil {
			p.Stop()
		}
	}
}

// rotate moves each role to the next node.
func (b *bench) rotate(ctx context.Context) error {
	b.stopPlugins()
	b.rotation++
	return b.startPlugins(ctx)
}

// variant is one of the ways a pod starts.
type variant struct {
	name     string
	node     *testbed.Node
	injected bool // annotated
	reports  bool // its hook writes status.json
}

// sample is one pod start, by CRI call.
type sample struct{ run, create, start time.Duration }

func (s sample) total() time.Duration { return s.run + s.create + s.start }

// hookReport is what the bench reads of status.json.
type hookReport struct {
	Result     string             `json:"result"`
	Processors []string           `json:"processors"`
	DurationMS float64            `json:"duration_ms"`
	TimingsMS  map[string]float64 `json:"timings_ms"`
}

// startPod starts one pod running /bin/true and removes it; for an
// injected pod it also returns the hook's report.
func (b *bench) startPod(ctx context.Context, v variant, i int) (sample, hookReport, error) {
	var ann map[string]string
	if v.injected {
		ann = map[string]string{"cainjekt.natron.io/enabled": "true"}
	}
	var s sample
	var st hookReport
	t := time.Now()
	pod, err := v.node.RunPod(ctx, testbed.PodSpec{Name: fmt.Sprintf("%s-%d", v.name, i), Namespace: "bench", Annotations: ann})
	if err != nil {
		return s, st, err
	}
	defer pod.Remove(context.Background())
	s.run = time.Since(t)
	t = time.Now()
	id, err := pod.Create(ctx, testbed.ContainerSpec{Name: "app", Image: b.image.Ref, Command: []string{"/bin/true"}})
	if err != nil {
		return s, st, err
	}
	s.create = time.Since(t)
	t = time.Now()
	if err := pod.Start(ctx, id); err != nil {
		return s, st, err
	}
	s.start = time.Since(t)
	if !v.reports {
		return s, st, nil
	}
	data, err := os.ReadFile(filepath.Join(b.staging, id, "status.json"))
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err == nil && st.Result != "ok" {
		err = fmt.Errorf("hook result %q", st.Result)
	}
	return s, st, err
}

// podStarts runs the variants interleaved, in a shuffled order each round,
// after a warm-up.
func (b *bench) podStarts(ctx context.Context, r *report) error {
	r.samples, r.hookPhases = map[string][]sample{}, map[string][]float64{}
	for i := -3; i < *rounds; i++ {
		if i > 0 && (i == *rounds/3 || i == 2**rounds/3) {
			if err := b.tally(r); err != nil {
				return err
			}
			if err := b.rotate(ctx); err != nil {
				return err
			}
		}
		variants := []variant{
			{"no-plugin", b.plain(), false, false},
			{"plugin-unannotated", b.withPlugin(), false, false},
			{"plugin-injected", b.withPlugin(), true, true},
			{"noop-injected", b.withNoop(), true, false},
		}
		order := slices.Clone(variants)
		rand.Shuffle(len(order), func(a, c int) { order[a], order[c] = order[c], order[a] })
		for _, v := range order {
			s, hook, err := b.startPod(ctx, v, i+3)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			if i < 0 {
				continue // warm-up
			}
			if v.reports {
				r.processors = hook.Processors
				r.hookMS = append(r.hookMS, hook.DurationMS)
				for phase, t := range hook.TimingsMS {
					r.hookPhases[phase] = append(r.hookPhases[phase], t)
				}
			}
			r.samples[v.name] = append(r.samples[v.name], s)
		}
		if i >= 0 && (i+1)%10 == 0 {
			logf("%d/%d rounds", i+1, *rounds)
		}
	}
	return b.tally(r)
}

// tally adds up what the plugin counted of its injections, before it is
// replaced: each plugin process learns anew which containers need the
// wrapper, so the first container it injects has it.
func (b *bench) tally(r *report) error {
	for name, dst := range map[string]*float64{"cainjekt_injections_total": &r.injections, "cainjekt_wrapperless_starts_total": &r.wrapperless} {
		v, err := b.plugin.Metric(name)
		if err != nil {
			return err
		}
		*dst += v
	}
	r.plugins++
	return nil
}

// wrapperCost times, inside an injected container that has the wrapper
// (the first of its image, CA set and variables: a JAVA_HOME of its own),
// exec of /bin/true through the wrapper against exec of /bin/true,
// alternating batches; and the hook binary starting and exiting
// (`version`), the floor of any Go program.
func (b *bench) wrapperCost(ctx context.Context, r *report) error {
	pod, err := b.withPlugin().RunPod(ctx, testbed.PodSpec{Name: "wrapper", Namespace: "bench",
		Annotations: map[string]string{"cainjekt.natron.io/enabled": "true"}})
	if err != nil {
		return err
	}
	defer pod.Remove(context.Background())
	id, err := pod.Run(ctx, testbed.ContainerSpec{Name: "app", Image: b.image.Ref, Command: []string{"sleep", "3600"},
		Env: map[string]string{"JAVA_HOME": "/nonexistent/wrapper-cost"}})
	if err != nil {
		return err
	}
	const perBatch = 50
	loop := func(cmd string) string {
		return fmt.Sprintf(`s=$(date +%%s%%N); i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done; e=$(date +%%s%%N); echo $(( (e-s)/%d ))`, perBatch, cmd, perBatch)
	}
	for batch := 0; batch < 20; batch++ {
		for _, c := range []struct {
			cmd string
			dst *[]float64
		}{{"/bin/true", &r.directNS}, {"/.cainjekt/cainjekt wrap -- /bin/true 2>/dev/null", &r.wrappedNS},
			{"/.cainjekt/cainjekt version >/dev/null", &r.startNS}} {
			out, _, code, err := b.withPlugin().Exec(ctx, id, []string{"sh", "-c", loop(c.cmd)}, time.Minute)
			if err != nil || code != 0 {
				return fmt.Errorf("wrapper timing: exit %d, %v", code, err)
			}
			ns, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
			if err != nil {
				return fmt.Errorf("wrapper timing: %q: %w", out, err)
			}
			*c.dst = append(*c.dst, ns)
		}
	}
	return nil
}

// footprint churns injected containers through the plugin and reads its
// memory, descriptors and goroutines before and after, and what is left in
// its staging directory.
func (b *bench) footprint(ctx context.Context, r *report) error {
	before, err := b.processMetrics()
	if err != nil {
		return err
	}
	const perPod = 5
	for made := 0; made < *churn; {
		pod, err := b.withPlugin().RunPod(ctx, testbed.PodSpec{Name: fmt.Sprintf("churn-%d", made), Namespace: "bench",
			Annotations: map[string]string{"cainjekt.natron.io/enabled": "true"}})
		if err != nil {
			return err
		}
		for c := 0; c < perPod && made < *churn; c++ {
			if _, err := pod.Run(ctx, testbed.ContainerSpec{Name: fmt.Sprintf("c%d", c), Image: b.image.Ref, Command: []string{"/bin/true"}}); err != nil {
				return err
			}
			made++
		}
		if err := pod.Remove(ctx); err != nil {
			return err
		}
		if made%100 == 0 {
			logf("churn: %d/%d injected containers", made, *churn)
		}
	}
	time.Sleep(time.Second) // let the last removals settle
	after, err := b.processMetrics()
	if err != nil {
		return err
	}
	r.before, r.after = before, after
	entries, err := os.ReadDir(b.staging)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			r.stagingLeft++
		}
	}
	return nil
}

// goBenchmarks runs the repository's go benchmarks, the hook's on the
// image's root filesystem among them, and prints their results.
func goBenchmarks(ctx context.Context, image *testbed.Image) error {
	if *repo == "" {
		return nil
	}
	rootfs, err := testbed.ImageRootfs(ctx, image)
	if err != nil {
		return err
	}
	logf("go benchmarks, the hook on %s", rootfs)
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", ".")
	cmd.Dir, cmd.Stdout, cmd.Stderr = *repo, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "CAINJEKT_BENCH_ROOTFS="+rootfs)
	return cmd.Run()
}

func (b *bench) processMetrics() (map[string]float64, error) {
	out := map[string]float64{}
	// The resident set in its two parts: anonymous memory (heap, stacks)
	// and file-backed pages of the binary, shared through the page cache.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.plugin.Pid()))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "RssAnon" || k == "RssFile") {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			out[k] = kb * 1024
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "process_open_fds", "go_goroutines", "cainjekt_active_containers"} {
		v, err := b.plugin.Metric(name)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}
