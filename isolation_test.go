package main

// What one container gets must never depend on what another container did,
// of any pod, of the same image or not: no state is shared between them.
// These tests run containers of one image on one node, a hostile pod's
// among them, tamper with whatever the dynamic CA root holds besides each
// container's own staging (as another container's hook, or a root attacker,
// could leave it), and check that each container is injected exactly as it
// is alone on a node. They were written against the image cache of earlier
// versions (its plans and blobs, 4bd10c4), which they find broken.

import (
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// olderImageArg is the argument with which the plugins of the versions that
// had an image cache named the image to the hook; the hook ignores it now.
var olderImageArg = []string{"--image", "sha256:" + strings.Repeat("1", 64)}

// injected is what a container got: the trust files of its image as the
// hook left them, and its staged files, by path.
func injected(t *testing.T, b *hookBed) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, p := range []string{
		"rootfs/etc/ssl/certs/ca-certificates.crt",
		"rootfs/usr/local/share/ca-certificates/cainjekt.crt",
		"staging/" + stagedCA,
		"staging/" + stagedBundle,
	} {
		dir, name, _ := strings.Cut(p, "/")
		data, err := os.ReadFile(filepath.Join(map[string]string{"rootfs": b.rootfs, "staging": b.staging}[dir], name))
		if err != nil {
			t.Errorf("container %s: %v", b.id[:8], err)
		}
		got[p] = string(data)
	}
	return got
}

// nthID is the n-th of sixteen container IDs.
func nthID(n int) string { return strings.Repeat(string("0123456789abcdef"[n]), 64) }

// runInjected runs the hook on b, which must inject it.
func runInjected(t *testing.T, b *hookBed, env ...string) {
	t.Helper()
	if code := runHook(append(b.args(failClosed), olderImageArg...), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		st, _ := b.status(t)
		t.Fatalf("container %s: exit %d: %v", b.id[:8], code, st.Errors)
	}
}

// shared lists the regular files of the dynamic CA root outside the
// containers' own staging directories.
func shared(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			t.Fatal(err)
		case d.IsDir() && p != root && filepath.Dir(p) == root && validContainerID(d.Name()):
			return filepath.SkipDir
		case d.Type().IsRegular() && d.Name() != lockName:
			files = append(files, p)
		}
		return nil
	})
	return files
}

