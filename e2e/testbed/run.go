package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// standardPath is the PATH given to build tools and images.
const standardPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// command prepares name in its own process group and kills the whole group when ctx ends:
// debootstrap and go spawn helpers that would otherwise outlive a cancelled test.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if path, err := lookTool(name); err == nil {
		name = path
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// lookTool finds name on PATH or, failing that, in standardPath: tools such as chroot and
// debootstrap live in sbin directories a non-login PATH may lack.
func lookTool(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	for _, dir := range filepath.SplitList(standardPath) {
		candidate := filepath.Join(dir, name)
		if st, statErr := os.Stat(candidate); statErr == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", err
}

// run executes cmd, capturing its output so that a failure explains itself: the error
// carries the output's tail.
func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, tail(out.String(), 40))
	}
	return nil
}

// goCommand prepares a go toolchain command.
func goCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go toolchain is needed to build the test bed: %w", err)
	}
	return command(ctx, goBin, args...), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// withEnv returns the current environment with overrides (KEY=VALUE) appended; exec.Cmd
// keeps only the last value of a duplicated key, so the overrides win.
func withEnv(overrides ...string) []string {
	return append(os.Environ(), overrides...)
}

// terminate sends SIGTERM to a process whose waiter closes exited, and
// SIGKILL if it is still there after grace.
func terminate(proc *os.Process, exited <-chan struct{}, grace time.Duration) error {
	select {
	case <-exited:
		return nil
	default:
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
	}
	proc.Kill()
	<-exited
	return fmt.Errorf("ignored SIGTERM for %s and was killed", grace)
}
