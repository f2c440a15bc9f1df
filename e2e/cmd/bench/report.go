package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// report collects the measurements.
type report struct {
	samples             map[string][]sample
	hookMS              []float64            // the hook's own time in the injected pods, status.json's duration_ms
	hookPhases          map[string][]float64 // the same, by phase
	processors          []string             // the processors the plugin gave the injected pods
	hookWall, floorWall []time.Duration      // the hook as a process, and its floor (hookProcesses)
	hookOwn             []float64            // the hook's own time in those runs
	floorFiles          int                  // the files the hook writes, which the floor writes too
	floorBytes          int64
	directNS, wrappedNS []float64 // per exec, one value per batch
	startNS             []float64 // per exec of `cainjekt-hook version`, one value per batch
	injections          float64   // injected containers during the pod starts
	wrapperless         float64   // of them, started without the wrapper
	plugins             int       // plugin processes they were injected by
	before, after       map[string]float64
	stagingLeft         int
	binSizes            map[string]int64
}

// quantile of sorted-on-the-fly values, by nearest rank.
func quantile(v []float64, q float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d []time.Duration) []float64 {
	out := make([]float64, len(d))
	for i, x := range d {
		out[i] = float64(x.Microseconds()) / 1000
	}
	return out
}

// phase picks one CRI call (or the total) of a variant's samples.
func (r *report) phase(variant string, f func(sample) time.Duration) []float64 {
	var d []time.Duration
	for _, s := range r.samples[variant] {
		d = append(d, f(s))
	}
	return ms(d)
}

var phases = []struct {
	name string
	f    func(sample) time.Duration
}{
	{"RunPodSandbox", func(s sample) time.Duration { return s.run }},
	{"CreateContainer", func(s sample) time.Duration { return s.create }},
	{"StartContainer", func(s sample) time.Duration { return s.start }},
	{"total", sample.total},
}

var variantNames = []struct{ key, label string }{
	{"no-plugin", "(a) no plugin"},
	{"plugin-unannotated", "(b) plugin, pod not annotated"},
	{"plugin-injected", "(c) plugin, pod injected"},
	{"noop-injected", "(d) no-op hook, with wrapper"},
}

func (r *report) sizes() {
	r.binSizes = map[string]int64{}
	for _, name := range []string{filepath.Base(*bin), "cainjekt-hook"} {
		if st, err := os.Stat(filepath.Join(filepath.Dir(*bin), name)); err == nil {
			r.binSizes[name] = st.Size()
		}
	}
}

// median of one CRI call (or the total) of a variant, in ms.
func (r *report) median(variant, phase string) float64 {
	for _, p := range phases {
		if p.name == phase {
			return quantile(r.phase(variant, p.f), 0.5)
		}
	}
	return 0
}

func (r *report) ratio(variant, phase string) float64 {
	return r.median(variant, phase) / r.median("no-plugin", phase)
}

func (r *report) print() {
	n := len(r.samples["no-plugin"])
	fmt.Printf("\ncainjekt bench: %d pods per variant, interleaved in shuffled rounds; containerd %s, runc %s; %d CPUs, %s, %s\n\n",
		n, testbed.ContainerdVersion, testbed.RuncVersion, runtime.NumCPU(), kernel(), runtime.Version())
	fmt.Printf("%-38s", "pod start, ms (median / p90)")
	for _, p := range phases {
		fmt.Printf("%-20s", p.name)
	}
	fmt.Println()
	for _, v := range variantNames {
		fmt.Printf("%-38s", v.label)
		for _, p := range phases {
			x := r.phase(v.key, p.f)
			fmt.Printf("%-20s", fmt.Sprintf("%.1f / %.1f", quantile(x, 0.5), quantile(x, 0.9)))
		}
		fmt.Println()
	}
	wrapped, started := make([]float64, len(r.wrappedNS)), make([]float64, len(r.startNS))
	for i := range r.wrappedNS {
		wrapped[i] = (r.wrappedNS[i] - r.directNS[i]) / 1e6
		started[i] = (r.startNS[i] - r.directNS[i]) / 1e6
	}
	rss := r.after["process_resident_memory_bytes"] / (1 << 20)
	fmt.Printf("\nratios of medians: (b)/(a) total %.3f, StartContainer %.3f; (c)/(a) total %.3f, StartContainer %.3f; (d)/(a) total %.3f, StartContainer %.3f\n",
		r.ratio("plugin-unannotated", "total"), r.ratio("plugin-unannotated", "StartContainer"),
		r.ratio("plugin-injected", "total"), r.ratio("plugin-injected", "StartContainer"),
		r.ratio("noop-injected", "total"), r.ratio("noop-injected", "StartContainer"))
	start := func(v string) float64 { return r.median(v, "StartContainer") }
	fmt.Printf("StartContainer over (a): injected %+.1f ms, a no-op hook with the wrapper (d) %+.1f ms; (c) over (d) %+.1f ms\n",
		start("plugin-injected")-start("no-plugin"), start("noop-injected")-start("no-plugin"), start("plugin-injected")-start("noop-injected"))
	fmt.Printf("hook, its own wall time in the injected pods (status.json, %d): median %.2f ms, p90 %.2f ms; by phase (medians):",
		len(r.hookMS), quantile(r.hookMS, 0.5), quantile(r.hookMS, 0.9))
	for _, phase := range slices.Sorted(maps.Keys(r.hookPhases)) {
		fmt.Printf(" %s %.2f", phase, quantile(r.hookPhases[phase], 0.5))
	}
	fmt.Println()
	fmt.Printf("hook as a process on a fresh overlay of the image (%d, alternating with its floor): median %.2f ms, p90 %.2f ms (its own time %.2f ms); floor, a Go program writing the same %d files (%d KiB): median %.2f ms, p90 %.2f ms\n",
		len(r.hookWall), quantile(ms(r.hookWall), 0.5), quantile(ms(r.hookWall), 0.9), quantile(r.hookOwn, 0.5),
		r.floorFiles, r.floorBytes>>10, quantile(ms(r.floorWall), 0.5), quantile(ms(r.floorWall), 0.9))
	fmt.Printf("wrapper: %.0f of %.0f injected containers started with it (the first each of %d plugin processes injected, which learn anew); where it is, added to an exec (%d batches): median %.2f ms, p90 %.2f ms\n",
		r.injections-r.wrapperless, r.injections, r.plugins, len(wrapped), quantile(wrapped, 0.5), quantile(wrapped, 0.9))
	fmt.Printf("cainjekt-hook starting and exiting (version), over /bin/true: median %.2f ms\n", quantile(started, 0.5))
	fmt.Printf("plugin after %d injected containers came and went: RSS %.1f -> %.1f MiB (anonymous %.1f -> %.1f, the binary's file pages %.1f -> %.1f), open fds %.0f -> %.0f, goroutines %.0f -> %.0f, injected containers tracked %.0f; staging directories left: %d\n",
		*churn, r.before["process_resident_memory_bytes"]/(1<<20), rss,
		r.before["RssAnon"]/(1<<20), r.after["RssAnon"]/(1<<20), r.before["RssFile"]/(1<<20), r.after["RssFile"]/(1<<20),
		r.before["process_open_fds"], r.after["process_open_fds"],
		r.before["go_goroutines"], r.after["go_goroutines"], r.after["cainjekt_active_containers"], r.stagingLeft)
	var sizes []string
	for _, name := range slices.Sorted(maps.Keys(r.binSizes)) {
		sizes = append(sizes, fmt.Sprintf("%s %.1f MiB", name, float64(r.binSizes[name])/(1<<20)))
	}
	fmt.Printf("stripped static binaries: %s\n\nbudget:\n", strings.Join(sizes, ", "))
	r.budget(wrapped, rss)
}

