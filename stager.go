//go:build !hookonly

package main

// The plugin's half of the staging contract (stage.go): it creates each
// injected container's staging directory, refreshes its trust files when
// the CAs rotate, reads the hook's status, and removes the directory with
// the container. It also holds the node's single-instance lock.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// stager owns the dynamic CA root.
type stager struct {
	dir  *safeDir
	path string
}

// openStager creates the dynamic CA root if needed and makes sure only root
// can enter it.
func openStager(root string) (*stager, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create dynamic CA root: %w", err)
	}
	dir, err := openOwnDir(root)
	if err != nil {
		return nil, fmt.Errorf("dynamic CA root: %w", err)
	}
	if err := restrictDir(dir.fd, root); err != nil {
		dir.Close()
		return nil, err
	}
	return &stager{dir: dir, path: root}, nil
}

// restrictDir makes sure the directory belongs to us and is 0700. A directory
// created by a hostPath volume is 0755; one owned by another user is refused.
func restrictDir(fd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("dynamic CA root %s belongs to uid %d, not to us (uid %d)", name, st.Uid, os.Geteuid())
	}
	if st.Mode&0o777 == 0o700 {
		return nil
	}
	// fchmod does not work on an O_PATH descriptor; go through /proc.
	if err := os.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), 0o700); err != nil {
		return fmt.Errorf("restrict %s to 0700: %w", name, err)
	}
	return nil
}

// Close releases the root.
func (s *stager) Close() error { return s.dir.Close() }

// lock takes the node-wide single-instance lock in the dynamic CA root and
// holds it until the process exits (its descriptor stays open). Two plugins
// with one name would both be accepted by containerd and then make every
// CreateContainer fail.
func (s *stager) lock() error {
	name := path.Join(s.path, lockName)
	fd, err := unix.Openat(s.dir.fd, lockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open lock %s: %w", name, err)
	}
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return nil
	}
	unix.Close(fd)
	if err == unix.EWOULDBLOCK {
		return fmt.Errorf("another cainjekt plugin holds %s: refusing to run twice on one node", name)
	}
	return fmt.Errorf("lock %s: %w", name, err)
}

// lockHeld says whether a plugin holds the lock in the dynamic CA root,
// for cainjekt doctor: it creates no lock file, and takes the lock, shared,
// only for as long as it asks.
func lockHeld(root string) (bool, error) {
	name := path.Join(root, lockName)
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open lock %s: %w", name, err)
	}
	defer unix.Close(fd)
	switch err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err {
	case nil:
		return false, nil
	case unix.EWOULDBLOCK:
		return true, nil
	default:
		return false, fmt.Errorf("lock %s: %w", name, err)
	}
}

// stage writes a container's staging directory and returns its host path.
func (s *stager) stage(id string, ca, bundle []byte) (string, error) {
	if !validContainerID(id) {
		return "", fmt.Errorf("refusing to stage for container ID %q: not 64 hex digits", id)
	}
	if err := s.dir.mkdir(id, 0o755); err != nil {
		return "", err
	}
	for name, data := range map[string][]byte{stagedCA: ca, stagedBundle: bundle} {
		if _, err := s.dir.writeFile(path.Join(id, name), data, 0o644); err != nil {
			return "", err
		}
	}
	return path.Join(s.path, id), nil
}

// remove deletes a container's staging directory; a missing one is fine.
func (s *stager) remove(id string) error {
	if !validContainerID(id) {
		return fmt.Errorf("refusing to remove staging for container ID %q", id)
	}
	return s.dir.removeAll(id)
}

// list returns the container IDs that have a staging directory.
func (s *stager) list() ([]string, error) {
	names, err := s.dir.readDirNames(".")
	if err != nil {
		return nil, err
	}
	ids := names[:0]
	for _, n := range names {
		if validContainerID(n) {
			ids = append(ids, n)
		}
	}
	return ids, nil
}

