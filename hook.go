package main

// The OCI createRuntime hook.
//
// runc runs it on the host, in the host's mount namespace, after the rootfs
// is mounted and before the container process starts, with the container's
// OCI state on stdin. The rootfs is writable from here even when the
// container's is read-only (read-only is applied in the container's own mount
// namespace), so a read-only container gets its OS trust store too.
//
// A hook that exits non-zero or outlives its timeout fails the container, so
// fail-open lives here: every read is bounded, a watchdog gives up well
// before the runtime's timeout, and under fail-open every failure ends in
// exit 0 with the container started as the plugin staged it.

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

const (
	maxStateSize  = 1 << 20 // the OCI state runc writes is a few KiB
	maxConfigSize = 4 << 20 // config.json of a container with a large environment
)

// The fail policies: what a failed injection does to the container.
const (
	failOpen   = "fail-open"   // it starts without injection
	failClosed = "fail-closed" // it does not start
)

// hookOptions are the hook's arguments, which the plugin writes into the
// container's OCI spec.
type hookOptions struct {
	dynamicCARoot string
	failPolicy    string
	processors    []string
	bundle        string // the CA bundle's name, for status.json
	// The container's names, for status.json and the log: the plugin's,
	// as each runtime annotates containers its own way.
	namespace, pod, container string
	timeout                   time.Duration
	logLevel                  slog.Level
}

const hookUsage = "usage: cainjekt hook [FLAGS] < OCI-STATE: the OCI createRuntime hook, run by the container runtime on the host\n\nflags:"

// parseHookArgs reads the hook's flags; -h prints them on stdout and is
// flag.ErrHelp.
func parseHookArgs(args []string, stdout io.Writer) (hookOptions, error) {
	fs := flag.NewFlagSet("cainjekt hook", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // runHook reports a bad flag, once
	root := fs.String("dynamic-ca-root", "", "host directory of per-container staging")
	policy := fs.String("fail-policy", failOpen, "fail-open or fail-closed")
	processors := fs.String("processors", "", "comma-separated enabled processors")
	bundle := fs.String("bundle", "", "the CA bundle's name")
	namespace := fs.String("namespace", "", "the pod's namespace")
	pod := fs.String("pod", "", "the pod's name")
	container := fs.String("container", "", "the container's name")
	timeout := fs.Int("timeout", 5, "the runtime's timeout for this hook, in seconds")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	fs.String("image", "", "ignored: plugins of the versions with an image cache pass it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, hookUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		// A flag of a newer plugin stops parsing; the fail policy, which
		// hookArgs writes first, is known by then.
		return hookOptions{failPolicy: *policy}, err
	}
	o := hookOptions{
		dynamicCARoot: *root,
		failPolicy:    *policy,
		processors:    splitList(*processors),
		bundle:        *bundle,
		namespace:     printable(*namespace, 253),
		pod:           printable(*pod, 253),
		container:     printable(*container, 253),
		timeout:       time.Duration(*timeout) * time.Second,
		logLevel:      parseLevel(*level),
	}
	var errs []error
	if !path.IsAbs(o.dynamicCARoot) {
		errs = append(errs, fmt.Errorf("--dynamic-ca-root %q is not an absolute path", o.dynamicCARoot))
	}
	if o.failPolicy != failOpen && o.failPolicy != failClosed {
		errs = append(errs, fmt.Errorf("--fail-policy %q is neither %s nor %s", o.failPolicy, failOpen, failClosed))
	}
	if o.timeout <= 0 {
		errs = append(errs, errors.New("--timeout must be positive"))
	}
	return o, errors.Join(errs...)
}

// hookBudget is how long the hook works before giving up: well inside the
// runtime's timeout, leaving time to report and exit.
func hookBudget(timeout time.Duration) time.Duration {
	return max(timeout*7/10, 500*time.Millisecond)
}

// lazyGC turns the garbage collector off for a short-lived process until
// its heap reaches 64 MiB: the hook and the wrapper finish long before a
// collection would free anything, and a hostile image still cannot make
// them grow without bound.
func lazyGC() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(64 << 20)
}

