//go:build !hookonly

package main

import (
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestInstallIsAtomicAndIdempotent(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "cainjekt")
	stdout, stderr, code := runBinary(t, nil, nil, "install", "--dest", dest)
	if code != 0 || !strings.Contains(stdout, "installed") {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	exe, _ := os.Executable()
	want, _ := os.ReadFile(exe)
	got, _ := os.ReadFile(dest)
	if string(got) != string(want) {
		t.Error("the installed binary is not this one")
	}
	if st, _ := os.Stat(dest); st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", st.Mode())
	}
	before, _ := os.Stat(dest)
	if stdout, _, code := runBinary(t, nil, nil, "install", "--dest", dest); code != 0 || !strings.Contains(stdout, "up to date") {
		t.Errorf("second install: exit %d %s", code, stdout)
	}
	after, _ := os.Stat(dest)
	if !os.SameFile(before, after) {
		t.Error("an identical binary was replaced")
	}
	entries, _ := os.ReadDir(filepath.Dir(dest))
	if len(entries) != 1 {
		t.Errorf("left temporary files: %v", entries)
	}
}

func TestInspectChangesNothing(t *testing.T) {
	dir := copyTree(t, "testdata/rootfs/alpine")
	before := snapshot(t, dir)
	stdout, stderr, code := runBinary(t, nil, nil, "inspect", "--ca-file", "testdata/certs/corp-root.pem", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		`family alpine (processor os-alpine)`,
		"trust store: /etc/ssl/certs/ca-certificates.crt: 3 certificates",
		"would merge into /etc/ssl/certs/ca-certificates.crt: +1 certificates",
		"would add anchor /usr/local/share/ca-certificates/cainjekt.crt: +1 certificates",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, stdout)
		}
	}
	if changed := changedPaths(before, snapshot(t, dir)); len(changed) > 0 {
		t.Errorf("inspect changed %v", changed)
	}
}

func TestDoctorReportsWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	exe, _ := os.Executable()
	stdout, _, code := runBinary(t, nil, []string{"CAINJEKT_FAILPOLICY=fail-closed"}, "doctor", "--ca-file", filepath.Join(dir, "missing.pem"),
		"--dynamic-ca-root", filepath.Join(dir, "containers"), "--socket", filepath.Join(dir, "nri.sock"), "--host-binary", exe)
	if code != 1 {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{
		"FAIL CA bundle default: no usable CA bundle",
		"FAIL dynamic CA root " + filepath.Join(dir, "containers") + ": missing",
		"ok   host binary: " + exe + " is " + exe,
		"FAIL NRI socket " + filepath.Join(dir, "nri.sock") + ": cannot register",
		"ok   variable CAINJEKT_FAILPOLICY: warning: no setting reads it; did you mean CAINJEKT_FAIL_POLICY?",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
}

// Every command answers -h and --help with its own usage on stdout.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, cmd := range []string{"plugin", "lint", "doctor", "install", "inspect", "hook", "wrap"} {
		for _, flag := range []string{"-h", "--help"} {
			stdout, stderr, code := runBinary(t, nil, nil, cmd, flag)
			if code != 0 || !strings.HasPrefix(stdout, "usage: cainjekt "+cmd) || stderr != "" {
				t.Errorf("cainjekt %s %s: exit %d, stdout:\n%s\nstderr:\n%s", cmd, flag, code, stdout, stderr)
			}
		}
	}
	// What follows wrap's "--" is the container's, -h too.
	if stdout, _, code := runBinary(t, nil, nil, "wrap", "--", "/bin/echo", "-h", "--help"); code != 0 || stdout != "-h --help\n" {
		t.Errorf("wrap -- /bin/echo -h --help: exit %d, stdout %q", code, stdout)
	}
	hook, err := builtHook()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"hook", "-h"}, {"wrap", "--help"}} {
		var stdout, stderr strings.Builder
		cmd := exec.Command(hook, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || !strings.HasPrefix(stdout.String(), "usage: cainjekt") || stderr.Len() > 0 {
			t.Errorf("cainjekt-hook %v: %v, stdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
		}
	}
}

// Flags may follow a command's argument.
func TestFlagsAfterArguments(t *testing.T) {
	root := writeBundle(t, issue(t, certSpec{cn: "lax", notBefore: time.Now().Add(-time.Hour), notAfter: time.Now().Add(time.Hour * 24 * 365),
		bcNotCritical: true, keyUsage: x509.KeyUsageCertSign}).pem) // a warning: python_strict
	for _, args := range [][]string{{"lint", "--strict", root}, {"lint", root, "--strict"}, {"lint", root, "-strict=true"}} {
		if stdout, stderr, code := runBinary(t, nil, nil, args...); code != 3 {
			t.Errorf("%v: exit %d, want 3 (a warning, with --strict): %s%s", args, code, stdout, stderr)
		}
	}
	dir := copyTree(t, "testdata/rootfs/alpine")
	stdout, stderr, code := runBinary(t, nil, nil, "inspect", dir, "--ca-file", "testdata/certs/corp-root.pem")
	if code != 0 || !strings.Contains(stdout, "would merge into /etc/ssl/certs/ca-certificates.crt: +1 certificates") {
		t.Errorf("inspect ROOTFS --ca-file: exit %d: %s%s", code, stdout, stderr)
	}
	if _, stderr, code := runBinary(t, nil, nil, "lint", "--", "--strict"); code != 2 || !strings.Contains(stderr, "--strict") {
		t.Errorf(`lint -- --strict: exit %d, want 2 for a file named "--strict": %s`, code, stderr)
	}
	if _, stderr, code := runBinary(t, nil, nil, "install", "/cainjekt-hook", "--dest", filepath.Join(t.TempDir(), "hook")); code != 2 || !strings.Contains(stderr, "--src") {
		t.Errorf("install with an argument: exit %d: %s", code, stderr)
	}
}

// natrontech/cainjekt's DaemonSet runs its image with the plugin's flags
// and no command.
func TestPluginFlagsWithoutCommand(t *testing.T) {
	_, stderr, code := runBinary(t, nil, nil, "--name=cainjekt", "--idx=10")
	if code != 2 || !strings.Contains(stderr, "cainjekt plugin --name=cainjekt --idx=10") ||
		!strings.Contains(stderr, `args: ["plugin", "--name=cainjekt", "--idx=10"]`) {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func writeBundle(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// install refuses what would not run on this node, and leaves the
// destination as it was.
func TestInstallRefusesWhatCannotRun(t *testing.T) {
	dir := t.TempDir()
	exe, _ := os.Executable()
	self, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	foreign := slices.Clone(self[:4096])
	foreign[18], foreign[19] = 183, 0 // EM_AARCH64
	if runtime.GOARCH == "arm64" {
		foreign[18], foreign[19] = 62, 0 // EM_X86_64
	}
	for name, tc := range map[string]struct {
		data []byte
		mode os.FileMode
		want string
	}{
		"script":            {[]byte("#!/bin/sh\nexit 0\n"), 0o755, "not an ELF executable"},
		"other machine":     {foreign, 0o755, "for another machine"},
		"not executable":    {self, 0o644, "not an executable file"},
		"other machine, 32": {append(slices.Clone(self[:4]), append([]byte{1}, self[5:4096]...)...), 0o755, "for another machine"},
	} {
		src := filepath.Join(dir, name)
		dest := filepath.Join(dir, "dest")
		if err := errors.Join(os.WriteFile(src, tc.data, tc.mode), os.WriteFile(dest, []byte("old"), 0o755)); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := runBinary(t, nil, nil, "install", "--src", src, "--dest", dest)
		if got, _ := os.ReadFile(dest); code != 1 || !strings.Contains(stderr, tc.want) || string(got) != "old" {
			t.Errorf("%s: exit %d, dest %.10q, stderr %s", name, code, got, stderr)
		}
	}
	missing := filepath.Join(dir, "opt", "cainjekt", "bin")
	_, stderr, code := runBinary(t, nil, nil, "install", "--dest", filepath.Join(missing, "cainjekt-hook"))
	if code != 1 || !strings.Contains(stderr, "directory "+missing+" does not exist") || !strings.Contains(stderr, "hostPath volume host-bin") {
		t.Errorf("missing directory: exit %d: %s", code, stderr)
	}
}

// doctor looks and changes nothing: it creates no dynamic CA root and no
// lock file, and leaves a root's mode as it found it.
func TestDoctorChangesNothing(t *testing.T) {
	dir := t.TempDir()
	exe, _ := os.Executable()
	caFile, _ := filepath.Abs("testdata/certs/corp-root.pem")
	doctor := func(root string) string {
		stdout, _, _ := runBinary(t, nil, nil, "doctor", "--ca-file", caFile,
			"--dynamic-ca-root", root, "--socket", filepath.Join(dir, "nri.sock"), "--host-binary", exe)
		return stdout
	}
	absent := filepath.Join(dir, "absent")
	if out := doctor(absent); !strings.Contains(out, "FAIL dynamic CA root "+absent+": missing") {
		t.Errorf("doctor on a missing root:\n%s", out)
	}
	if _, err := os.Lstat(absent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("doctor created the dynamic CA root: %v", err)
	}
	present := filepath.Join(dir, "present")
	if err := os.Mkdir(present, 0o755); err != nil {
		t.Fatal(err)
	}
	out := doctor(present)
	if !strings.Contains(out, "FAIL dynamic CA root "+present+": writable, but no cainjekt plugin runs") {
		t.Errorf("doctor on a root without a plugin:\n%s", out)
	}
	if before, after := strings.Index(out, `registering with the runtime over NRI for a moment, as plugin "cainjekt-doctor" at index 99`),
		strings.Index(out, "NRI socket"); before < 0 || after < before {
		t.Errorf("doctor does not say it registers with NRI before it does:\n%s", out)
	}
	if entries, _ := os.ReadDir(present); len(entries) > 0 {
		t.Errorf("doctor left %v in the dynamic CA root", entries)
	}
	if st, _ := os.Stat(present); st.Mode().Perm() != 0o755 {
		t.Errorf("doctor changed the root's mode to %v", st.Mode())
	}
	// The plugin's lock, held by this process.
	st, err := openStager(present)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.lock(); err != nil {
		t.Fatal(err)
	}
	if out := doctor(present); !strings.Contains(out, "ok   dynamic CA root "+present+": writable; a cainjekt plugin holds the node's lock") {
		t.Errorf("doctor with the lock held:\n%s", out)
	}
}