func TestNoContainerDependsOnAnother(t *testing.T) {
	alone := newHookBed(t, "debian")
	runInjected(t, alone)
	want := injected(t, alone)

	node := newHookBed(t, "debian")
	var victims []*hookBed
	for i := range 4 {
		victims = append(victims, node.sibling(t, nthID(i)))
	}
	// A hostile pod of the same image mounts a volume below the path of
	// the anchor file: runc makes the mount point, a directory where the
	// hook creates the file, and the hook fails on it every time.
	hostile := node.sibling(t, nthID(9))
	if err := os.MkdirAll(filepath.Join(hostile.rootfs, "usr/local/share/ca-certificates/cainjekt.crt/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostile.mount(t, "/usr/local/share/ca-certificates/cainjekt.crt/x", t.TempDir())

	runHook(append(hostile.args(failOpen), olderImageArg...), strings.NewReader(string(hostile.state())), io.Discard, io.Discard)
	runInjected(t, victims[0])
	// Whatever is shared, half removed, as the hostile pod's next container
	// dropping it at the same time would leave it: the data of the anchor
	// file gone first.
	for _, p := range shared(t, node.dynamicRoot) {
		if data, _ := os.ReadFile(p); string(data) == string(node.ours.pem) {
			os.Remove(p)
		}
	}
	runInjected(t, victims[1])
	runInjected(t, victims[2])
	// Whatever is shared, rewritten by root to name a file outside the
	// dynamic CA root.
	sentinel := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(sentinel, []byte("the host's"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A path that climbs out of a directory, or names the file absolutely.
	outside := "/" + strings.Repeat("../", 32) + strings.TrimPrefix(sentinel, "/")
	for _, p := range shared(t, node.dynamicRoot) {
		var v any
		if data, err := os.ReadFile(p); err == nil && json.Unmarshal(data, &v) == nil {
			data, _ := json.Marshal(renamePaths(v, outside))
			os.WriteFile(p, data, 0o600)
		}
	}
	runInjected(t, victims[3])

	if data, _ := os.ReadFile(sentinel); string(data) != "the host's" {
		t.Errorf("a file outside the dynamic CA root was replaced: %q", data)
	}
	for i, v := range victims {
		got := injected(t, v)
		for p, w := range want {
			if got[p] != w {
				t.Errorf("container %d: %s is not what a container of the image gets alone on a node", i, p)
			}
		}
		st, _ := v.status(t)
		if st.Result != hookResultOK {
			t.Errorf("container %d: result %q", i, st.Result)
		}
	}
	checkNothingShared(t, node, append(victims, hostile))
}

// renamePaths sets every "path" of a JSON value to p.
func renamePaths(v any, p string) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if _, ok := e.(string); ok && k == "path" {
				v[k] = p
			} else {
				v[k] = renamePaths(e, p)
			}
		}
	case []any:
		for i, e := range v {
			v[i] = renamePaths(e, p)
		}
	}
	return v
}

// Containers of one image that differ in a variable the injection reads
// are injected apart, and leave nothing behind but their own staging:
// no container of a pod can fill the node's /run.
func TestContainersLeaveNothingShared(t *testing.T) {
	node := newHookBed(t, "debian")
	var beds []*hookBed
	for i := range 8 {
		beds = append(beds, node.sibling(t, nthID(i), "JAVA_HOME=/opt/jdk-"+nthID(i)[:1]))
	}
	for _, b := range beds {
		runInjected(t, b)
	}
	checkNothingShared(t, node, beds)
}

// checkNothingShared fails the test if the dynamic CA root holds anything
// outside the containers' staging directories, or a staged file shares its
// inode with another file: its link count would tell a container how many
// others run the image.
func checkNothingShared(t *testing.T, node *hookBed, beds []*hookBed) {
	t.Helper()
	if files := shared(t, node.dynamicRoot); len(files) > 0 {
		var size int64
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				size += fi.Size()
			}
		}
		t.Errorf("%d files (%d bytes) in the dynamic CA root outside the containers' staging", len(files), size)
	}
	for _, b := range beds {
		entries, _ := os.ReadDir(b.staging)
		for _, e := range entries {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(b.staging, e.Name()), &st); err == nil && st.Nlink != 1 {
				t.Errorf("container %s: %s has %d links", b.id[:8], e.Name(), st.Nlink)
			}
		}
	}
}

// A staged copy of the container's own trust is no more reachable than
// the trust store it copies, in the image or in a pod's volume, with the
// directories above it: a bundle kept from other users by a directory
// stays kept from them at /etc/cainjekt.
func TestStagedTrustIsNoMoreReachableThanItsSource(t *testing.T) {
	podBundle := readTestdata(t, "certs/public-b.pem")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, b *hookBed)
		mode  os.FileMode
	}{
		{"image bundle below a 0750 directory", func(t *testing.T, b *hookBed) {
			os.Chmod(filepath.Join(b.rootfs, "etc/ssl/certs"), 0o750)
		}, 0o640},
		{"image bundle below a 0700 directory of another owner", func(t *testing.T, b *hookBed) {
			os.Chown(filepath.Join(b.rootfs, "etc/ssl"), 4242, 4242)
			os.Chmod(filepath.Join(b.rootfs, "etc/ssl"), 0o700)
		}, 0},
		{"volume directory 0700", func(t *testing.T, b *hookBed) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "ca-certificates.crt"), podBundle, 0o644)
			os.Chmod(dir, 0o700)
			b.mount(t, "/etc/ssl/certs", dir)
		}, 0o600},
		{"volume file under a host directory the container does not see", func(t *testing.T, b *hookBed) {
			dir := filepath.Join(t.TempDir(), "private")
			os.Mkdir(dir, 0o700)
			os.WriteFile(filepath.Join(dir, "bundle.crt"), podBundle, 0o644)
			b.mount(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(dir, "bundle.crt"))
		}, 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newHookBed(t, "debian")
			tc.setup(t, b)
			runInjected(t, b)
			for _, name := range []string{stagedBundle, stagedImageTrust} {
				if fi, err := os.Stat(filepath.Join(b.staging, name)); err != nil || fi.Mode().Perm() != tc.mode {
					t.Errorf("%s: %v, mode %v; want %v", name, err, fi.Mode().Perm(), tc.mode)
				}
			}
		})
	}
}
