//go:build !hookonly

package main

// Operating commands: install the binary on the node, check a node's
// set-up, and dry-run the hook on a directory.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"golang.org/x/sys/unix"
)

const installUsage = `usage: cainjekt install [--src FILE] --dest PATH

Copies the hook binary to PATH, in a directory of the node that the pod mounts
(deploy/base/daemonset.yaml: the init container, with the hostPath volume
host-bin at /opt/cainjekt/bin). runc runs the hook from there, on the host,
and mounts it into injected containers as their wrapper, so FILE must be an
executable for this machine.

flags:`

// runInstall is `cainjekt install --dest PATH`: it copies the hook binary
// (cainjekt-hook beside this executable, else this executable; --src to
// choose) to the host path runc runs the hook and mounts the wrapper from.
// The copy is written beside the destination and renamed over it, so a hook
// starting meanwhile runs the old binary or the new one, never half of one;
// a destination already identical is left alone.
func runInstall(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cainjekt install", flag.ContinueOnError)
	dest := fs.String("dest", "", "host path of the installed binary, e.g. /opt/cainjekt/bin/cainjekt-hook")
	src := fs.String("src", "", "binary to install (default: cainjekt-hook beside this executable, else this executable)")
	args, err := parseFlags(fs, installUsage, args, stdout, stderr)
	if err != nil {
		return flagsExit(err)
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "cainjekt install: unexpected arguments %q: the source is --src FILE\n", args)
		return 2
	}
	if err := absPath(*dest); err != nil {
		fmt.Fprintf(stderr, "cainjekt install: --dest: %v\n", err)
		return 2
	}
	if *src == "" {
		*src, err = defaultHookBinary()
	}
	if err == nil {
		err = errors.Join(checkExecutable(*src), checkInstallDir(filepath.Dir(*dest)))
	}
	if err == nil {
		var changed bool
		if changed, err = installFile(*src, *dest); err == nil {
			if changed {
				fmt.Fprintf(stdout, "installed %s (cainjekt %s) at %s\n", filepath.Base(*src), version, *dest)
			} else {
				fmt.Fprintf(stdout, "%s is up to date (cainjekt %s)\n", *dest, version)
			}
			return 0
		}
	}
	fmt.Fprintf(stderr, "cainjekt install: %v\n", err)
	return 1
}

// checkExecutable makes sure p is an executable that this machine runs:
// an ELF executable of this executable's class, byte order and machine.
// A script or another architecture's binary would install fine and then
// fail every injected container.
func checkExecutable(p string) error {
	want, err := elfHeader("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("read this executable: %w", err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file (mode %v)", p, st.Mode())
	}
	got, err := elfHeader(p)
	if err != nil {
		return err
	}
	// e_ident's class (32 or 64 bits) and byte order, then e_type and
	// e_machine in that byte order.
	if got[4] != want[4] || got[5] != want[5] || got.machine() != want.machine() {
		return fmt.Errorf("%s is an executable for another machine (ELF class %d, byte order %d, machine %d), not for this %s one (%d, %d, %d)",
			p, got[4], got[5], got.machine(), runtime.GOARCH, want[4], want[5], want.machine())
	}
	if t := got.order().Uint16(got[16:]); t != elfExec && t != elfDyn {
		return fmt.Errorf("%s is an ELF file, but not an executable (type %d)", p, t)
	}
	return nil
}

// ELF types of executables: fixed address, and position-independent.
const elfExec, elfDyn = 2, 3

// elfIdent is the start of an ELF file's header.
type elfIdent [20]byte

func (h elfIdent) order() binary.ByteOrder {
	if h[5] == 2 { // ELFDATA2MSB
		return binary.BigEndian
	}
	return binary.LittleEndian
}

func (h elfIdent) machine() uint16 { return h.order().Uint16(h[18:]) }

