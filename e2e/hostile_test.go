package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// A hostile image on the real node: its trust store is a symlink to a file
// of the node, its os-release a FIFO. The node's file stays as it was; the
// pod starts under fail-open and does not under fail-closed.
func testHostileImageOnTheNode(t *testing.T) {
	track(t)
	ctx := testContext(t)
	sentinel := []byte("the node's own file\n")
	if err := os.MkdirAll(filepath.Dir(testbed.HostileSentinel), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(testbed.HostileSentinel, sentinel, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		data, err := os.ReadFile(testbed.HostileSentinel)
		if err != nil || string(data) != string(sentinel) {
			t.Errorf("the node's file behind the image's symlink changed: %q, %v", data, err)
		}
		os.RemoveAll(filepath.Dir(testbed.HostileSentinel))
	})

	open := pod(t, ctx, "hostile-fail-open", optIn())
	id, err := open.Run(ctx, testbed.ContainerSpec{Name: "app", Image: bed.hostile.Ref, Command: []string{"/tlsget", bed.server.URL}})
	if err != nil {
		t.Fatalf("fail-open: the container did not start: %v", err)
	}
	if st := stagedStatus(t, id); st.Result != "failed" {
		t.Errorf("fail-open: hook result %q, want failed", st.Result)
	}

	restoreMainPlugin(t)
	if _, err := startPlugin(ctx, bed.caFile, "--fail-policy", "fail-closed"); err != nil {
		t.Fatal(err)
	}
	closed := pod(t, ctx, "hostile-fail-closed", optIn())
	_, err = closed.Run(ctx, testbed.ContainerSpec{Name: "app", Image: bed.hostile.Ref, Command: []string{"/tlsget", bed.server.URL}})
	if err == nil || !strings.Contains(err.Error(), "createRuntime hook") {
		t.Errorf("fail-closed: the container started, or failed for another reason: %v", err)
	}
}
