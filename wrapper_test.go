package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWrapperEnvAppliesContextButPodWins(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status.json")
	if err := os.WriteFile(p, []byte(`{"result":"failed","wrapper":{"injected":false,"message":"cainjekt: CA injection failed (x)","env":{"B":"hook","A":"hook"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	env, notes := wrapperEnv(p, []string{"PATH=/bin", "A=pod"})
	if !slices.Equal(env, []string{"PATH=/bin", "A=pod", "B=hook"}) {
		t.Errorf("env %v", env)
	}
	if !slices.Equal(notes, []string{"cainjekt: CA injection failed (x)"}) {
		t.Errorf("notes %v", notes)
	}
	env, notes = wrapperEnv(filepath.Join(t.TempDir(), "missing.json"), []string{"PATH=/bin"})
	if !slices.Equal(env, []string{"PATH=/bin"}) || len(notes) != 1 || !strings.Contains(notes[0], "no such file") {
		t.Errorf("missing context: env %v notes %v", env, notes)
	}
}

func TestLookPathLikeRunc(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "app")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/nonexistent:"+dir)
	if got, err := lookPath("app"); err != nil || got != exe {
		t.Errorf("lookPath(app) = %q, %v", got, err)
	}
	if _, err := lookPath("data"); err == nil {
		t.Error("found a file that is not executable")
	}
	t.Chdir(dir)
	t.Setenv("PATH", "/nonexistent:.")
	if got, err := lookPath("app"); err != nil || got != "app" {
		t.Errorf("a match in a relative PATH entry: %q, %v", got, err)
	}
}

func TestWrapperExecsTheCommand(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "wrap", "--", "sh", "-c", `echo "$GREETING $0 $1 $$"`, "arg0", "arg1")
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1", "GREETING=hello")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	// The command replaced the wrapper: same PID, so in a container it is PID 1.
	if want := fmt.Sprintf("hello arg0 arg1 %d\n", cmd.Process.Pid); stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
	// No context on this machine: the wrapper says so and runs the command anyway.
	if !strings.Contains(stderr.String(), "hook context") {
		t.Errorf("stderr %q", stderr.String())
	}
	if _, stderr, code := runBinary(t, nil, nil, "wrap", "--", "no-such-command-anywhere"); code != 127 || !strings.Contains(stderr, "not found") {
		t.Errorf("missing command: exit %d stderr %q", code, stderr)
	}
}