// readStatus reads the status the hook left for a container; it returns
// nil, nil when the hook has not written one.
func (s *stager) readStatus(id string) (*hookStatus, error) {
	var st hookStatus
	err := readJSON(s.dir, path.Join(id, stagedStatus), maxStatusSize, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// refresh rewrites the trust files of a running container's staging for a
// new CA bundle: ca.pem, bundle.pem rebuilt from image-trust.pem, the
// container's own trust as its hook staged it (none: what the plugin
// stages for a container without trust), and the JVM fallback store if the
// hook made one. Programs that read these files per connection or per
// process trust the new CAs, and no longer the removed ones, without a
// restart. The container's own trust is the image's to choose: merging
// into it takes time linear in its size (at most maxBundleSize), and ctx's
// deadline is checked before each file is written.
func (s *stager) refresh(ctx context.Context, id string, set *trustSet) error {
	if !validContainerID(id) {
		return fmt.Errorf("refusing to refresh staging for container ID %q", id)
	}
	dir, err := s.dir.sub(id)
	if err != nil {
		return err
	}
	defer dir.Close()
	own, _, err := dir.readFile(stagedImageTrust, maxBundleSize)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	bundle := trustFor(own, set.ours, set.noTrust)
	// Each file keeps the access the hook gave it (writeFile).
	steps := []func() error{
		func() error { _, err := dir.writeFile(stagedCA, set.ours.pem, 0o644); return err },
		func() error { _, err := dir.writeFile(stagedBundle, bundle, 0o644); return err },
		func() error {
			if _, _, err := dir.stat(stagedJavaStore); err != nil {
				return nil
			}
			store, err := fallbackStore(bundle)
			if err == nil {
				_, err = dir.write(stagedJavaStore, 0o644, nil, store...)
			}
			return err
		},
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("refresh of %s: %w", id, err)
		}
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// trustFor merges ours into a container's own trust, or gives noTrust to
// one that had none.
func trustFor(own []byte, ours *caBundle, noTrust []byte) []byte {
	if len(own) == 0 {
		return noTrust
	}
	merged, _ := mergeBundle(own, ours)
	return merged
}

// mergeBundle is image with ours merged in (mergeTail), in one buffer.
func mergeBundle(image []byte, ours *caBundle) ([]byte, int) {
	tail, added := mergeTail(image, ours)
	return append(slices.Clip(image), tail...), added
}

// readJSON decodes the JSON file at p below dir, at most limit bytes, into v.
func readJSON(dir *safeDir, p string, limit int64, v any) error {
	data, _, err := dir.readFile(p, limit)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parse %s: %w", path.Join(dir.name, p), err)
	}
	return nil
}

// readDirNames lists the directory p, following symlinks as d does.
func (d *safeDir) readDirNames(p string) ([]string, error) {
	return d.readDir(p, nil, math.MaxInt)
}

// mkdir creates the single directory p (its parent must exist) with exactly
// perm, whatever the umask. An existing directory is left as it is.
func (d *safeDir) mkdir(p string, perm uint32) error {
	dir, base := path.Split(path.Clean("/" + p))
	parent, err := d.open(dir, unix.O_PATH|unix.O_DIRECTORY, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(parent, base, perm); err != nil {
		if err == unix.EEXIST {
			return nil
		}
		return &os.PathError{Op: "mkdir", Path: d.show(p), Err: err}
	}
	fd, err := d.open(p, unix.O_RDONLY|unix.O_DIRECTORY, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, perm); err != nil {
		return &os.PathError{Op: "chmod", Path: d.show(p), Err: err}
	}
	return nil
}

// removeAll removes p and everything below it without following any symlink:
// each level is opened relative to its parent with O_NOFOLLOW, so swapping a
// directory for a symlink mid-way makes removal fail, not wander.
func (d *safeDir) removeAll(p string) error {
	dir, base := path.Split(path.Clean("/" + p))
	parent, err := d.open(dir, unix.O_PATH|unix.O_DIRECTORY, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := removeEntry(parent, base, 0); err != nil && err != unix.ENOENT {
		return &os.PathError{Op: "remove", Path: d.show(p), Err: err}
	}
	return nil
}

// maxRemoveDepth bounds recursion in removeEntry; cainjekt's trees are two
// levels deep, anything deeper was not made by us.
const maxRemoveDepth = 8

func removeEntry(parent int, name string, depth int) error {
	err := unix.Unlinkat(parent, name, 0)
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	if depth >= maxRemoveDepth {
		return unix.ELOOP
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, child := range names {
			if err = removeEntry(fd, child, depth+1); err != nil && err != unix.ENOENT {
				break
			}
			err = nil
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
}
