package main

// Hostile images: the hook runs as root on the host against a tree whose
// author chose every symlink, special file and size. Each attack runs the
// real hook, as runc would, in a process of its own, under both fail
// policies, and checks that nothing outside the rootfs changed, that the
// hook finished on its own within its budget, and that it exited as the
// policy says. SECURITY.md's table lists these attacks by name; a test
// keeps the two in step.

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostTree stands for the host: files an attacking image may point at.
type hostTree struct {
	dir    string
	before map[string]string
}

func newHostTree(t *testing.T) *hostTree {
	t.Helper()
	h := &hostTree{dir: t.TempDir()}
	writeTree(t, h.dir, map[string]string{
		"sentinel":                          "host data\n",
		"etc/ssl/certs/ca-certificates.crt": string(publicBundle(t)),
		"etc/os-release":                    "ID=debian\n",
		"anchors/keep":                      "host anchor directory\n",
		"jdk/bin/java":                      "#!/bin/sh\n",
		"jdk/lib/security/cacerts":          string(readTestdata(t, "java/cacerts.jks")),
		"venv/bin/python3":                  "#!/bin/sh\n",
		"venv/lib/python3.11/site-packages/certifi/cacert.pem": string(readTestdata(t, "certs/public-a.pem")),
	})
	h.before = snapshot(t, h.dir)
	t.Cleanup(func() {
		if changed := changedPaths(h.before, snapshot(t, h.dir)); len(changed) > 0 {
			t.Errorf("the hook changed the host: %v", changed)
		}
	})
	return h
}

func (h *hostTree) path(p string) string { return filepath.Join(h.dir, p) }

// attack prepares a hook bed for one attack.
type attack struct {
	name string
	// setup changes the rootfs (and may change the bed's config.json or
	// state); host is the host tree's path.
	setup func(t *testing.T, b *hookBed, host *hostTree)
	env   []string
	// processors, if set, replaces all processors.
	processors []string
	// want is the hook's result: ok (the attack led nowhere) or failed
	// (the hook refused; the fail policy decides).
	want string
	// refused is what status.json's errors must say when the hook failed.
	refused string
	// created, if set, names the file inside the image the hook must have
	// written our CAs to (the target of a dangling symlink, taken inside).
	created func(host *hostTree) string
}

// replace removes a rootfs path and makes it a symlink to target.
func replace(t *testing.T, rootfs, p, target string) {
	t.Helper()
	full := filepath.Join(rootfs, p)
	if err := os.RemoveAll(full); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

// special replaces a rootfs path with a special file.
func special(t *testing.T, rootfs, p string, make func(string) error) {
	t.Helper()
	full := filepath.Join(rootfs, p)
	if err := os.RemoveAll(full); err != nil {
		t.Fatal(err)
	}
	if err := make(full); err != nil {
		t.Skipf("cannot make %s here: %v", p, err)
	}
}

func fifo(p string) error { return unix.Mkfifo(p, 0o644) }

func sparse2GiB(p string) error {
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	return os.Truncate(p, 2<<30)
}

func charDevice(major, minor uint32) func(string) error {
	return func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(major, minor))) }
}

// unixSocket binds a socket in a short directory (socket paths are limited
// to 108 bytes) and moves it into place.
func unixSocket(p string) error {
	dir, err := os.MkdirTemp("", "s")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		return err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	return os.Rename(filepath.Join(dir, "s"), p)
}

const (
	bundlePath = "etc/ssl/certs/ca-certificates.crt"
	// osReleasePath is the file Debian's /etc/os-release links to: the hook
	// reads it whichever of the two names it tries.
	osReleasePath = "usr/lib/os-release"
)