// runHook is `cainjekt hook`. It returns the process exit code.
func runHook(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	start := time.Now()
	lazyGC()
	opts, err := parseHookArgs(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		// Only a plugin of another version writes arguments we cannot read.
		fmt.Fprintf(stderr, "cainjekt hook: %v\n", err)
		if opts.failPolicy == failOpen {
			return 0
		}
		return 1
	}
	h := newHook(opts, start, newLogger(stderr, "json", opts.logLevel).With("component", "hook"))
	watchdog := time.AfterFunc(hookBudget(opts.timeout), func() {
		os.Exit(h.finish(hookResultTimeout, fmt.Errorf("gave up after %s, inside the runtime's %s hook timeout", hookBudget(opts.timeout), opts.timeout)))
	})
	defer watchdog.Stop()
	err = h.runRecovered(stdin)
	result := hookResultOK
	if err != nil {
		result = hookResultFailed
	}
	return h.finish(result, err)
}

// hook is one run of the hook.
type hook struct {
	opts  hookOptions
	start time.Time
	log   *slog.Logger

	// mu guards what finish reads against the watchdog. It is only ever
	// held for bounded work: the status is bounded, and frozen once
	// reporting starts, so the report is written without it.
	mu        sync.Mutex
	reporting bool          // finish began: the status is frozen
	reported  chan struct{} // closed once the report is written
	code      int           // the exit code, once reporting
	status    hookStatus
	staging   *safeDir  // the container's staging directory, once known
	lapped    time.Time // the end of the last timed phase
}

func newHook(opts hookOptions, start time.Time, log *slog.Logger) *hook {
	return &hook{opts: opts, start: start, log: log, reported: make(chan struct{}),
		status: hookStatus{Version: statusVersion, Processors: opts.processors, Bundle: opts.bundle,
			Namespace: opts.namespace, Pod: opts.pod, Container: opts.container}}
}

// lap records how long the phase that ends now took.
func (h *hook) lap(phase string) {
	now := time.Now()
	h.note(func(s *hookStatus) {
		if s.TimingsMS == nil {
			s.TimingsMS = map[string]float64{}
		}
		s.TimingsMS[phase] = float64(now.Sub(cmp.Or(h.lapped, h.start)).Microseconds()) / 1000
	})
	h.lapped = now
}

// runRecovered is run with a panic turned into the failure it is: the fail
// policy decides what a bug of the hook does to the container, as for any
// other failure, where an uncaught panic would exit 2 and fail it always.
func (h *hook) runRecovered(stdin io.Reader) (err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			h.log.Error("hook panicked", "panic", clip(fmt.Sprint(r)), "stack", string(stack[:min(len(stack), 4<<10)]))
			err = fmt.Errorf("internal error: %s", clip(fmt.Sprint(r)))
		}
	}()
	return h.run(stdin)
}

// run does the work; the error is what made the injection fail.
func (h *hook) run(stdin io.Reader) error {
	state, err := readState(stdin)
	if err != nil {
		return err
	}
	h.note(func(s *hookStatus) { s.ContainerID = state.ID })
	staging, err := openStaging(h.opts.dynamicCARoot, state.ID)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.staging = staging
	h.mu.Unlock()

	ours, prefill, err := readStaged(staging)
	if err != nil {
		return err
	}
	h.note(func(s *hookStatus) { s.CABundle = ours.sha256() })
	h.lap("start")

	root, spec, err := openContainerRoot(state.Bundle)
	if err != nil {
		return err
	}
	defer root.Close()
	h.lap("rootfs")
	in := newInjection(root, staging, h.opts.processors, spec.env, ours, prefill)
	in.mounts = bindMounts(root, spec.mounts)
	return h.inject(in)
}

// errIncomplete says that a phase of the injection failed; what failed is
// in the status already.
var errIncomplete = errors.New("injection incomplete")

// inject does the injection, phase by phase, and records in the status
// what each found, did and failed at, and how long it took.
func (h *hook) inject(in *injection) error {
	failed := false
	record := func(where string, err error) {
		if err != nil {
			failed = true
			h.note(func(s *hookStatus) { s.addError(where, err) })
		}
	}
	rel, fam, err := detectDistro(in.root)
	h.note(func(s *hookStatus) { s.OSRelease, s.Family = rel, fam.name })
	record("os-release", err)
	h.lap("detect")
	changes, imageCerts, err := in.osStore(fam, in.enabled(fam.processor()))
	h.note(func(s *hookStatus) { s.ImageCerts = imageCerts; s.addFiles(changes) })
	record("OS trust store ("+fam.processor()+")", err)
	h.lap("os_store")
	lang, err := in.injectLanguages()
	h.note(func(s *hookStatus) {
		s.addFiles(lang.changes)
		s.Wrapper.Env, s.Wrapper.Append = lang.env, lang.appendEnv
		s.Mounted = in.sawMount
	})
	record("language runtimes", err)
	h.lap("languages")
	if failed {
		return errIncomplete
	}
	return nil
}

