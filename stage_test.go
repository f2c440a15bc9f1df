//go:build !hookonly

package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func newTestStager(t testing.TB) (*stager, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "run", "containers")
	s, err := openStager(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, root
}

func TestValidContainerID(t *testing.T) {
	for id, want := range map[string]bool{
		testID:                  true,
		strings.ToUpper(testID): false,
		testID[:63]:             false,
		testID + "0":            false,
		"../" + testID[3:]:      false,
		testID[:60] + "/../":    false,
		"":                      false,
		strings.Repeat("g", 64): false,
		testID[:63] + "\x00":    false,
	} {
		if validContainerID(id) != want {
			t.Errorf("validContainerID(%q) = %v", id, !want)
		}
	}
}

func TestStageWritesTheLayoutWithItsModes(t *testing.T) {
	s, root := newTestStager(t)
	dir, err := s.stage(testID, []byte("ca"), []byte("bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(root, testID) {
		t.Errorf("staged at %s", dir)
	}
	for p, mode := range map[string]os.FileMode{
		root:                             0o700 | os.ModeDir,
		dir:                              0o755 | os.ModeDir,
		filepath.Join(dir, stagedCA):     0o644,
		filepath.Join(dir, stagedBundle): 0o644,
	} {
		st, err := os.Stat(p)
		if err != nil || st.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode(), err, mode)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, stagedBundle)); string(data) != "bundle" {
		t.Errorf("bundle.pem = %q", data)
	}
	ids, err := s.list()
	if err != nil || !slices.Equal(ids, []string{testID}) {
		t.Errorf("list = %v, %v", ids, err)
	}
	if err := s.remove(testID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("staging not removed: %v", err)
	}
}

func TestStageRefusesBadIDsAndPlantedSymlinks(t *testing.T) {
	host := sentinel(t)
	s, root := newTestStager(t)
	if _, err := s.stage("../../etc", []byte("ca"), nil); err == nil {
		t.Error("staged for a path-like ID")
	}
	// A symlink planted where a container's directory will go.
	if err := os.Symlink(filepath.Dir(host), filepath.Join(root, testID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.stage(testID, []byte("ca"), []byte("bundle")); err == nil {
		t.Error("staged through a planted symlink")
	}
	if err := s.remove(testID); err != nil {
		t.Fatalf("removing the planted symlink: %v", err)
	}
}

func TestOpenStagerRestrictsTheRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "containers")
	if err := os.Mkdir(root, 0o755); err != nil { // as a hostPath volume creates it
		t.Fatal(err)
	}
	s, err := openStager(root)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if st, _ := os.Stat(root); st.Mode().Perm() != 0o700 {
		t.Errorf("root mode %v, want 0700", st.Mode().Perm())
	}
}

func TestLockRefusesASecondInstance(t *testing.T) {
	s, root := newTestStager(t)
	if err := s.lock(); err != nil {
		t.Fatal(err)
	}
	// flock is per open file description: a second open, as a second process
	// would make, must be refused.
	other, err := openStager(root)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.lock(); err == nil || !strings.Contains(err.Error(), "refusing to run twice") {
		t.Errorf("second lock: %v", err)
	}
}

// A refresh whose deadline passed gives up before it writes, and leaves
// the container's files as they were.
func TestRefreshGivesUpAtItsDeadline(t *testing.T) {
	s, root := newTestStager(t)
	if _, err := s.stage(testID, []byte("old ca"), []byte("old bundle")); err != nil {
		t.Fatal(err)
	}
	ours := corpBundle(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.refresh(ctx, testID, &trustSet{ours: ours, noTrust: ours.pem})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("refresh past its deadline: %v", err)
	}
	for name, want := range map[string]string{stagedCA: "old ca", stagedBundle: "old bundle"} {
		if data, _ := os.ReadFile(filepath.Join(root, testID, name)); string(data) != want {
			t.Errorf("%s changed to %q", name, data)
		}
	}
}

// removeAll of a tree holding a symlink to the host removes the link only.
func TestRemoveAllFollowsNoSymlink(t *testing.T) {
	host := sentinel(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"sub/keep": "x", "sub/hostlink": "->" + filepath.Dir(host)})
	own, err := openOwnDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if err := own.removeAll("sub"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("sub still there: %v", err)
	}
	if _, err := os.Stat(host); err != nil {
		t.Errorf("the host's file: %v", err)
	}
}
