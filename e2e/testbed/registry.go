package testbed

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Registry is Debian's docker-registry, the CNCF distribution registry,
// serving the registry API in plain HTTP on a loopback port, as containerd
// and registry clients accept for a loopback host.
type Registry struct {
	Addr string // host:port
	Log  string // its log file

	cmd    *exec.Cmd
	exited chan error // holds Wait's result once it returned
}

// StartRegistry starts a registry that keeps its files, configuration and
// log in dir. auth is its configuration's auth section (htpasswd, token),
// or "" for a registry anyone may push to. It returns once the registry
// answers.
func StartRegistry(ctx context.Context, dir, auth string) (*Registry, error) {
	bin, err := lookTool("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("%w (Debian's docker-registry; make deps installs it)", err)
	}
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n%s",
		filepath.Join(dir, "storage"), addr, auth)
	configPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("write registry config: %w", err)
	}
	r := &Registry{Addr: addr, Log: filepath.Join(dir, "registry.log")}
	log, err := os.Create(r.Log)
	if err != nil {
		return nil, fmt.Errorf("create registry log: %w", err)
	}
	defer log.Close()
	r.cmd = exec.Command(bin, "serve", configPath)
	r.cmd.Stdout, r.cmd.Stderr = log, log
	// The registry reads REGISTRY_* variables as configuration: podman's
	// REGISTRY_AUTH_FILE would be auth.file, an access controller it lacks.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start docker-registry: %w", err)
	}
	r.exited = make(chan error, 1)
	go func() { r.exited <- r.cmd.Wait() }()
	// Any answer of /v2/, 200 or 401, says it serves.
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return r, nil
		}
		select {
		case err = <-r.exited:
			r.exited <- err
		case <-ctx.Done():
			r.Close()
		case <-time.After(100 * time.Millisecond):
			continue
		}
		data, _ := os.ReadFile(r.Log)
		return nil, fmt.Errorf("docker-registry does not serve on %s: %v\n%s", addr, err, tail(string(data), 20))
	}
}

// Close stops the registry.
func (r *Registry) Close() {
	r.cmd.Process.Kill()
	err := <-r.exited
	r.exited <- err
}
