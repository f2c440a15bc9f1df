package testbed

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// requireE2E skips tests that need a real node unless explicitly asked for as root.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("CAINJEKT_E2E") != "1" {
		t.Skip("real-node test: set CAINJEKT_E2E=1 (and run as root) to run it")
	}
	if os.Geteuid() != 0 {
		t.Skip("real-node test: needs root (containerd, runc, mounts, cgroups)")
	}
}

// syncBuffer collects containerd's output for dumping when the test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNodeLifecycle(t *testing.T) {
	requireE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	step := stepTimer(t)

	bins, err := EnsureBinaries(ctx, t.Logf)
	must(t, err)
	pause, err := BuildPauseImage(ctx, t.Logf)
	must(t, err)
	img, err := BuildDebianImage(ctx, DebianTestImage(), t.Logf)
	must(t, err)
	step("binaries and images")

	var logs syncBuffer
	node, err := StartNode(ctx, NodeOptions{Bins: bins, PauseImage: pause, Log: &logs})
	must(t, err)
	t.Cleanup(func() {
		if err := node.Close(); err != nil {
			t.Errorf("cleanup close: %v", err)
		}
		if t.Failed() {
			t.Logf("containerd output (tail):\n%s", tail(logs.String(), 80))
		}
	})
	must(t, node.ImportImage(ctx, img))
	step("node started, image imported")

	fresh, err := NewCA("cainjekt e2e fresh CA")
	must(t, err)
	freshSrv, err := fresh.Serve()
	must(t, err)
	defer freshSrv.Close()
	public, err := PublicCA()
	must(t, err)
	publicSrv, err := public.Serve()
	must(t, err)
	defer publicSrv.Close()

	pod, err := node.RunPod(ctx, PodSpec{Name: "curl"})
	must(t, err)
	curl := func(name, url string) ContainerSpec {
		return ContainerSpec{Name: name, Image: img.Ref, Command: []string{"curl", "-sS", url}}
	}
	// An unknown CA must be rejected (curl exit 60): the image trusts nothing by accident.
	expectRun(ctx, t, node, pod, curl("fresh-ca", freshSrv.URL), 60, "SSL certificate problem")
	// The public CA is in the image's original store.
	expectRun(ctx, t, node, pod, curl("public-ca", publicSrv.URL), 0, "ok\n")
	step("curl pods")

	sleeper, err := pod.Run(ctx, ContainerSpec{Name: "sleeper", Image: img.Ref,
		Command: []string{"sleep", "infinity"}, ReadOnlyRootfs: true})
	must(t, err)
	stdout, stderr, exit, err := node.Exec(ctx, sleeper, []string{"cat", "/etc/ssl/certs/ca-certificates.crt"}, 10*time.Second)
	must(t, err)
	if exit != 0 || stdout != string(img.OriginalBundle) {
		t.Fatalf("exec cat bundle: exit %d, stderr %q, bundle matches original: %v", exit, stderr, stdout == string(img.OriginalBundle))
	}
	step("exec")

	must(t, node.Restart(ctx))
	if _, _, exit, err := node.Exec(ctx, sleeper, []string{"true"}, 10*time.Second); err != nil || exit != 0 {
		t.Fatalf("container did not survive the containerd restart: exit %d, %v", exit, err)
	}
	pod2, err := node.RunPod(ctx, PodSpec{Name: "after-restart"})
	must(t, err)
	expectRun(ctx, t, node, pod2, ContainerSpec{Name: "echo", Image: img.Ref,
		Command: []string{"echo", "hello"}}, 0, "hello\n")
	step("restart")

	assertGoneAfterClose(t, node)
	step("close")
}

// expectRun runs c in pod and checks its exit code and that its logs contain want.
func expectRun(ctx context.Context, t *testing.T, node *Node, pod *Pod, c ContainerSpec, code int32, want string) {
	t.Helper()
	id, err := pod.Run(ctx, c)
	must(t, err)
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := node.WaitExit(waitCtx, id)
	must(t, err)
	logs, err := node.Logs(id)
	must(t, err)
	if got != code || !strings.Contains(logs, want) {
		t.Fatalf("container %s: exit %d (want %d), logs %q (want to contain %q)", c.Name, got, code, logs, want)
	}
}

// assertGoneAfterClose closes node and checks that nothing of it remains.
func assertGoneAfterClose(t *testing.T, node *Node) {
	t.Helper()
	must(t, node.Close())
	must(t, node.Close()) // a second Close is a no-op
	assertGone(t, node)
}

// assertGone checks that nothing of node remains.
func assertGone(t *testing.T, node *Node) {
	t.Helper()
	if points, err := mountsUnder(node.Dir); err != nil || len(points) > 0 {
		t.Errorf("mounts remain under %s: %v %v", node.Dir, points, err)
	}
	if pids, err := procsMentioning(node.Dir); err != nil || len(pids) > 0 {
		t.Errorf("processes mentioning %s remain: %v %v", node.Dir, pids, err)
	}
	if dirs, err := cgroupDirs(node.cgroupParent); err != nil || len(dirs) > 0 {
		t.Errorf("cgroups remain: %v %v", dirs, err)
	}
	if _, err := os.Stat(node.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", node.Dir, err)
	}
}

// A node whose owner died without Close (here: its lock released) is torn
// down by the next StartNode; a node whose owner lives is left alone.
func TestStaleNodeIsReclaimed(t *testing.T) {
	requireE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bins, err := EnsureBinaries(ctx, t.Logf)
	must(t, err)
	pause, err := BuildPauseImage(ctx, t.Logf)
	must(t, err)
	img, err := BuildDebianImage(ctx, DebianTestImage(), t.Logf)
	must(t, err)
	start := func() *Node {
		node, err := StartNode(ctx, NodeOptions{Bins: bins, PauseImage: pause})
		must(t, err)
		t.Cleanup(func() { node.Close() })
		return node
	}
	stale, live := start(), start()
	must(t, stale.ImportImage(ctx, img))
	pod, err := stale.RunPod(ctx, PodSpec{Name: "orphan"})
	must(t, err)
	_, err = pod.Run(ctx, ContainerSpec{Name: "sleeper", Image: img.Ref, Command: []string{"sleep", "infinity"}})
	must(t, err)
	must(t, syscall.Flock(int(stale.owner.Fd()), syscall.LOCK_UN)) // as if its process had died

	start() // reclaims
	assertGone(t, stale)
	if _, err := live.Runtime.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("a live node was reclaimed too: %v", err)
	}
}

func stepTimer(t *testing.T) func(string) {
	last := time.Now()
	return func(name string) {
		t.Logf("step %q took %s", name, time.Since(last).Round(time.Millisecond))
		last = time.Now()
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
