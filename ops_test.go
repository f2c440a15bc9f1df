//go:build !hookonly

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	stdout, _, code := runBinary(t, nil, nil, "doctor", "--ca-file", filepath.Join(dir, "missing.pem"),
		"--dynamic-ca-root", filepath.Join(dir, "containers"), "--socket", filepath.Join(dir, "nri.sock"), "--host-binary", exe)
	if code != 1 {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{
		"FAIL CA bundle default: no usable CA bundle",
		"FAIL dynamic CA root " + filepath.Join(dir, "containers") + ": writable, but no cainjekt plugin runs",
		"ok   host binary: " + exe + " is " + exe,
		"FAIL NRI socket " + filepath.Join(dir, "nri.sock") + ": cannot register",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
}