// note updates the status under the lock the watchdog takes too; once
// reporting began, the status is frozen and the update dropped.
func (h *hook) note(f func(*hookStatus)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.reporting {
		f(&h.status)
	}
}

// finish records the outcome once, from the main path or the watchdog, and
// returns the exit code the fail policy asks for. The second caller waits
// for the first one's report, but never past the runtime's timeout: the
// watchdog always ends the process in time.
func (h *hook) finish(result string, err error) int {
	h.mu.Lock()
	if h.reporting {
		h.mu.Unlock()
		select {
		case <-h.reported:
		case <-time.After(h.opts.timeout*9/10 - time.Since(h.start)):
		}
		return h.code // set before reporting began, never changed after
	}
	h.reporting = true
	h.code = 0
	if err != nil && h.opts.failPolicy == failClosed {
		h.code = 1
	}
	s := &h.status
	s.Result = result
	if err != errIncomplete {
		s.addError("", err)
	}
	s.Finished = time.Now().UTC()
	s.DurationMS = float64(time.Since(h.start).Microseconds()) / 1000
	staging := h.staging
	h.mu.Unlock()

	writeReport(staging, s, h.log)
	attrs := []any{"container_id", s.ContainerID, "namespace", s.Namespace, "pod", s.Pod, "container", s.Container,
		"result", result, "family", s.Family, "duration_ms", s.DurationMS}
	if err == nil {
		h.log.Info("injected", attrs...)
	} else {
		h.log.Error("injection failed", append(attrs, "errors", s.Errors, "errors_omitted", s.ErrorsOmitted, "fail_policy", h.opts.failPolicy)...)
	}
	close(h.reported)
	return h.code
}

// writeReport writes status.json into the staging directory, if the hook
// got as far as finding it, with the wrapper's part.
func writeReport(staging *safeDir, s *hookStatus, log *slog.Logger) {
	w := &s.Wrapper
	w.Injected = s.Result == hookResultOK
	if !w.Injected {
		// The first error, for the container's log; all of them are in status.json.
		first := ""
		if len(s.Errors) > 0 {
			first = ": " + s.Errors[0]
		}
		w.Message = fmt.Sprintf("cainjekt: CA injection %s%s; see %s", s.Result, first, containerStatus)
	}
	if staging == nil {
		return
	}
	data, err := s.marshal()
	if err == nil {
		_, err = staging.writeFile(stagedStatus, data, 0o644)
	}
	if err != nil {
		log.Error("write status", "file", stagedStatus, "error", err)
	}
}

// ociState is what the hook reads of the OCI state (runtime-spec's
// State): the rest is of no use to it, and decoding only these fields
// spares the hook a package to load at every container start.
type ociState struct {
	ID     string `json:"id"`
	Bundle string `json:"bundle"`
}

// readState reads the OCI state runc writes on stdin.
func readState(r io.Reader) (*ociState, error) {
	data, err := readAtMost(r, maxStateSize)
	if err != nil {
		return nil, fmt.Errorf("read OCI state: %w", err)
	}
	var st ociState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("parse OCI state: %w", err)
	}
	if !validContainerID(st.ID) {
		return nil, fmt.Errorf("OCI state: container ID %q is not 64 hex digits", st.ID)
	}
	if !path.IsAbs(st.Bundle) {
		return nil, fmt.Errorf("OCI state: bundle %q is not an absolute path", st.Bundle)
	}
	return &st, nil
}

