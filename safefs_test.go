package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// imageRoot opens dir as a container rootfs.
func imageRoot(t testing.TB, dir string) *safeDir {
	t.Helper()
	root, err := openImageRoot(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// writeTree creates files (path -> content) and symlinks (path -> "->target")
// below dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := bytes.CutPrefix([]byte(content), []byte("->")); ok {
			err = os.Symlink(string(target), full)
		} else {
			err = os.WriteFile(full, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// sentinel creates a file outside the rootfs and checks, at the end of the
// test, that it was not touched.
func sentinel(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "sentinel")
	if err := os.WriteFile(p, []byte("host data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		data, err := os.ReadFile(p)
		if err != nil || string(data) != "host data\n" {
			t.Errorf("host sentinel %s changed: %q, %v", p, data, err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("host directory %s gained files: %v", dir, entries)
		}
	})
	return p
}

func TestCanonicalResolvesInsideRoot(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"etc/ssl/certs/ca-certificates.crt": "bundle",
		"etc/ssl/cert.pem":                  "->certs/ca-certificates.crt",
		"etc/pki/tls/certs/ca-bundle.crt":   "->/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
		"etc/escape":                        "->../../../../../../..",
		"etc/abs-escape":                    "->/",
		"loop/a":                            "->b",
		"loop/b":                            "->a",
		"app/ca.pem":                        "not this one",
		"app/real/ca.pem":                   "this one",
		"app/real/x/keep":                   "",
		"app/link":                          "->real/x",
	})
	root := imageRoot(t, dir)
	for in, want := range map[string]string{
		"/etc/ssl/cert.pem":                      "/etc/ssl/certs/ca-certificates.crt",
		"etc/ssl/../ssl/cert.pem":                "/etc/ssl/certs/ca-certificates.crt",
		"/etc/pki/tls/certs/ca-bundle.crt":       "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
		"/etc/escape/etc/ssl/cert.pem":           "/etc/ssl/certs/ca-certificates.crt",
		"/etc/abs-escape/../../etc/ssl/cert.pem": "/etc/ssl/certs/ca-certificates.crt",
		"/../../../etc/ssl/certs":                "/etc/ssl/certs",
		"/missing/dir/file":                      "/missing/dir/file",
		"/etc/escape/tmp/" + filepath.Base(dir):  "/tmp/" + filepath.Base(dir),
		// ".." after a symlink is the parent of its target, as the kernel has it.
		"/app/link/../ca.pem": "/app/real/ca.pem",
	} {
		got, err := root.canonical(in)
		if err != nil || got != want {
			t.Errorf("canonical(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := root.canonical("/loop/a"); !errors.Is(err, unix.ELOOP) {
		t.Errorf("canonical of a symlink loop: %v, want ELOOP", err)
	}
	if _, err := root.canonical("/etc/ssl/cert.pem/more"); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("canonical through a file: %v, want ENOTDIR", err)
	}
}

func TestWriteThroughEscapingSymlinksStaysInside(t *testing.T) {
	host := sentinel(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		// Each of these, followed on the host, would land on the sentinel.
		"etc/ssl/certs/ca-certificates.crt": "->" + host,
		"etc/pki/tls/certs/ca-bundle.crt":   "->../../../../../../../../../../../../" + host,
		"etc/ssl/ca-bundle.pem":             "->/etc/hostdir/sentinel",
		"etc/hostdir":                       "->" + filepath.Dir(host),
	})
	root := imageRoot(t, dir)
	for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem"} {
		canon, err := root.canonical(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := root.mkdirAll(filepath.Dir(canon), 0o755); err != nil {
			t.Fatalf("mkdirAll for %s: %v", p, err)
		}
		got, err := root.writeFile(p, []byte("ours\n"), 0o644)
		if err != nil {
			t.Fatalf("writeFile(%s): %v", p, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, got))
		if err != nil || string(data) != "ours\n" {
			t.Errorf("%s: wrote %s inside the root = %q, %v", p, got, data, err)
		}
	}
}

func TestReadFileRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"etc/ok": "fine"})
	if err := unix.Mkfifo(filepath.Join(dir, "etc/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "etc/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "etc/big")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 2<<30); err != nil { // sparse: 2 GiB without using the disk
		t.Fatal(err)
	}
	root := imageRoot(t, dir)
	if data, _, err := root.readFile("/etc/ok", 16); err != nil || string(data) != "fine" {
		t.Fatalf("readFile regular: %q, %v", data, err)
	}
	for p, want := range map[string]error{"/etc/fifo": errNotRegular, "/etc/dir": errNotRegular, "/etc/big": errTooLarge} {
		if _, _, err := root.readFile(p, 1<<20); !errors.Is(err, want) {
			t.Errorf("readFile(%s) = %v, want %v", p, err, want)
		}
	}
}

func TestWriteFileKeepsModeAndOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"etc/bundle": "old\n"})
	p := filepath.Join(dir, "etc/bundle")
	if err := os.Chown(p, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	root := imageRoot(t, dir)
	if _, err := root.writeFile("/etc/bundle", []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o640 || sys.Uid != 1234 || sys.Gid != 5678 {
		t.Errorf("after write: mode %v owner %d:%d, want 0640 1234:5678", st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "etc"))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestWriteFileReplacesNameNotHardlinkedInode(t *testing.T) {
	host := sentinel(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A hardlink to a host file (possible only on one filesystem; the
	// temp dirs are) must not carry our write to the host.
	if err := os.Link(host, filepath.Join(dir, "etc/bundle")); err != nil {
		t.Skipf("cannot hardlink across these directories: %v", err)
	}
	root := imageRoot(t, dir)
	if _, err := root.writeFile("/etc/bundle", []byte("ours\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileRefusesNonRegularTargets(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "etc/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := imageRoot(t, dir)
	for _, p := range []string{"/etc/dir", "/etc/fifo"} {
		if _, err := root.writeFile(p, []byte("x"), 0o644); !errors.Is(err, errNotRegular) {
			t.Errorf("writeFile(%s) = %v, want errNotRegular", p, err)
		}
	}
}

func TestOwnDirFollowsNoSymlink(t *testing.T) {
	host := sentinel(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"link":     "->" + filepath.Dir(host),
		"file":     "->" + host,
		"sub/keep": "x",
	})
	own, err := openOwnDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if _, err := own.writeFile("link/sentinel", []byte("x"), 0o644); !errors.Is(err, unix.ELOOP) {
		t.Errorf("write through a symlinked dir: %v, want ELOOP", err)
	}
	if _, err := own.writeFile("file", []byte("x"), 0o644); !errors.Is(err, errNotRegular) {
		t.Errorf("write over a symlink: %v, want errNotRegular", err)
	}
	if _, _, err := own.readFile("file", 100); !errors.Is(err, unix.ELOOP) {
		t.Errorf("read through a symlink: %v, want ELOOP", err)
	}
}

func TestMkdirAllFollowsInRootSymlinks(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"var/lib/ca-certificates/pem/.keep": "",
		"etc/ssl/certs":                     "->/var/lib/ca-certificates/pem",
	})
	root := imageRoot(t, dir)
	if err := root.mkdirAll("/etc/ssl/certs/new/deeper", 0o755); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "var/lib/ca-certificates/pem/new/deeper")); err != nil || !st.IsDir() {
		t.Errorf("directory not created: %v", err)
	}
}

// A file whose attributes cannot be listed (gone since its stat) is an
// error, not a crash of the hook.
func TestReadXattrsOfAMissingFile(t *testing.T) {
	dir, err := unix.Open(t.TempDir(), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dir)
	if attrs, err := readXattrs(dir, "gone"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("readXattrs of a missing file: %v, %v", attrs, err)
	}
}

// A replaced file keeps its extended attributes: a user attribute, an ACL
// and, where the kernel lets root set it without SELinux, an SELinux label.
func TestWriteFileKeepsExtendedAttributes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bundle.crt")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"user.cainjekt-test": "kept"}
	if err := unix.Setxattr(p, "user.cainjekt-test", []byte("kept"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	if err := unix.Setxattr(p, "security.selinux", []byte("system_u:object_r:cert_t:s0"), 0); err == nil {
		want["security.selinux"] = "system_u:object_r:cert_t:s0"
	}
	root := imageRoot(t, dir)
	if _, err := root.writeFile("/bundle.crt", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, value := range want {
		got := make([]byte, 256)
		n, err := unix.Getxattr(p, name, got)
		if err != nil || string(got[:n]) != value {
			t.Errorf("%s after the write: %q, %v; want %q", name, got[:max(n, 0)], err, value)
		}
	}
	if data, _ := os.ReadFile(p); string(data) != "new" {
		t.Errorf("content %q", data)
	}
}

// writeFileAs gives the file exactly the attributes asked for, whatever
// the file it replaces had.
func TestWriteFileAsSetsItsAttributes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	own, err := openOwnDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if err := own.writeFileAs("f", fileAttrs{mode: 0o640, uid: 0, gid: 4242}, []byte("new")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o640 || st.Gid != 4242 {
		t.Errorf("mode %o gid %d, want 640 and 4242", fi.Mode().Perm(), st.Gid)
	}
}

// Reads below an image draw on one budget: once spent, reads fail, saying
// so, however small the file.
func TestImageReadBudget(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a": strings.Repeat("a", 1000), "b": "bb"})
	root := imageRoot(t, dir)
	root.budget.bytes = 1001
	if _, _, err := root.readFile("/a", 4096); err != nil {
		t.Fatal(err)
	}
	if _, _, err := root.readFile("/b", 4096); !errors.Is(err, errBudget) || !strings.Contains(err.Error(), "read budget") {
		t.Errorf("read past the budget: %v", err)
	}
}

// readDir examines a directory in batches: it stops at max kept names, or
// when the image's budget of entries is spent, with an error that says so,
// after examining at most a batch more than the budget.
func TestReadDirIsBounded(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("python3.%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := imageRoot(t, dir)
	isPython := func(n string) bool { return strings.HasPrefix(n, "python3") }
	names, err := root.readDir("/", isPython, 8)
	if len(names) != 8 || err == nil || !strings.Contains(err.Error(), "stopped at more than 8") {
		t.Errorf("max 8: %d names, %v", len(names), err)
	}
	root.budget.entries = 1000
	_, err = root.readDir("/", nil, math.MaxInt)
	if !errors.Is(err, errBudget) || root.budget.entries < -dirBatch {
		t.Errorf("budget of 1000 entries: %v, %d left", err, root.budget.entries)
	}
	if names, err := root.readDir("/", isPython, 8); len(names) != 0 || !errors.Is(err, errBudget) {
		t.Errorf("a spent budget must stop the next listing at once: %d names, %v", len(names), err)
	}
}