var attacks = []attack{
	{name: "trust store symlink to an absolute host path", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			replace(t, b.rootfs, bundlePath, h.path("etc/ssl/certs/ca-certificates.crt"))
		},
		created: func(h *hostTree) string { return h.path("etc/ssl/certs/ca-certificates.crt") }},
	{name: "trust store symlink climbing out with ../", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			replace(t, b.rootfs, bundlePath, strings.Repeat("../", 20)+strings.TrimPrefix(h.path("sentinel"), "/"))
		},
		created: func(h *hostTree) string { return h.path("sentinel") }},
	{name: "trust store symlink chain ending outside", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			replace(t, b.rootfs, bundlePath, "../hop1")
			replace(t, b.rootfs, "etc/ssl/hop1", "/hop2")
			replace(t, b.rootfs, "hop2", "../../../.."+h.path("sentinel"))
		},
		created: func(h *hostTree) string { return h.path("sentinel") }},
	{name: "anchor directory symlink to a host directory", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			replace(t, b.rootfs, "usr/local/share/ca-certificates", h.path("anchors"))
		}},
	{name: "/etc/ssl symlink to a host directory", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) { replace(t, b.rootfs, "etc/ssl", h.path("etc/ssl")) }},
	{name: "/etc/ssl/certs symlink to a host directory", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			replace(t, b.rootfs, "etc/ssl/certs", h.path("etc/ssl/certs"))
		}},
	{name: "/etc symlink to a host directory", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) { replace(t, b.rootfs, "etc", h.path("etc")) }},
	{name: "trust store hardlinked to a host file", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			full := filepath.Join(b.rootfs, bundlePath)
			os.Remove(full)
			if err := os.Link(h.path("etc/ssl/certs/ca-certificates.crt"), full); err != nil {
				t.Skipf("no hardlink across these directories: %v", err)
			}
		}},
	{name: "trust store is a directory", want: hookResultFailed, refused: "not a regular file",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			special(t, b.rootfs, bundlePath, func(p string) error { return os.Mkdir(p, 0o755) })
		}},
	{name: "trust store is a FIFO", want: hookResultFailed, refused: "not a regular file",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, bundlePath, fifo) }},
	{name: "trust store is a socket", want: hookResultFailed, refused: "not a regular file",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, bundlePath, unixSocket) }},
	{name: "trust store is a device", want: hookResultFailed, refused: "not a regular file",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, bundlePath, charDevice(1, 3)) }},
	{name: "trust store is a 2 GiB sparse file", want: hookResultFailed, refused: "file too large",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, bundlePath, sparse2GiB) }},
	{name: "os-release is a FIFO", want: hookResultFailed, refused: "os-release: read /etc/os-release: not a regular file",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, osReleasePath, fifo) }},
	{name: "os-release is /dev/zero", want: hookResultFailed, refused: "not a regular file",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, osReleasePath, charDevice(1, 5)) }},
	{name: "os-release is a huge file", want: hookResultFailed, refused: "file too large",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { special(t, b.rootfs, osReleasePath, sparse2GiB) }},
	{name: "os-release is binary garbage", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			special(t, b.rootfs, osReleasePath, func(p string) error {
				return os.WriteFile(p, []byte("\x00\xff\xfeID=\x00debian\nID_LIKE=\xc3\x28\n"+strings.Repeat("\x01", 5000)), 0o644)
			})
		}},
	{name: "rootfs in config.json is a symlink", want: hookResultFailed, refused: "container rootfs",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			if err := os.Rename(b.rootfs, b.rootfs+".real"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("rootfs.real", b.rootfs); err != nil {
				t.Fatal(err)
			}
		}},
	{name: "rootfs in config.json climbs out of the bundle", want: hookResultFailed, refused: "container rootfs",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) { writeSpec(t, b, "../../../../../../../etc") }},
	{name: "rootfs in config.json is the host's root", want: hookResultFailed, refused: "host's root directory",
		// Only a processor that writes nothing into the rootfs: if the guard
		// ever failed, this test must not touch the machine it runs on.
		processors: []string{"lang-ruby"},
		setup:      func(t *testing.T, b *hookBed, _ *hostTree) { writeSpec(t, b, "/") }},
	{name: "bundle directory in the state is a symlink", want: hookResultFailed, refused: "OCI bundle",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			link := b.bundle + ".link"
			if err := os.Symlink(b.bundle, link); err != nil {
				t.Fatal(err)
			}
			b.bundle = link
		}},
	{name: "java in PATH is a symlink to a host JDK", want: hookResultOK, env: []string{"PATH=/usr/bin:/bin"},
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			replace(t, b.rootfs, "usr/bin/java", h.path("jdk/bin/java"))
		}},
	{name: "JAVA_HOME reaches a host JDK through a symlink", want: hookResultOK, env: []string{"JAVA_HOME=/opt/jdk"},
		setup: func(t *testing.T, b *hookBed, h *hostTree) { replace(t, b.rootfs, "opt/jdk", h.path("jdk")) }},
	{name: "PATH directory is a symlink to a host virtualenv", want: hookResultOK, env: []string{"PATH=/opt/venv/bin:/usr/bin"},
		setup: func(t *testing.T, b *hookBed, h *hostTree) { replace(t, b.rootfs, "opt/venv", h.path("venv")) }},
	{name: "certifi bundle is a symlink to a host file", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, h *hostTree) {
			writeTree(t, b.rootfs, map[string]string{"usr/local/lib/python3.11/dist-packages/certifi/core.py": "CACERT = 'cacert.pem'\n"})
			replace(t, b.rootfs, "usr/local/lib/python3.11/dist-packages/certifi/cacert.pem",
				h.path("venv/lib/python3.11/site-packages/certifi/cacert.pem"))
		}},
	{name: "trust variable of the pod names a host file through a symlink", want: hookResultOK,
		env:   []string{"SSL_CERT_FILE=/app/ca.pem"},
		setup: func(t *testing.T, b *hookBed, h *hostTree) { replace(t, b.rootfs, "app/ca.pem", h.path("sentinel")) }},
}