// openContainerRoot opens the rootfs named by the bundle's config.json, and
// returns what the injection needs of the spec too. What the hook creates
// in the rootfs belongs to the container's root user, as the host sees it:
// under a user namespace, that is not the host's root, whom the container
// sees as nobody and whose files its root cannot change. The runtime shifts
// the rootfs's owners by the namespace's mapping (containerd mounts the
// image's layers idmapped, or chowns them), so the host sees every file's
// owner mapped as config.json says.
func openContainerRoot(bundle string) (*safeDir, *containerSpec, error) {
	dir, err := openSafeDir(unix.AT_FDCWD, bundle, 0, unix.RESOLVE_BENEATH|unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return nil, nil, fmt.Errorf("OCI bundle: %w", err)
	}
	defer dir.Close()
	data, _, err := dir.readFile("config.json", maxConfigSize)
	if err != nil {
		return nil, nil, fmt.Errorf("OCI bundle: %w", err)
	}
	spec, err := parseSpec(data)
	if err != nil {
		return nil, nil, err
	}
	root, err := openImageRoot(dir.fd, spec.rootPath)
	if err != nil {
		return nil, nil, fmt.Errorf("container rootfs: %w", err)
	}
	if err := refuseHostRoot(root); err != nil {
		root.Close()
		return nil, nil, err
	}
	uid, uidOK := spec.uids.toHost(0)
	gid, gidOK := spec.gids.toHost(0)
	if uidOK && gidOK {
		root.owner = fileOwner{uid, gid} // else the container has no root: the host's is as good
	}
	return root, spec, nil
}

// containerSpec is what the hook reads of config.json.
type containerSpec struct {
	rootPath string
	env      []string // the environment of the container's process
	// The user namespace's mappings of users and groups.
	uids, gids idMap
	mounts     []specMount
}

// specMount is a mount of config.json: what the container sees at
// Destination instead of the image's files.
type specMount struct {
	Destination string   `json:"destination"`
	Source      string   `json:"source"`
	Type        string   `json:"type"`
	Options     []string `json:"options"`
}

// parseSpec reads what the hook needs of config.json, decoding only those
// fields: the whole OCI spec takes a millisecond.
func parseSpec(data []byte) (*containerSpec, error) {
	var spec struct {
		Root *struct {
			Path string `json:"path"`
		} `json:"root"`
		Process *struct {
			Env []string `json:"env"`
		} `json:"process"`
		Linux *struct {
			UIDMappings idMap `json:"uidMappings"`
			GIDMappings idMap `json:"gidMappings"`
		} `json:"linux"`
		Mounts []specMount `json:"mounts"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("parse config.json: %w", err)
	}
	if spec.Root == nil || spec.Root.Path == "" || strings.ContainsRune(spec.Root.Path, 0) {
		return nil, errors.New("config.json has no usable root.path")
	}
	s := &containerSpec{rootPath: spec.Root.Path, mounts: spec.Mounts}
	if spec.Process != nil {
		s.env = spec.Process.Env
	}
	if spec.Linux != nil {
		s.uids, s.gids = spec.Linux.UIDMappings, spec.Linux.GIDMappings
	}
	return s, nil
}

// idMap is a user namespace's mapping of user or group IDs, as the OCI
// spec gives it; empty: no user namespace, every ID its own.
type idMap []struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

// toHost is the host's ID for id as the container sees it; false if the
// namespace maps it nowhere. No mapping: every ID is its own.
func (m idMap) toHost(id int) (int, bool) {
	if len(m) == 0 {
		return id, true
	}
	for _, r := range m {
		if off := int64(id) - int64(r.ContainerID); off >= 0 && off < int64(r.Size) {
			return int(int64(r.HostID) + off), true
		}
	}
	return -1, false
}

// refuseHostRoot makes sure a rootfs is not the host's own root directory:
// writing the host's trust store is never what a container asked for.
func refuseHostRoot(root *safeDir) error {
	var rootfs, host unix.Stat_t
	if err := unix.Fstat(root.fd, &rootfs); err != nil {
		return fmt.Errorf("stat rootfs: %w", err)
	}
	if err := unix.Stat("/", &host); err != nil {
		return fmt.Errorf("stat /: %w", err)
	}
	if rootfs.Dev == host.Dev && rootfs.Ino == host.Ino {
		return errors.New("the container's rootfs is the host's root directory: refusing")
	}
	return nil
}

func parseLevel(v string) slog.Level {
	var l slog.Level
	l.UnmarshalText([]byte(v)) // validated by oneOf; an invalid value leaves info
	return l
}

// newLogger returns the process logger. Logs go to stderr, where the
// container runtime and kubectl logs collect them.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// splitList splits a list (a setting or an annotation): items are
// separated by commas, semicolons or whitespace; blanks are dropped.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) })
}
