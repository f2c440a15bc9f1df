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
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	// after, if set, checks what else the hook must have done.
	after func(t *testing.T, b *hookBed, st hookStatus)
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
	{name: "os-release whose ID_LIKE holds 30,000 words", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			special(t, b.rootfs, osReleasePath, func(p string) error {
				return os.WriteFile(p, []byte("ID=debian\nID_LIKE=\""+strings.Repeat("a ", 30_000)+"\"\n"), 0o644)
			})
		},
		after: func(t *testing.T, b *hookBed, st hookStatus) {
			if len(st.OSRelease.IDLike) != maxIDLike {
				t.Errorf("recorded %d IDs of ID_LIKE", len(st.OSRelease.IDLike))
			}
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

	// Exhaustion: images that try to make the hook outlive its timeout, or
	// its memory, status and log grow without bound.
	{name: "thousands of long-named python3 directories with certifi bundles", want: hookResultFailed, refused: "stopped",
		env:   []string{"PATH=/opt/venv/bin:/usr/local/bin:/usr/bin", "VIRTUAL_ENV=/opt/venv"},
		setup: manyPythons([]string{"opt/venv", "usr/local", "usr"}, 1000)},
	{name: "trust store crafted to make PEM scanning quadratic", want: hookResultOK,
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			writeTree(t, b.rootfs, map[string]string{bundlePath: string(quadraticPEM(b.read(t, filepath.Join(b.rootfs, bundlePath)), b.ours, 7<<20))})
		},
		after: func(t *testing.T, b *hookBed, st hookStatus) {
			if merged := b.read(t, filepath.Join(b.rootfs, bundlePath)); !bytes.HasSuffix(merged, b.ours.pem) {
				t.Error("our CAs were not merged into the crafted trust store")
			}
		}},
	{name: "PKCS#12 truststore of half a million tiny bags", want: hookResultOK, env: []string{"JAVA_HOME=/opt/jdk"},
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			bags := bytes.Repeat([]byte{0x30, 0x05, 0x06, 0x01, 0x00, 0x05, 0x00}, 500_000)
			writeTree(t, b.rootfs, map[string]string{"opt/jdk/lib/security/cacerts": string(pfxOfBags(bags))})
		},
		after: wantJavaFallback},
	{name: "PKCS#12 bag whose OID has millions of arcs", want: hookResultOK, env: []string{"JAVA_HOME=/opt/jdk"},
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			oid := derOf(0x06, bytes.Repeat([]byte{0x01}, 3<<20))
			writeTree(t, b.rootfs, map[string]string{"opt/jdk/lib/security/cacerts": string(pfxOfBags(derOf(0x30, append(oid, 0x05, 0x00))))})
		},
		after: wantJavaFallback},
	{name: "thirty JVM homes with 3.5 MiB truststores", want: hookResultFailed, refused: "read budget",
		setup: func(t *testing.T, b *hookBed, _ *hostTree) {
			entries := make([]storeEntry, 2400)
			for i := range entries {
				entries[i] = storeEntry{alias: fmt.Sprintf("e%d", i), der: bytes.Repeat([]byte{byte(i)}, 1500)}
			}
			parts, err := (&javaStore{format: storeJKS, password: "changeit", entries: entries}).marshal()
			if err != nil {
				t.Fatal(err)
			}
			store := bytes.Join(parts, nil)
			first := filepath.Join(b.rootfs, "usr/lib/jvm/jdk-0/lib/security/cacerts")
			writeTree(t, b.rootfs, map[string]string{"usr/lib/jvm/jdk-0/lib/security/cacerts": string(store)})
			for i := 1; i < 30; i++ {
				p := filepath.Join(b.rootfs, fmt.Sprintf("usr/lib/jvm/jdk-%d/lib/security/cacerts", i))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Link(first, p); err != nil {
					t.Fatal(err)
				}
			}
		}},
}

