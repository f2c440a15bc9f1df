package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/cainjekt/cainjekt/e2e/oci"
)

const testVersion = "v0.0.0-releasetest"

// built is the image Build writes from this tree, once for the tests that
// need one.
var built struct {
	once sync.Once
	dir  string
	img  *Image
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func testImage(t *testing.T) *Image {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "cainjekt-release-test-"); built.err != nil {
			return
		}
		built.img, built.err = Build(context.Background(), Options{Src: "../..", Version: testVersion,
			Ref: "registry.example.com/cainjekt:test", Out: filepath.Join(built.dir, "image.tar")})
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.img
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CAINJEKT_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not installed (make deps)", name)
		}
		t.Skipf("%s not installed (make deps)", name)
	}
	return p
}

// qemu runs a platform's binaries where it is not this machine's:
// Debian's qemu-user.
var qemu = map[string]string{"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}

// Every binary of every platform of the image runs and says the version it
// was built as: natively on this machine's platform, under qemu-user on
// the other. Build runs none of them, so that make image needs Go alone.
func TestImageBinariesRun(t *testing.T) {
	img := testImage(t)
	layout, err := oci.ReadArchive(img.Archive)
	if err != nil {
		t.Fatal(err)
	}
	manifests, err := layout.Children(layout.Image)
	if err != nil {
		t.Fatal(err)
	}
	if len(manifests) != len(Platforms) {
		t.Fatalf("the index lists %d manifests, want one per platform", len(manifests))
	}
	for _, m := range manifests {
		t.Run(m.Platform.Architecture, func(t *testing.T) {
			dir := t.TempDir()
			unpack(t, layout, m, dir)
			var runner []string
			if m.Platform.Architecture != runtime.GOARCH {
				runner = []string{requireTool(t, qemu[m.Platform.Architecture])}
			}
			for _, file := range Files {
				cmd := append(runner, filepath.Join(dir, file), "version")
				out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
				if err != nil || !strings.Contains(string(out), testVersion) {
					t.Errorf("%s version: %v %q, want %s", file, err, out, testVersion)
				}
			}
		})
	}
}

// unpack writes the regular files of a manifest's layers to dir.
func unpack(t *testing.T, layout *oci.Layout, manifest oci.Descriptor, dir string) {
	t.Helper()
	children, err := layout.Children(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, layer := range children[1:] { // the config first
		data, err := layout.Blob(layer)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			content, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(hdr.Name)), content, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}