// writeSpec rewrites the bundle's config.json with another root.path.
func writeSpec(t *testing.T, b *hookBed, rootPath string) {
	t.Helper()
	spec, _ := json.Marshal(specs.Spec{Version: specs.Version, Root: &specs.Root{Path: rootPath}})
	if err := os.WriteFile(filepath.Join(b.bundle, "config.json"), spec, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runHookProcess runs the hook as runc does, in its own process, and fails
// the test if it does not finish on its own within the runtime's timeout.
func runHookProcess(t *testing.T, b *hookBed, args []string, env []string) int {
	t.Helper()
	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{"hook"}, args...)...)
	cmd.Env = append(os.Environ(), asBinaryEnv+"=1")
	cmd.Stdin = strings.NewReader(string(b.state()))
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the hook ran past the runtime's 5 s timeout")
	}
	if exitErr, ok := err.(*exec.ExitError); ok {
		return exitErr.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func TestHostileImages(t *testing.T) {
	for _, a := range attacks {
		for _, policy := range []string{failOpen, failClosed} {
			t.Run(a.name+"/"+policy, func(t *testing.T) {
				host := newHostTree(t)
				b := newHookBed(t, "debian", a.env...)
				a.setup(t, b, host)
				args := b.args(policy, a.processors...)
				code := runHookProcess(t, b, args, nil)
				st, ctx := b.status(t)
				if st.Result != a.want {
					t.Fatalf("result %q, want %q (errors %v)", st.Result, a.want, st.Errors)
				}
				wantCode := 0
				if a.want == hookResultFailed && policy == failClosed {
					wantCode = 1
				}
				if code != wantCode {
					t.Errorf("exit %d, want %d under %s", code, wantCode, policy)
				}
				if a.want == hookResultFailed && (!strings.Contains(strings.Join(st.Errors, "\n"), a.refused) || ctx.Injected) {
					t.Errorf("status errors %q do not say %q", st.Errors, a.refused)
				}
				if data, err := os.ReadFile(filepath.Join(b.staging, stagedBundle)); err != nil || countCerts(data) == 0 {
					t.Errorf("bundle.pem must always hold certificates: %v", err)
				}
				if a.created != nil {
					if data, err := os.ReadFile(filepath.Join(b.rootfs, a.created(host))); err != nil || !bytes.Contains(data, b.ours.pem) {
						t.Errorf("our CAs are not in %s inside the image: %v", a.created(host), err)
					}
				}
			})
		}
	}
}

// A component of the path the hook writes is swapped, again and again,
// between a directory and a symlink to the host while the hook runs: the
// openat2 lookups either see the directory or refuse the symlink.
func TestSymlinkSwapRace(t *testing.T) {
	host := newHostTree(t)
	b := newHookBed(t, "debian")
	certs := filepath.Join(b.rootfs, "etc/ssl/certs")
	real := certs + ".real"
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Rename(certs, real)
			os.Symlink(host.path("etc/ssl/certs"), certs)
			os.Remove(certs)
			os.Rename(real, certs)
		}
	}()
	for i := 0; i < 40; i++ {
		runHookProcess(t, b, b.args(failOpen), nil)
	}
	close(stop)
	<-done
	if _, err := os.Stat(filepath.Join(certs, "ca-certificates.crt")); err != nil {
		t.Errorf("the image's own bundle is gone: %v", err)
	}
}

// TestSecurityDocListsEveryAttack keeps SECURITY.md's table of tested
// attacks true: every attack here has a row there.
func TestSecurityDocListsEveryAttack(t *testing.T) {
	doc, err := os.ReadFile("SECURITY.md")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a path component swapped for a symlink while the hook runs"}
	for _, a := range attacks {
		names = append(names, a.name)
	}
	for _, n := range names {
		if !strings.Contains(string(doc), "| "+n+" |") {
			t.Errorf("SECURITY.md has no row for %q", n)
		}
	}
}