// manyPythons gives each prefix n python3* directories of long names, each
// with a pip-installed certifi that serves its own bundle.
func manyPythons(prefixes []string, n int) func(t *testing.T, b *hookBed, _ *hostTree) {
	return func(t *testing.T, b *hookBed, _ *hostTree) {
		bundle := readTestdata(t, "certs/public-a.pem")
		writeTree(t, b.rootfs, map[string]string{"opt/venv/bin/python3": "#!/bin/sh\n"})
		for _, prefix := range prefixes {
			for i := range n {
				dir := filepath.Join(b.rootfs, prefix, "lib", fmt.Sprintf("python3%s%d", strings.Repeat("x", 200), i), "site-packages/certifi")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "cacert.pem"), bundle, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "core.py"), []byte("CACERT = 'cacert.pem'\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// quadraticPEM is image followed by BEGIN lines, up to size bytes, each
// beginning like one of ours and none ever ended: a scan that decodes from
// every BEGIN line that looks like ours reads to the end each time.
func quadraticPEM(image []byte, ours *caBundle, size int) []byte {
	line := "-----BEGIN CERTIFICATE-----\n" + string(ours.certs[0].b64Start) + "\n"
	return append(image, strings.Repeat(line, (size-len(image))/len(line))...)
}

// derOf encodes one DER value of a tag and content.
func derOf(tag byte, content []byte) []byte {
	n := len(content)
	if n < 0x80 {
		return append([]byte{tag, byte(n)}, content...)
	}
	var length []byte
	for ; n > 0; n >>= 8 {
		length = append([]byte{byte(n)}, length...)
	}
	return append(append([]byte{tag, 0x80 | byte(len(length))}, length...), content...)
}

// pfxOfBags is a password-less PKCS#12 file whose one safe holds the DER
// of bags, whatever they are.
func pfxOfBags(bags []byte) []byte {
	oidData := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
	dataInfo := func(content []byte) []byte {
		return derOf(0x30, append(append([]byte{}, oidData...), derOf(0xa0, derOf(0x04, content))...))
	}
	authSafe := derOf(0x30, dataInfo(derOf(0x30, bags)))
	return derOf(0x30, append([]byte{0x02, 0x01, 0x03}, dataInfo(authSafe)...))
}

// wantJavaFallback checks that a JVM whose store the hook could not merge
// gets the fallback store, through what the wrapper reads.
func wantJavaFallback(t *testing.T, b *hookBed, _ hookStatus) {
	ctx, err := readHookContext(filepath.Join(b.staging, stagedStatus))
	if err != nil || !strings.Contains(ctx.Append["JAVA_TOOL_OPTIONS"], "javax.net.ssl.trustStore=") {
		t.Errorf("the wrapper does not get the JVM fallback store: %v", err)
	}
}

// writeSpec rewrites the bundle's config.json with another root.path.
func writeSpec(t *testing.T, b *hookBed, rootPath string) {
	t.Helper()
	spec, _ := json.Marshal(specs.Spec{Version: specs.Version, Root: &specs.Root{Path: rootPath}})
	if err := os.WriteFile(filepath.Join(b.bundle, "config.json"), spec, 0o600); err != nil {
		t.Fatal(err)
	}
}

// hookRun is what one hook process did: its exit code, its log, and the
// most memory it held (which it reports itself: the rusage of a child Go
// starts with vfork counts the parent's memory too).
type hookRun struct {
	code   int
	stderr []byte
	maxRSS int64 // bytes
}

// runHookProcess runs the hook as runc does, in its own process, and fails
// the test if it does not finish on its own within the runtime's timeout.
func runHookProcess(t *testing.T, b *hookBed, args []string) hookRun {
	t.Helper()
	exe, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{"hook"}, args...)...)
	// As the plugin runs it: one P, the hook's own environment.
	hwm := filepath.Join(t.TempDir(), "hwm")
	cmd.Env = []string{asBinaryEnv + "=1", "GOMAXPROCS=1", "PATH=/usr/bin:/bin", hwmFileEnv + "=" + hwm}
	cmd.Stdin = strings.NewReader(string(b.state()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the hook ran past the runtime's 5 s timeout")
	}
	run := hookRun{stderr: stderr.Bytes()}
	if data, err := os.ReadFile(hwm); err == nil {
		run.maxRSS, _ = strconv.ParseInt(string(data), 10, 64)
	}
	if exitErr, ok := err.(*exec.ExitError); ok {
		run.code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return run
}

// The bounds every hook run keeps, whatever the image: measured on the
// hostile images below, with room for a slower machine.
const (
	// hookRSSBound is the most resident memory a hook may hold: a
	// baseline of about 10 MiB and the read budget, twice.
	hookRSSBound = 96 << 20
	// statusBound is what status.json may grow to: the wrapper reads no more.
	statusBound = 64 << 10
	// logLineBound is the longest line the hook may log.
	logLineBound = 8 << 10
)

// checkBounds fails the test if a hook run broke a bound: memory, the size
// and validity of status.json, which the wrapper must be able to read, and
// the length of its log lines.
func checkBounds(t *testing.T, b *hookBed, run hookRun) {
	t.Helper()
	t.Logf("peak RSS %.1f MiB", float64(run.maxRSS)/(1<<20))
	if run.maxRSS > hookRSSBound {
		t.Errorf("the hook held %d MiB, more than %d", run.maxRSS>>20, hookRSSBound>>20)
	}
	statusPath := filepath.Join(b.staging, stagedStatus)
	if fi, err := os.Stat(statusPath); err == nil && fi.Size() > statusBound {
		t.Errorf("status.json is %d bytes, more than %d", fi.Size(), statusBound)
	}
	if _, err := readHookContext(statusPath); err != nil {
		t.Errorf("the wrapper cannot read status.json: %v", err)
	}
	for _, line := range bytes.Split(run.stderr, []byte("\n")) {
		if len(line) > logLineBound {
			t.Errorf("the hook logged a line of %d bytes, more than %d: %.200s...", len(line), logLineBound, line)
		}
	}
}

func TestHostileImages(t *testing.T) {
	for _, a := range attacks {
		for _, policy := range []string{failOpen, failClosed} {
			t.Run(a.name+"/"+policy, func(t *testing.T) {
				host := newHostTree(t)
				b := newHookBed(t, "debian", a.env...)
				a.setup(t, b, host)
				args := b.args(policy, a.processors...)
				run := runHookProcess(t, b, args)
				code := run.code
				checkBounds(t, b, run)
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
				if a.after != nil {
					a.after(t, b, st)
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
		runHookProcess(t, b, b.args(failOpen))
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
