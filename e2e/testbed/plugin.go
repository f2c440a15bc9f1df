package testbed

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PluginOptions start a `cainjekt plugin` against a node.
type PluginOptions struct {
	Bin           string // the cainjekt binary, also the host binary of hook and wrapper
	Socket        string // the node's NRI socket
	CAFile        string
	DynamicCARoot string
	Args          []string  // further flags, e.g. --fail-policy fail-closed
	Log           io.Writer // receives the plugin's log lines too, if set
}

// Plugin is a running `cainjekt plugin` process.
type Plugin struct {
	HTTPAddr string

	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   strings.Builder
	exited chan struct{}
	err    error
}

// StartPlugin starts the plugin on a free loopback port. It does not wait
// for the plugin to register: see WaitReady.
func StartPlugin(opts PluginOptions) (*Plugin, error) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"plugin",
		"--socket", opts.Socket,
		"--ca-file", opts.CAFile,
		"--dynamic-ca-root", opts.DynamicCARoot,
		"--http-addr", addr,
		"--log-format", "text",
		"--log-level", "debug",
	}, opts.Args...)
	p := &Plugin{HTTPAddr: addr, exited: make(chan struct{})}
	p.cmd = exec.Command(opts.Bin, args...)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start plugin: %w", err)
	}
	go p.collect(stderr, opts.Log)
	return p, nil
}

func (p *Plugin) collect(r io.Reader, copyTo io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.logs.WriteString(sc.Text() + "\n")
		p.mu.Unlock()
		if copyTo != nil {
			fmt.Fprintln(copyTo, "plugin:", sc.Text())
		}
	}
	err := p.cmd.Wait()
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	close(p.exited)
}

// FreeLoopbackAddr is a free TCP address on 127.0.0.1.
func FreeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Pid is the plugin's process ID.
func (p *Plugin) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited, and how.
func (p *Plugin) Exited() (bool, error) {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// Logs returns everything the plugin logged so far.
func (p *Plugin) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Get fetches a path of the plugin's HTTP endpoint.
func (p *Plugin) Get(path string) (int, string, error) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + p.HTTPAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// WaitReady waits until /readyz answers 200: the plugin is registered and
// its default CA bundle loaded.
func (p *Plugin) WaitReady(ctx context.Context) error {
	for {
		code, body, err := p.Get("/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if done, exitErr := p.Exited(); done {
			return fmt.Errorf("plugin exited (%v) before it was ready:\n%s", exitErr, p.Logs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugin not ready (%d %q, %v): %w", code, body, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitRegistered waits until the plugin is registered with the runtime,
// ready or not: cainjekt_nri_connected is 1.
func (p *Plugin) WaitRegistered(ctx context.Context) error {
	for {
		n, err := p.Metric("cainjekt_nri_connected")
		if err == nil && n == 1 {
			return nil
		}
		if done, exitErr := p.Exited(); done {
			return fmt.Errorf("plugin exited (%v) before it registered:\n%s", exitErr, p.Logs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugin not registered (%v %v): %w", n, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Metric returns the value of one series, written as in the exposition
// format, e.g. `cainjekt_hook_runs_total{result="ok"}`.
func (p *Plugin) Metric(series string) (float64, error) {
	_, body, err := p.Get("/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no series %s in /metrics", series)
}

// Stop sends SIGTERM and waits for the plugin to exit.
func (p *Plugin) Stop() error {
	return terminate(p.cmd.Process, p.exited, 15*time.Second)
}
