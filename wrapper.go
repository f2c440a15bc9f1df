package main

// The wrapper: PID 1 of an injected container, for the moment before the
// original command starts.
//
// The trust variables every process needs are in the OCI spec already (see
// lang.go); the wrapper applies only what depends on the hook's findings,
// from status.json: variables for runtimes the hook detected, and a line on
// stderr, in the application's own log, when injection failed. Then it
// resolves the original command through the container's PATH, as runc would
// have, and execs it, so the application is PID 1 itself and gets signals as
// before. Whatever goes wrong here, it still execs the original command.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
)

// runWrapper is `cainjekt wrap -- CMD [ARGS...]`. It returns only if the
// command cannot be executed, with the shell's exit codes for that.
// Everything after "--" is the container's; the plugin always writes it.
func runWrapper(args []string, stdout, stderr io.Writer) int {
	lazyGC()
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, wrapUsage)
		return 0
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "cainjekt wrap: no command to run")
		return 127
	}
	env, notes := wrapperEnv(containerStatus, os.Environ())
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	bin, err := lookPath(args[0])
	if err == nil {
		err = syscall.Exec(bin, args, env)
	}
	fmt.Fprintf(stderr, "cainjekt wrap: exec %s: %v\n", args[0], err)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
		return 127
	}
	return 126
}

const wrapUsage = "usage: cainjekt wrap -- COMMAND [ARGS]...: applies the hook's variables, then execs COMMAND; ARGS are never read as flags"

// wrapperEnv returns the environment for the command, and lines for its
// stderr: the hook's message when injection failed, or why the context could
// not be read.
func wrapperEnv(contextPath string, env []string) ([]string, []string) {
	ctx, err := readHookContext(contextPath)
	if err != nil {
		return env, []string{"cainjekt wrap: " + err.Error()}
	}
	var notes []string
	if ctx.Message != "" {
		notes = append(notes, ctx.Message)
	}
	return appendEnv(withEnv(env, ctx.Env), ctx.Append), notes
}

// readHookContext reads what the hook left for the wrapper in status.json.
// A missing file means the hook did not run; the command runs as it is.
func readHookContext(p string) (*hookContext, error) {
	f, err := os.Open(p)
	var data []byte
	if err == nil {
		defer f.Close()
		data, err = readAtMost(f, maxStatusSize)
	}
	var ctx *hookContext
	if err == nil {
		ctx, err = parseHookContext(data)
	}
	if err != nil {
		return nil, fmt.Errorf("hook context %s: %w", p, err)
	}
	return ctx, nil
}

// readAtMost reads all of r, and refuses more than limit bytes.
func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
	}
	return data, err
}

// parseHookContext takes the wrapper's part of status.json.
func parseHookContext(data []byte) (*hookContext, error) {
	var st struct {
		Wrapper hookContext `json:"wrapper"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	return &st.Wrapper, nil
}

// withEnv adds vars to env, except those env already sets: a value the pod
// or image chose wins.
func withEnv(env []string, vars map[string]string) []string {
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if !envHas(env, k) {
			env = append(env, k+"="+vars[k])
		}
	}
	return env
}

// appendEnv appends each value to the variable's current one, or sets it:
// JAVA_TOOL_OPTIONS the pod sets is kept, and ours added after it.
func appendEnv(env []string, vars map[string]string) []string {
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if i := slices.IndexFunc(env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") }); i >= 0 {
			env[i] += " " + vars[k]
		} else {
			env = append(env, k+"="+vars[k])
		}
	}
	return env
}

// envValue returns the value of name in a KEY=value list.
func envValue(env []string, name string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// lookPath resolves a command as runc does: exec.LookPath in the
// container's PATH, a match in a relative PATH entry accepted.
func lookPath(name string) (string, error) {
	bin, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrDot) {
		err = nil
	}
	return bin, err
}

// envHas reports whether a KEY=value list sets name.
func envHas(env []string, name string) bool {
	return slices.ContainsFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == name
	})
}
