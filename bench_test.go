//go:build !hookonly

package main

// Benchmarks of the hot paths: run with `go test -bench . -benchmem`.
// testdata/bench/public-150.pem stands for an image's bundle: 150 RSA-2048
// roots, about the size of the Mozilla bundle.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threeCAs is the injected bundle of the benchmarks: root, proxy and one more.
func threeCAs(b *testing.B) *caBundle {
	pemData := append(readTestdata(b, "certs/corp-root.pem"), readTestdata(b, "certs/corp-second.pem")...)
	pemData = append(pemData, readTestdata(b, "certs/public-c.pem")...)
	ours, _, err := parseCABundle(pemData)
	if err != nil {
		b.Fatal(err)
	}
	return ours
}

func BenchmarkParseCABundle(b *testing.B) {
	data := readTestdata(b, "bench/public-150.pem")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := parseCABundle(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMergeBundle(b *testing.B) {
	image := readTestdata(b, "bench/public-150.pem")
	ours := threeCAs(b)
	b.SetBytes(int64(len(image)))
	for b.Loop() {
		if _, added := mergeBundle(image, ours); added != 3 {
			b.Fatalf("added %d", added)
		}
	}
}

// benchRootfs is the Debian fixture with the bench bundle and runtimes.
func benchRootfs(b *testing.B) *safeDir {
	dir := copyTree(b, "testdata/rootfs/debian")
	writeTree(b, dir, map[string]string{"/etc/ssl/certs/ca-certificates.crt": string(readTestdata(b, "bench/public-150.pem"))})
	addRuntimes(b, dir, "cacerts.jks")
	return imageRoot(b, dir)
}

func BenchmarkDetect(b *testing.B) {
	root := benchRootfs(b)
	env := []string{runtimesPATH}
	for b.Loop() {
		root.budget = newImageBudget() // each container's hook run has its own
		_, fam, err := detectDistro(root)
		if err != nil || fam.name != "debian" {
			b.Fatal(fam.name, err)
		}
		uniqueFiles(root, bundleCandidates(fam))
		certifiBundles(&injection{root: root, env: env})
		javaStores(&injection{root: root, env: env})
	}
}

func BenchmarkStage(b *testing.B) {
	st, err := openStager(filepath.Join(b.TempDir(), "containers"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ours := threeCAs(b)
	for b.Loop() {
		if _, err := st.stage(testID, ours.pem, ours.pem); err != nil {
			b.Fatal(err)
		}
		if err := st.remove(testID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHook is the hook's work on one container, as runc runs it, in a
// process of its own: the OS store, the staged bundle, certifi and a JVM's
// cacerts. Each round starts from the image as built, as a container does.
func BenchmarkHook(b *testing.B) {
	bed := newHookBed(b, "debian", runtimesPATH)
	writeTree(b, bed.rootfs, map[string]string{"/etc/ssl/certs/ca-certificates.crt": string(readTestdata(b, "bench/public-150.pem"))})
	addRuntimes(b, bed.rootfs, "cacerts.jks")
	pristine := bed.rootfs + ".pristine"
	copyDir(b, bed.rootfs, pristine)
	args, state, bin := bed.args(failClosed), string(bed.state()), hookBinary(b)
	for b.Loop() {
		b.StopTimer()
		copyDir(b, pristine, bed.rootfs)
		bed.restage(b)
		b.StartTimer()
		runHookBinary(b, bin, args, state)
	}
}

// restage makes the bed's staging anew, as the plugin stages it for a new
// container.
func (bed *hookBed) restage(b *testing.B) {
	if err := os.RemoveAll(bed.staging); err != nil {
		b.Fatal(err)
	}
	if err := os.Mkdir(bed.staging, 0o755); err != nil {
		b.Fatal(err)
	}
	writeTree(b, bed.staging, map[string]string{stagedCA: string(bed.ours.pem), stagedBundle: string(bed.prefill)})
}

// runHookBinary runs cainjekt-hook, built from this tree, as the plugin
// makes runc run it: a process of its own, with one P. Its memory is then
// a process's to fault in once, which an in-process run would not show.
func runHookBinary(b *testing.B, bin string, args []string, state string) {
	cmd := exec.Command(bin, append([]string{"hook"}, args...)...)
	cmd.Env = []string{"GOMAXPROCS=1", "PATH=/usr/bin:/bin"}
	cmd.Stdin = strings.NewReader(state)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("hook: %v: %s", err, out)
	}
}

var builtHook = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "cainjekt-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cainjekt-hook")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "hookonly", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build cainjekt-hook: %v: %s", err, out)
	}
	return bin, nil
})

// hookBinary is cainjekt-hook built once for the benchmarks.
func hookBinary(b *testing.B) string {
	bin, err := builtHook()
	if err != nil {
		b.Fatal(err)
	}
	return bin
}

func BenchmarkCreateContainerUnannotated(b *testing.B) {
	p, _ := newTestPlugin(b, failOpen, readTestdata(b, "certs/corp-root.pem"))
	pod := podWith(map[string]string{"kubernetes.io/config.seen": "2026-11-23T16:00:00Z", "kubernetes.io/config.source": "api"})
	ctr := container(testID, "app")
	for b.Loop() {
		if adj, _, _ := p.CreateContainer(context.Background(), pod, ctr); adj != nil {
			b.Fatal("adjusted")
		}
	}
}

func BenchmarkCreateContainerAnnotated(b *testing.B) {
	p, _ := newTestPlugin(b, failOpen, readTestdata(b, "certs/corp-root.pem"))
	pod := optedIn(nil)
	ctr := container(testID, "app")
	ctx := context.Background()
	for b.Loop() {
		if adj, _, _ := p.CreateContainer(ctx, pod, ctr); adj == nil {
			b.Fatal("not adjusted")
		}
		p.RemoveContainer(ctx, pod, ctr)
		p.drain()
	}
}

// copyDir replaces dst with a copy of src, symlinks and modes kept.
func copyDir(b *testing.B, src, dst string) {
	if err := os.RemoveAll(dst); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v %s", err, out)
	}
}

// BenchmarkHookFatImage is the hook's work on a fat image: a JDK, a
// virtualenv with a pip-installed certifi, Node, and the OS bundle, such as
// the root filesystem of the e2e runtimes image (CAINJEKT_BENCH_ROOTFS
// names it; make bench extracts it). Each round mounts a fresh overlay on
// it, as runc gives a container, and runs the hook as runc does. Needs root.
func BenchmarkHookFatImage(b *testing.B) {
	lower := os.Getenv("CAINJEKT_BENCH_ROOTFS")
	if lower == "" || os.Geteuid() != 0 {
		b.Skip("CAINJEKT_BENCH_ROOTFS names no root filesystem, or not root")
	}
	bed := newHookBed(b, "scratch", "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	// The staging on tmpfs, as /run is on a node: on ext4 a file renamed
	// over another has its data written out first.
	shm, err := os.MkdirTemp("/dev/shm", "cainjekt-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	bed.dynamicRoot, bed.staging = shm, filepath.Join(shm, bed.id)
	args, state, bin := bed.args(failClosed), string(bed.state()), hookBinary(b)
	for b.Loop() {
		b.StopTimer()
		upper := filepath.Join(b.TempDir(), "upper")
		work := filepath.Join(filepath.Dir(upper), "work")
		os.Mkdir(upper, 0o755)
		os.Mkdir(work, 0o755)
		if err := unix.Mount("overlay", bed.rootfs, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
			b.Fatal(err)
		}
		bed.restage(b)
		b.StartTimer()
		runHookBinary(b, bin, args, state)
		b.StopTimer()
		unix.Unmount(bed.rootfs, 0)
		b.StartTimer()
	}
}
