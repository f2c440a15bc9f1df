package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// hookBed is a container as runc presents it to the hook: an OCI bundle
// with config.json and a rootfs copied from a fixture, and the staging the
// plugin made.
type hookBed struct {
	bundle, rootfs, dynamicRoot, staging string
	ours                                 *caBundle
	prefill                              []byte
	id                                   string
	env                                  []string
	ids                                  []specs.LinuxIDMapping // its user namespace's, users and groups alike
	mounts                               []specs.Mount
}

// testStaging is a container's staging directory as the plugin leaves it:
// our CAs, and bundle.pem pre-filled with prefill.
func testStaging(t testing.TB, prefill []byte) *safeDir {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{stagedCA: string(corpBundle(t).pem), stagedBundle: string(prefill)})
	staging, err := openOwnDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { staging.Close() })
	return staging
}

func newHookBed(t testing.TB, fixture string, env ...string) *hookBed {
	t.Helper()
	b := &hookBed{ours: corpBundle(t), dynamicRoot: filepath.Join(t.TempDir(), "run", "containers"), id: testID, env: env}
	if err := os.MkdirAll(b.dynamicRoot, 0o700); err != nil {
		t.Fatal(err)
	}
	b.prefill = b.ours.pem
	b.create(t, filepath.Join("testdata/rootfs", fixture))
	return b
}

// create makes the bed's container: its bundle with a copy of the rootfs
// at src, and its staging.
func (b *hookBed) create(t testing.TB, src string) {
	t.Helper()
	b.bundle = t.TempDir()
	b.rootfs = filepath.Join(b.bundle, "rootfs")
	if err := os.Rename(copyTree(t, src), b.rootfs); err != nil {
		t.Fatal(err)
	}
	b.writeSpec(t)
	b.staging = filepath.Join(b.dynamicRoot, b.id)
	if err := os.Mkdir(b.staging, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, b.staging, map[string]string{stagedCA: string(b.ours.pem), stagedBundle: string(b.prefill)})
}