func elfHeader(p string) (elfIdent, error) {
	var h elfIdent
	f, err := os.Open(p)
	if err != nil {
		return h, err
	}
	defer f.Close()
	if _, err := io.ReadFull(f, h[:]); err != nil || string(h[:4]) != "\x7fELF" {
		return h, fmt.Errorf("%s is not an ELF executable (a script, or a file of another kind?)", p)
	}
	return h, nil
}

// checkInstallDir says what to do when the destination's directory is not
// there: in the pod, it is the node's directory, mounted by the DaemonSet.
func checkInstallDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("directory %s does not exist: it must be the node's directory, mounted into this container "+
			"(deploy/base/daemonset.yaml mounts the hostPath volume host-bin there, type DirectoryOrCreate)", dir)
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// installFile copies src to dest atomically, unless dest has its content.
func installFile(src, dest string) (bool, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, err
	}
	if old, err := os.ReadFile(dest); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	dir := filepath.Dir(dest)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dest)+".new-*")
	if err != nil {
		return false, fmt.Errorf("install into %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return false, fmt.Errorf("install %s: %w", dest, err)
	}
	return true, nil
}

// check is one line of `cainjekt doctor`.
type check struct {
	name   string
	ok     bool
	detail string
}

const doctorUsage = `usage: cainjekt doctor [FLAGS]

Checks, with the plugin's configuration (run it in the plugin's pod), what
this node needs for injection: each CA bundle, the dynamic CA root and the
node's lock, the host binary, and the runtime over NRI. It changes nothing
on the node; to read the runtime's version and containers, it registers
with it over NRI for a moment, under a name of its own. Exit 0 if every
check passes, 1 otherwise, 2 on a usage error.

flags, as cainjekt plugin's:`

// doctorIdx is the NRI index the doctor registers at.
const doctorIdx = "99"

// runDoctor is `cainjekt doctor [plugin flags]`: with the plugin's own
// configuration, it checks what a node needs for injection to work. It
// exits 0 if every check passes, 1 otherwise.
func runDoctor(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := pluginConfig("cainjekt doctor", doctorUsage, args, getenv, stdout, stderr)
	if err != nil {
		return flagsExit(err)
	}
	healthy := true
	report := func(checks ...check) {
		for _, c := range checks {
			mark := "ok  "
			if !c.ok {
				mark, healthy = "FAIL", false
			}
			fmt.Fprintf(stdout, "%s %s: %s\n", mark, c.name, c.detail)
		}
	}
	report(checkVariables(os.Environ())...)
	report(checkBundles(cfg)...)
	report(checkStaging(cfg), checkHostBinary(cfg))
	fmt.Fprintf(stdout, "registering with the runtime over NRI for a moment, as plugin %q at index %s, to read its version and containers\n",
		doctorName(cfg), doctorIdx)
	report(checkNRI(cfg))
	if !healthy {
		return 1
	}
	return 0
}

// checkVariables warns of each CAINJEKT_* variable no setting reads, as
// the plugin's log does.
func checkVariables(environ []string) []check {
	var checks []check
	for _, v := range unknownVariables(environ) {
		checks = append(checks, check{"variable " + v.name, true, "warning: " + v.advice()})
	}
	return checks
}

// checkBundles loads every CA bundle as the plugin would.
func checkBundles(cfg *config) []check {
	b := newBundleSet(cfg, newLogger(io.Discard, "text", 0))
	b.refresh()
	var checks []check
	ignored := b.ignoredFiles()
	for _, file := range slices.Sorted(maps.Keys(ignored)) {
		checks = append(checks, check{"CA bundles directory " + cfg.bundlesDir, true,
			fmt.Sprintf("warning: %s is ignored: %s", file, ignored[file])})
	}
	for _, src := range b.sources() {
		name := "CA bundle " + src.name
		set, err := src.get()
		if err != nil {
			checks = append(checks, check{name, false, err.Error()})
			continue
		}
		for _, c := range set.ours.certs {
			subject, notAfter := about(c)
			checks = append(checks, check{name, time.Now().Before(notAfter),
				fmt.Sprintf("%s, expires %s", subject, notAfter.UTC().Format(time.RFC3339))})
		}
		for _, f := range src.lastFindings() {
			checks = append(checks, check{name, f.severity() != severityError, f.severity() + ": " + f.String()})
		}
	}
	return checks
}