// budget prints each line of the budget with its verdict.
// hookOverFloor bounds the hook process against its floor, a Go program
// that starts and writes the same files: what the hook does beyond that
// (the OCI state and config, the image's os-release and trust files read,
// the searches, parsing and merging, its report) may take at most half as
// long again.
const hookOverFloor = 1.5

// podOverNoop bounds an injected pod's start against one whose hook does
// nothing (d), which mounts the staging and the wrapper and runs a hook
// process all the same: the hook's work may add at most 5%.
const podOverNoop = 1.05

func (r *report) budget(wrapped []float64, rss float64) {
	verdict := func(name string, ok bool, got string) {
		mark := "ok  "
		if !ok {
			mark = "MISS"
		}
		fmt.Printf("  %s %-60s %s\n", mark, name, got)
	}
	b := r.ratio("plugin-unannotated", "total")
	c := r.median("plugin-injected", "total") / r.median("noop-injected", "total")
	startOverNoop := r.median("plugin-injected", "StartContainer") - r.median("noop-injected", "StartContainer")
	hook, floor := quantile(ms(r.hookWall), 0.5), quantile(ms(r.floorWall), 0.5)
	needless := r.injections - r.wrapperless - float64(r.plugins)
	verdict("(b)/(a) total pod start <= 1.02", b <= 1.02, fmt.Sprintf("%.3f", b))
	verdict(fmt.Sprintf("(c)/(d) total pod start <= %.2f", podOverNoop), c <= podOverNoop, fmt.Sprintf("%.3f; StartContainer (c)-(d) %+.1f ms", c, startOverNoop))
	verdict(fmt.Sprintf("hook process <= %.1f x its floor", hookOverFloor), hook <= floor*hookOverFloor, fmt.Sprintf("%.2f ms, floor %.2f ms", hook, floor))
	verdict("wrapper <= 1 ms, or gone where not needed", quantile(wrapped, 0.5) <= 1 || needless <= 0,
		fmt.Sprintf("%.2f ms; in %.0f containers that did not need it", quantile(wrapped, 0.5), max(needless, 0)))
	verdict("plugin RSS <= 14 MiB after the churn", rss <= 14, fmt.Sprintf("%.1f MiB", rss))
	verdict("no growth in open fds", r.after["process_open_fds"] <= r.before["process_open_fds"], fmt.Sprintf("%.0f -> %.0f", r.before["process_open_fds"], r.after["process_open_fds"]))
	verdict("no growth in goroutines", r.after["go_goroutines"] <= r.before["go_goroutines"], fmt.Sprintf("%.0f -> %.0f", r.before["go_goroutines"], r.after["go_goroutines"]))
	verdict("zero staging directories after the churn", r.stagingLeft == 0 && r.after["cainjekt_active_containers"] == 0, fmt.Sprintf("%d", r.stagingLeft))
	for _, b := range []struct {
		name  string
		limit float64
	}{{filepath.Base(*bin), 10}, {"cainjekt-hook", 8}} {
		name, limit := b.name, b.limit
		size := float64(r.binSizes[name]) / (1 << 20)
		verdict(fmt.Sprintf("stripped binary <= %.1f MiB: %s", limit, name), size <= limit, fmt.Sprintf("%.1f MiB", size))
	}
}

func kernel() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "linux"
	}
	return "Linux " + strings.TrimSpace(string(data))
}
