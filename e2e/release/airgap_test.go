package release

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cainjekt/cainjekt/e2e/oci"
	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// oldestGo is the oldest Go docs/operations.md promises to build with:
// any Go 1.26 release.
const oldestGo = "go1.26.0"

// nobody builds as a user who is not root, where the test runs as root.
const nobody = 65534

// docs/operations.md's "Air-gapped builds", end to end, in a copy of the
// tree: on a connected machine, go mod vendor; then as the air-gapped one,
// with the oldest Go 1.26, nothing else on PATH but make, no module cache,
// GOPROXY=off and GOFLAGS=-mod=vendor, as a user who is not root: make
// build, make image, and make push to a registry of its own (Debian's
// docker-registry), which then serves the image, with deploy/ pointed at
// it. Run by make vendor-check: it fetches Go 1.26.0 once, into the test
// bed's cache.
func TestAirGappedBuild(t *testing.T) {
	if os.Getenv("CAINJEKT_AIRGAP") != "1" {
		t.Skip("make vendor-check runs it (CAINJEKT_AIRGAP=1)")
	}
	requireTool(t, "docker-registry")
	makeBin := requireTool(t, "make")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "cainjekt-airgap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o755); err != nil { // for nobody
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "src")
	copyTree(t, "../..", src)

	// The connected machine.
	run(t, exec.CommandContext(ctx, "go", "mod", "vendor"), src)
	goBin := fetchGo(t, ctx, oldestGo)

	// The air-gapped machine: its PATH holds Go and make, nothing else.
	tools := filepath.Join(tmp, "tools")
	if err := os.Mkdir(tools, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(makeBin, filepath.Join(tools, "make")); err != nil {
		t.Fatal(err)
	}
	home, modcache := filepath.Join(tmp, "home"), filepath.Join(tmp, "modcache")
	for _, dir := range []string{home, modcache} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	gocache := buildCache(t)
	env := []string{"PATH=" + filepath.Dir(goBin) + ":" + tools, "HOME=" + home, "GOCACHE=" + gocache, "GOMODCACHE=" + modcache,
		"GOPROXY=off", "GOFLAGS=-mod=vendor", "GOTOOLCHAIN=local"}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
		for _, dir := range []string{src, home, modcache} {
			chownTree(t, dir)
		}
	}
	offline := func(args ...string) string {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return run(t, cmd, src)
	}

	const version = "v0.0.0-airgap"
	offline("make", "build", "VERSION="+version)
	if out := run(t, exec.Command("go", "version", filepath.Join(src, "bin", "cainjekt")), src); !strings.Contains(out, ": "+oldestGo+"\n") {
		t.Errorf("bin/cainjekt was not built with %s: %s", oldestGo, out)
	}
	offline("make", "image", "VERSION="+version)

	regDir := filepath.Join(tmp, "registry")
	if err := os.Mkdir(regDir, 0o755); err != nil {
		t.Fatal(err)
	}
	reg, err := testbed.StartRegistry(ctx, regDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	offline("make", "push", "VERSION="+version, "REGISTRY="+reg.Addr+"/internal", "TAG=airgap")

	layout, err := oci.ReadArchive(filepath.Join(src, "bin", "cainjekt-image.tar"))
	if err != nil {
		t.Fatal(err)
	}
	index := getManifest(t, reg.Addr, "internal/cainjekt", "airgap", oci.MediaTypeIndex, "")
	if got := oci.DataBlob(oci.MediaTypeIndex, index).Digest; got != layout.Image.Digest {
		t.Errorf("the registry serves index %s, make image wrote %s", got, layout.Image.Digest)
	}
	kustomization, err := os.ReadFile(filepath.Join(src, "deploy", "base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "  digest: " + layout.Image.Digest + "\n"; !strings.Contains(string(kustomization), want) {
		t.Errorf("deploy/base/kustomization.yaml does not name the pushed image:\n%s", kustomization)
	}
	if entries, err := os.ReadDir(modcache); err != nil || len(entries) > 0 {
		t.Errorf("the module cache holds %d entries (%v): something was fetched", len(entries), err)
	}
}

// run runs cmd in dir and returns its output, failing the test on error.
func run(t *testing.T, cmd *exec.Cmd, dir string) string {
	t.Helper()
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	t.Logf("%s: ok", strings.Join(cmd.Args, " "))
	return string(out)
}

// copyTree copies the files git tracks of the repository at root to dir,
// as a checkout has them.
func copyTree(t *testing.T, root, dir string) {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		info, err := os.Lstat(filepath.Join(root, name))
		if os.IsNotExist(err) {
			continue // deleted in the worktree
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if info.Mode()&os.ModeSymlink != 0 { // the fixtures' symlinks, as they are
			target, err := os.Readlink(filepath.Join(root, name))
			if err == nil {
				err = os.Symlink(target, filepath.Join(dir, name))
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// fetchGo returns the go command of a Go release, which the go command
// fetches as a module from the Go module proxy (GOTOOLCHAIN) into a module
// cache: the test bed's where the build runs as nobody, who must read it,
// the user's own otherwise.
func fetchGo(t *testing.T, ctx context.Context, release string) string {
	t.Helper()
	cache := strings.TrimSpace(run(t, exec.Command("go", "env", "GOMODCACHE"), "."))
	if os.Geteuid() == 0 {
		cache = filepath.Join(testbed.CacheDir(), "go-toolchains")
	}
	cmd := exec.CommandContext(ctx, "go", "version")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+release, "GOMODCACHE="+cache)
	run(t, cmd, os.TempDir())
	return filepath.Join(cache, "golang.org", "toolchain@v0.0.1-"+release+"."+runtime.GOOS+"-"+runtime.GOARCH, "bin", "go")
}

// buildCache is the air-gapped build's Go build cache, kept between runs:
// it never stands in for a missing source file, and a cold one costs
// minutes. nobody's lives in the test bed's cache.
func buildCache(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		out, err := exec.Command("go", "env", "GOCACHE").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	dir := filepath.Join(testbed.CacheDir(), "go-build-nobody")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// What nobody writes there is nobody's.
	if err := os.Lchown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return dir
}

func chownTree(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, nobody, nobody)
	})
	if err != nil {
		t.Fatal(err)
	}
}