// checkStaging says whether the dynamic CA root is there for the plugin
// and whether a plugin holds the node's lock. It only looks: a missing
// directory is a finding, not something to create.
func checkStaging(cfg *config) check {
	name := "dynamic CA root " + cfg.dynamicCARoot
	var st unix.Stat_t
	err := unix.Lstat(cfg.dynamicCARoot, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return check{name, false, "missing: the plugin creates it when it starts, so none has run on this node with this setting since the node booted"}
	case err != nil:
		return check{name, false, err.Error()}
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return check{name, false, "not a directory"}
	case int(st.Uid) != os.Geteuid():
		return check{name, false, fmt.Sprintf("belongs to uid %d, not to this one (%d): the plugin refuses it", st.Uid, os.Geteuid())}
	}
	if err := unix.Faccessat(unix.AT_FDCWD, cfg.dynamicCARoot, unix.W_OK, unix.AT_EACCESS); err != nil {
		return check{name, false, "not writable: " + err.Error()}
	}
	held, err := lockHeld(cfg.dynamicCARoot)
	switch {
	case err != nil:
		return check{name, false, err.Error()}
	case !held:
		return check{name, false, "writable, but no cainjekt plugin runs on this node (its lock is free): containers are not injected"}
	}
	return check{name, true, "writable; a cainjekt plugin holds the node's lock"}
}

// checkHostBinary compares the binary runc will run with the one this
// binary would install.
func checkHostBinary(cfg *config) check {
	name := "host binary"
	if err := cfg.resolveHostBinary(); err != nil {
		return check{name, false, err.Error()}
	}
	exe, err := defaultHookBinary()
	if err != nil {
		return check{name, false, err.Error()}
	}
	a, errA := fileSum(cfg.hostBinary)
	b, errB := fileSum(exe)
	if err := errors.Join(errA, errB); err != nil {
		return check{name, false, err.Error()}
	}
	if a != b {
		return check{name, false, fmt.Sprintf("%s differs from %s (cainjekt %s): an upgrade did not install it", cfg.hostBinary, exe, version)}
	}
	return check{name, true, fmt.Sprintf("%s is %s (cainjekt %s)", cfg.hostBinary, exe, version)}
}

func fileSum(p string) ([sha256.Size]byte, error) {
	data, err := os.ReadFile(p)
	return sha256.Sum256(data), err
}

// doctorPlugin registers with the runtime to learn what it is and offers.
type doctorPlugin struct {
	stub       stub.Stub
	runtime    chan runtimeInfo
	containers chan []*api.Container
}

func (d *doctorPlugin) Configure(_ context.Context, _, runtime, version string) (api.EventMask, error) {
	d.runtime <- runtimeInfo{name: runtime, version: version, nriVersion: d.stub.RuntimeNRIVersion()}
	return 0, nil
}

func (d *doctorPlugin) Synchronize(_ context.Context, _ []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	d.containers <- ctrs
	return nil, nil
}

// RemoveContainer is there because a stub needs one event handler; the
// doctor is gone before it matters.
func (d *doctorPlugin) RemoveContainer(context.Context, *api.PodSandbox, *api.Container) error {
	return nil
}

// doctorName is the doctor's NRI plugin name: two plugins with one name
// would conflict.
func doctorName(cfg *config) string { return cfg.name + "-doctor" }

