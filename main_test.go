package main

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The test binary doubles as the cainjekt binary: run with this variable set,
// it is `cainjekt ARGS...`. Tests of the hook's watchdog and of the wrapper's
// exec need a process of their own.
const asBinaryEnv = "CAINJEKT_TEST_AS_BINARY"

// hwmFileEnv names a file where the test binary, run as cainjekt, writes
// the most resident memory it held, in bytes.
const hwmFileEnv = "CAINJEKT_TEST_HWM_FILE"

func TestMain(m *testing.M) {
	if os.Getenv(asBinaryEnv) == "1" {
		code := run(os.Args[1:])
		if p := os.Getenv(hwmFileEnv); p != "" {
			os.WriteFile(p, []byte(strconv.FormatInt(peakRSS(), 10)), 0o600)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// peakRSS is this process's VmHWM, in bytes.
func peakRSS() int64 {
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if kib, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(kib, "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
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

// requireTool finds a tool a test runs, or skips the test; make unit,
// which installs every tool, fails instead.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CAINJEKT_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not installed (make deps installs it)", name)
		}
		t.Skipf("%s not installed (make deps installs it)", name)
	}
	return p
}