// writeSpec writes the bed's config.json.
func (b *hookBed) writeSpec(t testing.TB) {
	t.Helper()
	spec := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{Env: b.env}}
	if b.ids != nil {
		spec.Linux = &specs.Linux{UIDMappings: b.ids, GIDMappings: b.ids}
	}
	spec.Mounts = b.mounts
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(b.bundle, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// inUserNS makes the bed's container one of a pod with a user namespace of
// its own, as containerd makes it: IDs 0-65535 mapped from base up, every
// owner in the rootfs shifted by base.
func (b *hookBed) inUserNS(t testing.TB, base uint32) {
	t.Helper()
	b.ids = []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: 1 << 16}}
	b.writeSpec(t)
	err := filepath.WalkDir(b.rootfs, func(p string, _ os.DirEntry, err error) error {
		var st syscall.Stat_t
		if err == nil {
			err = syscall.Lstat(p, &st)
		}
		if err == nil {
			err = os.Lchown(p, int(st.Uid+base), int(st.Gid+base))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sibling is another container of the bed's image, on the same node, as
// its rootfs is now: call it before the hook runs on the bed.
func (b *hookBed) sibling(t testing.TB, id string, env ...string) *hookBed {
	t.Helper()
	s := *b
	s.id, s.env = id, append(slices.Clone(b.env), env...)
	s.create(t, b.rootfs)
	return &s
}

func (b *hookBed) state() []byte {
	st, _ := json.Marshal(specs.State{Version: specs.Version, ID: b.id, Status: "creating", Pid: 4242, Bundle: b.bundle})
	return st
}

func (b *hookBed) args(policy string, processors ...string) []string {
	if processors == nil {
		processors = everyProcessor()
	}
	return []string{"--fail-policy", policy, "--dynamic-ca-root", b.dynamicRoot, "--processors", strings.Join(processors, ","),
		"--namespace", "shop", "--pod", "web", "--container", "app", "--timeout", "5"}
}

// everyProcessor lists the processors of every family and runtime.
func everyProcessor() []string {
	names := []string{fallbackFamily.processor()}
	for _, f := range families {
		names = append(names, f.processor())
	}
	for _, rt := range runtimes {
		names = append(names, rt.processor)
	}
	return names
}

func (b *hookBed) status(t testing.TB) (hookStatus, hookContext) {
	t.Helper()
	var st hookStatus
	data, err := os.ReadFile(filepath.Join(b.staging, stagedStatus))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st, st.Wrapper
}

func (b *hookBed) read(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestHookInjectsDebian(t *testing.T) {
	b := newHookBed(t, "debian")
	imageBundle := b.read(t, filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt"))
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	st, ctx := b.status(t)
	if st.Result != hookResultOK || st.Family != "debian" || st.OSRelease.ID != "debian" || st.ImageCerts != 3 ||
		st.Pod != "web" || st.Namespace != "shop" || st.Container != "app" || st.ContainerID != testID {
		t.Errorf("status %+v", st)
	}
	if !ctx.Injected || ctx.Message != "" {
		t.Errorf("context %+v", ctx)
	}
	want, _ := mergedBundle(imageBundle, b.ours)
	if got := b.read(t, filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt")); string(got) != string(want) {
		t.Error("OS bundle is not the image's bundle merged with ours")
	}
	if got := b.read(t, filepath.Join(b.staging, stagedBundle)); string(got) != string(want) {
		t.Error("staged bundle.pem (SSL_CERT_FILE) is not the image's bundle merged with ours")
	}
	if anchors := b.read(t, filepath.Join(b.rootfs, "usr/local/share/ca-certificates/cainjekt.crt")); countCerts(anchors) != 2 {
		t.Errorf("the anchor file holds %d certificates, want our 2", countCerts(anchors))
	}
	if got := b.read(t, filepath.Join(b.staging, stagedImageTrust)); string(got) != string(imageBundle) {
		t.Error("staged image-trust.pem is not the image's bundle")
	}
}

func TestHookLeavesExcludedOSStoreAlone(t *testing.T) {
	b := newHookBed(t, "alpine")
	before := snapshot(t, b.rootfs)
	if code := runHook(b.args(failClosed, "lang-python"), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if changed := changedPaths(before, snapshot(t, b.rootfs)); len(changed) > 0 {
		t.Errorf("os-alpine not enabled, yet changed %v", changed)
	}
	if n := countCerts(b.read(t, filepath.Join(b.staging, stagedBundle))); n != 5 {
		t.Errorf("staged bundle holds %d certificates, want the image's 3 and our 2", n)
	}
}

func TestHookFailurePolicy(t *testing.T) {
	for _, policy := range []string{failOpen, failClosed} {
		t.Run(policy, func(t *testing.T) {
			b := newHookBed(t, "debian")
			// An image whose trust store is a directory cannot be merged.
			p := filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			code := runHook(b.args(policy), strings.NewReader(string(b.state())), io.Discard, io.Discard)
			if want := map[string]int{failOpen: 0, failClosed: 1}[policy]; code != want {
				t.Errorf("exit %d, want %d", code, want)
			}
			st, ctx := b.status(t)
			if st.Result != hookResultFailed || len(st.Errors) == 0 || ctx.Injected || !strings.Contains(ctx.Message, "not a regular file") {
				t.Errorf("status %+v context %+v", st, ctx)
			}
			if got := b.read(t, filepath.Join(b.staging, stagedBundle)); string(got) != string(b.prefill) {
				t.Error("the staged bundle must stay as the plugin filled it")
			}
		})
	}
}

// panicReader stands for a bug of the hook: reading the state panics.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("a bug") }

// A bug of the hook is a failure like any other: the fail policy decides
// whether the container starts.
func TestHookPanicFollowsTheFailPolicy(t *testing.T) {
	b := newHookBed(t, "debian")
	for policy, want := range map[string]int{failOpen: 0, failClosed: 1} {
		var log strings.Builder
		if code := runHook(b.args(policy), panicReader{}, io.Discard, &log); code != want {
			t.Errorf("%s: exit %d after a panic, want %d", policy, code, want)
		}
		if !strings.Contains(log.String(), "hook panicked") || !strings.Contains(log.String(), "internal error: a bug") {
			t.Errorf("%s: the log does not say what happened:\n%s", policy, log.String())
		}
	}
}

func TestHookWithoutStaging(t *testing.T) {
	b := newHookBed(t, "debian")
	if err := os.RemoveAll(b.staging); err != nil {
		t.Fatal(err)
	}
	if code := runHook(b.args(failOpen), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		t.Errorf("fail-open exit %d", code)
	}
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 1 {
		t.Errorf("fail-closed exit %d", code)
	}
}

// A plugin of a newer version may pass a flag this hook does not know: the
// container still gets the fail policy it was created with.
func TestHookKeepsTheFailPolicyWithAnUnknownFlag(t *testing.T) {
	b := newHookBed(t, "debian")
	for policy, want := range map[string]int{failOpen: 0, failClosed: 1} {
		args := append(b.args(policy), "--from-the-future", "x")
		if code := runHook(args, strings.NewReader(string(b.state())), io.Discard, io.Discard); code != want {
			t.Errorf("%s with an unknown flag: exit %d, want %d", policy, code, want)
		}
	}
}

// The watchdog firing as the main path finishes must not change the exit
// code the main path decided: finish answers a second time with the first.
func TestHookFinishesOnce(t *testing.T) {
	h := newHook(hookOptions{failPolicy: failClosed}, time.Now(), newLogger(io.Discard, "json", 0))
	if code := h.finish(hookResultFailed, errors.New("refused")); code != 1 {
		t.Fatalf("fail-closed failure: exit %d", code)
	}
	if code := h.finish(hookResultTimeout, errors.New("gave up")); code != 1 || h.status.Result != hookResultFailed {
		t.Errorf("second finish: exit %d, result %s; want the first's 1 and %s", code, h.status.Result, hookResultFailed)
	}
}

func TestHookRejectsBadState(t *testing.T) {
	b := newHookBed(t, "debian")
	for name, state := range map[string]string{
		"not JSON":      "{",
		"bad ID":        `{"id":"../../x","bundle":"/tmp"}`,
		"relative":      `{"id":"` + testID + `","bundle":"tmp/bundle"}`,
		"huge":          `{"id":"` + testID + `","annotations":{"x":"` + strings.Repeat("a", maxStateSize) + `"}}`,
		"empty":         "",
		"missing paths": `{"id":"` + testID + `","bundle":"/nonexistent/bundle"}`,
	} {
		if code := runHook(b.args(failClosed), strings.NewReader(state), io.Discard, io.Discard); code != 1 {
			t.Errorf("%s: fail-closed exit %d", name, code)
		}
		if code := runHook(b.args(failOpen), strings.NewReader(state), io.Discard, io.Discard); code != 0 {
			t.Errorf("%s: fail-open exit %d", name, code)
		}
	}
}

func TestHookWatchdogGivesUpInTime(t *testing.T) {
	b := newHookBed(t, "debian")
	args := append([]string{"hook"}, b.args(failOpen)...)
	for i, a := range args {
		if a == "--timeout" {
			args[i+1] = "1"
		}
	}
	// stdin never closes: the state never arrives.
	exe, _ := os.Executable()
	r, w, _ := os.Pipe()
	defer w.Close()
	proc, err := os.StartProcess(exe, append([]string{exe}, args...), &os.ProcAttr{
		Env:   append(os.Environ(), asBinaryEnv+"=1"),
		Files: []*os.File{r, nil, nil},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	done := make(chan *os.ProcessState, 1)
	go func() { st, _ := proc.Wait(); done <- st }()
	select {
	case st := <-done:
		if st.ExitCode() != 0 {
			t.Errorf("fail-open watchdog exit %d", st.ExitCode())
		}
	case <-time.After(30 * time.Second):
		proc.Kill()
		t.Fatal("the hook did not give up on its own")
	}
}

// The staged bundle holds the image's trust: it must be no more readable
// than the image's own bundle, and the JVM fallback store built from it
// neither.
func TestStagedFilesNeverWidenTheImagesMode(t *testing.T) {
	b := newHookBed(t, "debian", "JAVA_HOME=/opt/jdk")
	writeTree(t, b.rootfs, map[string]string{"opt/jdk/lib/security/cacerts": string(readTestdata(t, "java/cacerts-changeit.p12"))})
	image := filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt")
	if err := os.Chmod(image, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, name := range []string{stagedBundle, stagedJavaStore} {
		fi, err := os.Stat(filepath.Join(b.staging, name))
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode&^0o600 != 0 {
			t.Errorf("%s is %o, wider than the image's bundle (600)", name, mode)
		}
	}
}

// Whatever an image makes the hook meet, what it records stays bounded
// where it is recorded: the files and errors it lists, each path and
// message, os-release, the pod's names; so status.json as a whole, which
// the wrapper then reads, fits its bound. Every field an image or a pod
// shapes is at its largest here, of the characters JSON escapes.
func TestStatusStaysBounded(t *testing.T) {
	worst := strings.Repeat(`"`, 1<<18) // each recorded as two bytes
	s := hookStatus{Version: statusVersion, Result: hookResultFailed, ContainerID: testID,
		Namespace: printable(worst, 253), Pod: printable(worst, 253), Container: printable(worst, 253),
		OSRelease: parseOSRelease([]byte("ID_LIKE=\"" + strings.Repeat(strings.Repeat("a", 64)+" ", maxIDLike) + strings.Repeat("b ", 30000) +
			"\"\nID=" + strings.Repeat("a", 100) + "\nVERSION_ID=" + strings.Repeat("a", 100) + "\nPRETTY_NAME=" + worst[:1000])),
		TimingsMS: map[string]float64{"start": 1, "rootfs": 1, "detect": 1, "os_store": 1, "languages": 1}}
	for range 1000 {
		s.addFiles([]fileChange{{Path: worst, Resolved: worst, Action: actionFailed, Added: 1 << 30, Error: worst}})
	}
	var errs []error
	for range 1000 {
		errs = append(errs, errors.New(worst))
	}
	s.addError("language runtimes", errors.Join(errs...))
	writeReport(nil, &s, newLogger(io.Discard, "json", 0))
	data, err := s.marshal()
	if err != nil || len(data) > maxStatusSize {
		t.Fatalf("status.json of %d bytes (%v), more than %d", len(data), err, maxStatusSize)
	}
	var back hookStatus
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("status.json does not parse: %v", err)
	}
	if len(back.Files) != maxRecordedFiles || back.FilesOmitted != 1000-maxRecordedFiles ||
		len(back.Errors) != maxRecordedErrors || back.ErrorsOmitted != 1000-maxRecordedErrors ||
		len(back.OSRelease.IDLike) != maxIDLike {
		t.Errorf("files %d (+%d omitted), errors %d (+%d omitted), id_like %d", len(back.Files), back.FilesOmitted,
			len(back.Errors), back.ErrorsOmitted, len(back.OSRelease.IDLike))
	}
	for _, e := range back.Errors {
		if len(e) > maxRecordedText+len("…") || !strings.HasPrefix(e, "language runtimes: ") {
			t.Errorf("error recorded as %d bytes: %.40q", len(e), e)
		}
	}
	if _, err := parseHookContext(data); err != nil {
		t.Errorf("the wrapper cannot read status.json: %v", err)
	}
}

// The watchdog always ends the hook inside the runtime's timeout: if the
// main path is writing its report and does not finish (a hung write), the
// watchdog waits for it only until 90% of the timeout, and exits with the
// code the main path decided.
func TestWatchdogWinsOverAStuckReport(t *testing.T) {
	h := newHook(hookOptions{failPolicy: failClosed, timeout: time.Second}, time.Now(), newLogger(io.Discard, "json", 0))
	h.mu.Lock()
	h.reporting, h.code = true, 1 // the main path began reporting a failure, and hangs
	h.mu.Unlock()
	code := h.finish(hookResultTimeout, errors.New("gave up"))
	if took := time.Since(h.start); code != 1 || took >= h.opts.timeout {
		t.Errorf("watchdog: exit %d after %s; want the main path's 1 inside the runtime's %s", code, took, h.opts.timeout)
	}
}

// A user namespace's mapping to the host: ranges of any size, IDs outside
// every range unmapped, no mapping the identity.
func TestIDMapToHost(t *testing.T) {
	ids := idMap{{ContainerID: 0, HostID: 100000, Size: 1000}, {ContainerID: 1000, HostID: 5000, Size: 1}}
	for _, tc := range []struct {
		container, host int
		ok              bool
	}{{0, 100000, true}, {999, 100999, true}, {1000, 5000, true}, {1001, -1, false}} {
		if host, ok := ids.toHost(tc.container); host != tc.host || ok != tc.ok {
			t.Errorf("toHost(%d) = %d, %v; want %d, %v", tc.container, host, ok, tc.host, tc.ok)
		}
	}
	if id, ok := (idMap{}).toHost(42); id != 42 || !ok {
		t.Errorf("without a user namespace: %d, %v", id, ok)
	}
}

// mount adds a bind mount of the host's source at dest to the bed's
// container, as CRI writes a volume into config.json.
func (b *hookBed) mount(t testing.TB, dest, source string) {
	t.Helper()
	b.mounts = append(b.mounts, specs.Mount{Destination: dest, Type: "bind", Source: source, Options: []string{"rbind", "ro"}})
	b.writeSpec(t)
}

// configMapVolume makes a directory as kubelet makes a ConfigMap volume:
// each key a symlink through ..data to the current version's file.
func configMapVolume(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	version := filepath.Join(dir, "..2026_12_01_00_00_00.1")
	if err := os.Mkdir(version, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(version, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("..data/"+name, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(version), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A pod that mounts its own CA bundle over the image's, as a file (a
// subPath) or in a directory (a ConfigMap at /etc/ssl/certs), keeps it:
// bundle.pem, which SSL_CERT_FILE names, is the mounted bundle with ours,
// not the image's, which the container does not see. Neither the volume
// nor the image's hidden file is written, and the status says so.
func TestPodMountedBundleIsTheContainersTrust(t *testing.T) {
	podBundle := append([]byte("# the pod's own\n"), readTestdata(t, "certs/public-b.pem")...)
	file := filepath.Join(t.TempDir(), "bundle.crt")
	if err := os.WriteFile(file, podBundle, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, mount := range map[string]func(b *hookBed){
		"subPath": func(b *hookBed) { b.mount(t, "/etc/ssl/certs/ca-certificates.crt", file) },
		"configMap": func(b *hookBed) {
			b.mount(t, "/etc/ssl/certs", configMapVolume(t, map[string][]byte{"ca-certificates.crt": podBundle}))
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := newHookBed(t, "debian")
			mount(b)
			hidden := filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt")
			imageBundle := b.read(t, hidden)
			if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
				st, _ := b.status(t)
				t.Fatalf("exit %d: %v", code, st.Errors)
			}
			staged := string(b.read(t, filepath.Join(b.staging, stagedBundle)))
			if !strings.HasPrefix(staged, string(podBundle)) || !strings.HasSuffix(staged, string(b.ours.pem)) {
				t.Errorf("bundle.pem is not the pod's bundle with ours:\n%s", staged)
			}
			if strings.Contains(staged, string(readTestdata(t, "certs/public-a.pem"))) {
				t.Error("bundle.pem holds the image's bundle, which the container does not see")
			}
			if string(b.read(t, hidden)) != string(imageBundle) || string(b.read(t, file)) != string(podBundle) {
				t.Error("the image's hidden bundle or the pod's volume was written")
			}
			st, _ := b.status(t)
			if i := slices.IndexFunc(st.Files, func(c fileChange) bool { return c.Path == "/etc/ssl/certs/ca-certificates.crt" }); i < 0 || st.Files[i].Action != actionMounted {
				t.Errorf("status: %+v", st.Files)
			}
		})
	}
}

// The volume is the pod's, not the image's: a symlink as the mounted file
// is refused, not followed on the host; a symlink below a mounted
// directory stays inside the volume.
func TestPodVolumeIsReadConfined(t *testing.T) {
	// A certificate neither the image nor ours has, in a file only root may read.
	hostOnly := issue(t, certSpec{cn: "on the host only", isCA: true, notBefore: time.Now(), notAfter: time.Now().Add(time.Hour)}).pem
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, hostOnly, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "bundle.crt")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	b := newHookBed(t, "debian")
	b.mount(t, "/etc/ssl/certs/ca-certificates.crt", link)
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 1 {
		t.Errorf("exit %d for a volume whose file is a symlink, want 1", code)
	}
	dir := t.TempDir()
	if err := os.Symlink(secret, filepath.Join(dir, "ca-certificates.crt")); err != nil {
		t.Fatal(err)
	}
	b = newHookBed(t, "debian")
	b.mount(t, "/etc/ssl/certs", dir)
	runHook(b.args(failOpen), strings.NewReader(string(b.state())), io.Discard, io.Discard)
	if staged := b.read(t, filepath.Join(b.staging, stagedBundle)); strings.Contains(string(staged), string(hostOnly)) {
		t.Error("a symlink in the volume reached a file on the host")
	}
}

// A pod with a user namespace of its own owns what the hook makes in its
// container, as its root, and the staged copies of its trust, as its
// image's owner of that trust: not the host's root, whom it sees as nobody.
func TestUserNamespacedContainersOwnWhatTheHookMakes(t *testing.T) {
	node := newHookBed(t, "debian")
	beds := []*hookBed{node.sibling(t, strings.Repeat("a", 64)), node.sibling(t, strings.Repeat("b", 64))}
	for i, b := range beds {
		if err := os.RemoveAll(filepath.Join(b.rootfs, "usr/local/share/ca-certificates")); err != nil {
			t.Fatal(err)
		}
		base := uint32(i+2) << 16
		b.inUserNS(t, base)
		if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
			t.Fatalf("container %d: exit %d", i, code)
		}
		for _, p := range []string{
			filepath.Join(b.rootfs, "usr/local/share/ca-certificates"),
			filepath.Join(b.rootfs, "usr/local/share/ca-certificates/cainjekt.crt"),
			filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt"),
			filepath.Join(b.staging, stagedBundle),
			filepath.Join(b.staging, stagedImageTrust),
		} {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil || st.Uid != base || st.Gid != base {
				t.Errorf("container %d: %s owned by %d:%d (%v), want its root, %d", i, p, st.Uid, st.Gid, err, base)
			}
		}
	}
}
