//go:build !hookonly

package main

// Operating commands: install the binary on the node, check a node's
// set-up, and dry-run the hook on a directory.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"golang.org/x/sys/unix"
)

// runInstall is `cainjekt install --dest PATH`: it copies the hook binary
// (cainjekt-hook beside this executable, else this executable; --src to
// choose) to the host path runc runs the hook and mounts the wrapper from.
// The copy is written beside the destination and renamed over it, so a hook
// starting meanwhile runs the old binary or the new one, never half of one;
// a destination already identical is left alone.
func runInstall(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cainjekt install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dest := fs.String("dest", "", "host path of the installed binary, e.g. /opt/cainjekt/bin/cainjekt-hook")
	src := fs.String("src", "", "binary to install (default: cainjekt-hook beside this executable, else this executable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := absPath(*dest); err != nil {
		fmt.Fprintf(stderr, "cainjekt install: --dest: %v\n", err)
		return 2
	}
	var err error
	if *src == "" {
		*src, err = defaultHookBinary()
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

// runDoctor is `cainjekt doctor [plugin flags]`: with the plugin's own
// configuration, it checks what a node needs for injection to work. It
// exits 0 if every check passes, 1 otherwise.
func runDoctor(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "cainjekt doctor: %v\n", err)
		return 2
	}
	healthy := true
	for _, c := range doctorChecks(cfg) {
		mark := "ok  "
		if !c.ok {
			mark, healthy = "FAIL", false
		}
		fmt.Fprintf(stdout, "%s %s: %s\n", mark, c.name, c.detail)
	}
	if !healthy {
		return 1
	}
	return 0
}

func doctorChecks(cfg *config) []check {
	var checks []check
	checks = append(checks, checkBundles(cfg)...)
	checks = append(checks, checkStaging(cfg), checkHostBinary(cfg), checkNRI(cfg))
	return checks
}

// checkBundles loads every CA bundle as the plugin would.
func checkBundles(cfg *config) []check {
	b := newBundleSet(cfg, newLogger(io.Discard, "text", 0))
	b.refresh()
	var checks []check
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
			checks = append(checks, check{name, true, "warning: " + f.String()})
		}
	}
	return checks
}

// checkStaging makes sure the dynamic CA root can be written, and says
// whether a plugin holds the node's lock.
func checkStaging(cfg *config) check {
	name := "dynamic CA root " + cfg.dynamicCARoot
	st, err := openStager(cfg.dynamicCARoot)
	if err != nil {
		return check{name, false, err.Error()}
	}
	defer st.Close()
	probe := fmt.Sprintf(".doctor-%d", os.Getpid())
	if _, err := st.dir.writeFile(probe, []byte("probe\n"), 0o600); err != nil {
		return check{name, false, "not writable: " + err.Error()}
	}
	unix.Unlinkat(st.dir.fd, probe, 0)
	held, err := st.lockHeld()
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

// checkNRI registers briefly under another name (two plugins with one
// name would conflict) and reports the runtime.
func checkNRI(cfg *config) check {
	name := "NRI socket " + cfg.socket
	d := &doctorPlugin{runtime: make(chan runtimeInfo, 1), containers: make(chan []*api.Container, 1)}
	s, err := stub.New(d, stub.WithPluginName(cfg.name+"-doctor"), stub.WithPluginIdx("99"),
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

// runInspect is `cainjekt inspect [--ca-file F] [--env K=V]... ROOTFS`: the
// hook's work on a directory, without writing anything: the distribution,
// the trust files found, and what the hook would change.
func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cainjekt inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caFile := fs.String("ca-file", "", "CA bundle whose injection to simulate (default: none, only detection)")
	var env envFlag
	fs.Var(&env, "env", "the container's environment, KEY=VALUE, repeatable (default: a standard PATH)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: cainjekt inspect [--ca-file FILE] [--env KEY=VALUE]... ROOTFS")
		return 2
	}
	if len(env) == 0 {
		env = envFlag{hookPATH}
	}
	var set *trustSet
	if *caFile != "" {
		var err error
		if set, _, err = loadTrustSet(*caFile, "", time.Now()); err != nil {
			fmt.Fprintf(stderr, "cainjekt inspect: %v\n", err)
			return 1
		}
	}
	root, err := openImageRoot(unix.AT_FDCWD, filepath.Clean(fs.Arg(0)))
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

// runLint is `cainjekt lint FILE`: it loads the bundle as the plugin would
// and prints what it finds. The exit code is 1 if the bundle is unusable, 0
// otherwise; --strict makes any finding an error (exit 3).
func runLint(args []string, stdout, stderr io.Writer) int {
	strict := len(args) > 0 && args[0] == "--strict"
	if strict {
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: cainjekt lint [--strict] FILE")
		return 2
	}
	data, err := readHostFile(args[0])
	var b *caBundle
	var findings []finding
	if err == nil {
		b, findings, err = parseCABundle(data)
	}
	for _, f := range findings {
		fmt.Fprintf(stdout, "%s: %s: %s\n", args[0], f.kind, f)
	}
	if err != nil {
		fmt.Fprintf(stdout, "%s: unusable (%s): %v\n", args[0], reasonOf(err), err)
		return 1
	}
	lint := lintCertificates(b, time.Now())
	for _, f := range lint {
		fmt.Fprintf(stdout, "%s: %s: %s\n", args[0], f.kind, f)
	}
	for _, c := range b.certs {
		subject, notAfter := about(c)
		fmt.Fprintf(stdout, "%s: certificate %s, expires %s\n", args[0], subject, notAfter.UTC().Format(time.RFC3339))
	}
	if strict && len(findings)+len(lint) > 0 {
		return 3
	}
	return 0
}
