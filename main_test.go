package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// The test binary doubles as the cainjekt binary: run with this variable set,
// it is `cainjekt ARGS...`. Tests of the hook's watchdog and of the wrapper's
// exec need a process of their own.
const asBinaryEnv = "CAINJEKT_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinaryEnv) == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runBinary runs `cainjekt args...` as a child process.
func runBinary(t *testing.T, stdin []byte, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), asBinaryEnv+"=1"), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if exitErr, ok := err.(*exec.ExitError); ok {
		return out.String(), errOut.String(), exitErr.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), 0
}

func TestUnknownCommand(t *testing.T) {
	if _, stderr, code := runBinary(t, nil, nil, "frobnicate"); code != 2 || !bytes.Contains([]byte(stderr), []byte("unknown command")) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