// checkNRI registers briefly under another name (two plugins with one
// name would conflict) and reports the runtime.
func checkNRI(cfg *config) check {
	name := "NRI socket " + cfg.socket
	d := &doctorPlugin{runtime: make(chan runtimeInfo, 1), containers: make(chan []*api.Container, 1)}
	s, err := stub.New(d, stub.WithPluginName(doctorName(cfg)), stub.WithPluginIdx(doctorIdx),
		stub.WithSocketPath(cfg.socket), stub.WithLogger(nriLogger{newLogger(io.Discard, "text", 0)}))
	if err != nil {
		return check{name, false, err.Error()}
	}
	d.stub = s
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	defer s.Stop()
	var runtime runtimeInfo
	select {
	case runtime = <-d.runtime:
	case err := <-runErr:
		return check{name, false, fmt.Sprintf("cannot register: %v", err)}
	case <-ctx.Done():
		return check{name, false, "no answer from the runtime within 5 s"}
	}
	select {
	case ctrs := <-d.containers:
		runtime.imageDigests = digestsOf(ctrs)
		return check{name, true, fmt.Sprintf("%s; %d containers", runtime, len(ctrs))}
	case <-ctx.Done():
		return check{name, true, runtime.String()}
	}
}

const inspectUsage = `usage: cainjekt inspect [--ca-file FILE] [--env KEY=VALUE]... ROOTFS

Runs the hook on the directory ROOTFS, an image's files, without writing
anything: it prints the distribution, the trust stores and runtimes found,
and, with --ca-file, what the hook would change. Exit 0, or 1 if the hook
would fail or ROOTFS or FILE cannot be used, 2 on a usage error.

flags:`

// runInspect is `cainjekt inspect [--ca-file F] [--env K=V]... ROOTFS`: the
// hook's work on a directory, without writing anything: the distribution,
// the trust files found, and what the hook would change.
func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cainjekt inspect", flag.ContinueOnError)
	caFile := fs.String("ca-file", "", "CA bundle whose injection to simulate (default: none, only detection)")
	var env envFlag
	fs.Var(&env, "env", "the container's environment, KEY=VALUE, repeatable (default: a standard PATH)")
	args, err := parseFlags(fs, inspectUsage, args, stdout, stderr)
	if err != nil {
		return flagsExit(err)
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: cainjekt inspect [--ca-file FILE] [--env KEY=VALUE]... ROOTFS")
		return 2
	}
	if len(env) == 0 {
		env = envFlag{hookPATH}
	}
	var set *trustSet
	if *caFile != "" {
		if set, _, err = loadTrustSet(*caFile, "", time.Now()); err != nil {
			fmt.Fprintf(stderr, "cainjekt inspect: %v\n", err)
			return 1
		}
	}
	root, err := openImageRoot(unix.AT_FDCWD, filepath.Clean(args[0]))
	if err != nil {
		fmt.Fprintf(stderr, "cainjekt inspect: %v\n", err)
		return 1
	}
	defer root.Close()
	in := newInjection(root, nil, processorNames, env, nil, nil)
	in.dryRun = true
	if set != nil {
		in.ours, in.prefill = set.ours, set.noTrust
	}
	fam := inspectDetection(in, stdout)
	if set == nil {
		return 0
	}
	return inspectChanges(in, fam, stdout)
}

// inspectDetection prints what the hook finds in the image: its
// distribution, its bundles and the trust files of each runtime.
func inspectDetection(in *injection, stdout io.Writer) distroFamily {
	rel, fam, detectErr := detectDistro(in.root)
	fmt.Fprintf(stdout, "distribution: %q (id %q, id_like %v), family %s (processor %s)\n", rel.PrettyName, rel.ID, rel.IDLike, fam.name, fam.processor())
	if detectErr != nil {
		fmt.Fprintf(stdout, "os-release: %v\n", detectErr)
	}
	for _, p := range uniqueFiles(in.root, bundleCandidates(fam)) {
		data, _, err := in.root.readFile(p, maxBundleSize)
		if err != nil {
			fmt.Fprintf(stdout, "trust store: %s: %v\n", p, err)
			continue
		}
		fmt.Fprintf(stdout, "trust store: %s: %d certificates\n", p, countCerts(data))
	}
	for _, rt := range runtimes {
		if rt.find == nil {
			continue
		}
		files, err := rt.find(in)
		for _, p := range files {
			fmt.Fprintf(stdout, "%s trust file: %s\n", rt.processor, p)
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s search: %v\n", rt.processor, err)
		}
	}
	return fam
}

// inspectChanges runs the hook's writers in a dry run and prints what they
// would change.
func inspectChanges(in *injection, fam distroFamily, stdout io.Writer) int {
	changes, _, osErr := in.osStore(fam, true)
	lang, langErr := in.injectLanguages()
	for _, c := range append(changes, lang.changes...) {
		line := fmt.Sprintf("would %s %s", verbOf(c.Action), c.Path)
		if c.Resolved != "" {
			line += " (" + c.Resolved + ")"
		}
		if c.Added > 0 {
			line += fmt.Sprintf(": +%d certificates", c.Added)
		}
		if c.Error != "" {
			line += ": " + c.Error
		}
		fmt.Fprintln(stdout, line)
	}
	for k, v := range lang.appendEnv {
		fmt.Fprintf(stdout, "would have the wrapper append to %s: %s\n", k, v)
	}
	if err := errors.Join(osErr, langErr); err != nil {
		fmt.Fprintf(stdout, "the hook would fail: %v\n", err)
		return 1
	}
	return 0
}

// verbOf renders a change's action for inspect.
func verbOf(action string) string {
	switch action {
	case actionMerged:
		return "merge into"
	case actionCreated:
		return "create"
	case actionAnchor:
		return "add anchor"
	case actionFallback:
		return "leave (unreadable; fallback store for the JVM)"
	case actionFailed:
		return "fail on"
	}
	return "leave " + action
}

// envFlag collects repeated --env KEY=VALUE flags.
type envFlag []string

func (e *envFlag) String() string { return fmt.Sprint(*e) }

func (e *envFlag) Set(v string) error {
	*e = append(*e, v)
	return nil
}

const lintUsage = `usage: cainjekt lint [--strict] FILE

Loads the CA bundle FILE as the plugin would and prints each certificate and
what it finds: errors, and warnings about what some runtime will not use as
expected.

exit codes:
  0  the bundle is usable: nothing found, or warnings only
  1  errors: the plugin cannot use the bundle (empty, not PEM, no usable
     certificate, too large), or it holds what must not be in a CA bundle
     (a private key, a certificate that is not a CA)
  2  a usage error, or FILE cannot be read
  3  warnings and no error, with --strict

flags:`

// runLint is `cainjekt lint FILE`: it loads the bundle as the plugin would
// and prints what it finds, with lintUsage's exit codes.
func runLint(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cainjekt lint", flag.ContinueOnError)
	strict := fs.Bool("strict", false, "exit 3 on warnings too")
	args, err := parseFlags(fs, lintUsage, args, stdout, stderr)
	if err != nil {
		return flagsExit(err)
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: cainjekt lint [--strict] FILE")
		return 2
	}
	file := args[0]
	data, err := readHostFile(file)
	if err != nil && reasonOf(err) == reasonUnreadable {
		fmt.Fprintf(stderr, "cainjekt lint: %v\n", err)
		return 2
	}
	var b *caBundle
	var findings []finding
	if err == nil {
		b, findings, err = parseCABundle(data)
	}
	if err == nil {
		findings = append(findings, lintCertificates(b, time.Now())...)
	}
	errs := 0
	for _, f := range findings {
		fmt.Fprintf(stdout, "%s: %s: %s: %s\n", file, f.severity(), f.kind, f)
		if f.severity() == severityError {
			errs++
		}
	}
	if err != nil {
		fmt.Fprintf(stdout, "%s: unusable (%s): %v\n", file, reasonOf(err), err)
		return 1
	}
	for _, c := range b.certs {
		subject, notAfter := about(c)
		fmt.Fprintf(stdout, "%s: certificate %s, expires %s\n", file, subject, notAfter.UTC().Format(time.RFC3339))
	}
	switch {
	case errs > 0:
		return 1
	case *strict && len(findings) > 0:
		return 3
	}
	return 0
}
