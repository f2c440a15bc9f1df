//go:build !hookonly

package main

// The plugin's half of the staging contract (stage.go): it creates each
// injected container's staging directory, refreshes its trust files when
// the CAs rotate, reads the hook's status, and removes the directory with
// the container. It also holds the node's single-instance lock.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"slices"
	"strings"
	"time"

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
// holds it until the process exits. Two plugins with one name would both be
// accepted by containerd and then make every CreateContainer fail.
func (s *stager) lock() error {
	fd, err := unix.Openat(s.dir.fd, lockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open lock %s: %w", path.Join(s.path, lockName), err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if err == unix.EWOULDBLOCK {
			return fmt.Errorf("another cainjekt plugin holds %s: refusing to run twice on one node", path.Join(s.path, lockName))
		}
		return fmt.Errorf("lock %s: %w", path.Join(s.path, lockName), err)
	}
	return nil // the descriptor stays open, and the lock held, for the process's life
}

// lockHeld reports whether a plugin holds the node's lock, without keeping
// it.
func (s *stager) lockHeld() (bool, error) {
	fd, err := unix.Openat(s.dir.fd, lockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, fmt.Errorf("open lock %s: %w", path.Join(s.path, lockName), err)
	}
	defer unix.Close(fd)
	switch err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err {
	case nil:
		return false, nil // closing the descriptor releases it
	case unix.EWOULDBLOCK:
		return true, nil
	default:
		return false, fmt.Errorf("lock %s: %w", path.Join(s.path, lockName), err)
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
// new CA bundle: ca.pem, bundle.pem rebuilt from its first bytes, which the
// hook reported to be the image's own trust, and the JVM fallback store if
// the hook made one. Programs that read these files per connection or per
// process trust the new CAs, and no longer the removed ones, without a
// restart. The image's part is the image's to choose: merging into it takes
// time linear in its size (at most maxBundleSize), and ctx's deadline is
// checked before each file is written.
func (s *stager) refresh(ctx context.Context, id string, set *trustSet, imageTrustBytes int) error {
	if !validContainerID(id) {
		return fmt.Errorf("refusing to refresh staging for container ID %q", id)
	}
	dir, err := s.dir.sub(id)
	if err != nil {
		return err
	}
	defer dir.Close()
	old, _, err := dir.readFile(stagedBundle, maxBundleSize)
	if err != nil {
		return err
	}
	if imageTrustBytes < 0 || imageTrustBytes > len(old) {
		return fmt.Errorf("%s holds %d bytes, less than the %d of the image's trust", stagedBundle, len(old), imageTrustBytes)
	}
	bundle := trustFor(old[:imageTrustBytes], set.ours, set.noTrust)
	steps := []func() error{
		func() error { _, err := dir.writeFile(stagedCA, set.ours.pem, 0o644); return err },
		func() error { _, err := dir.writeFile(stagedBundle, bundle, 0o644); return err },
		func() error {
			if _, _, err := dir.stat(stagedJavaStore); err != nil {
				return nil
			}
			store, err := fallbackStore(bundle)
			if err == nil {
				_, err = dir.writeFile(stagedJavaStore, store, 0o644)
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

// trustFor merges ours into an image's trust, or gives noTrust to an image
// that had none.
func trustFor(image []byte, ours *caBundle, noTrust []byte) []byte {
	if len(image) == 0 {
		return noTrust
	}
	merged, _ := mergeBundle(image, ours)
	return merged
}

// Bounds on the image cache (cache.go), on the node's tmpfs: a fat image's
// entry is about 1 MiB.
const (
	cacheMaxEntries = 128
	cacheMaxBytes   = 64 << 20
	// A temporary entry older than this was left by a hook that died.
	cacheTempAge = time.Minute
)

// cachedEntry is an entry of the image cache, as pruneCache weighs it.
type cachedEntry struct {
	name  string
	used  time.Time
	bytes int64
}

// pruneCache drops the image cache's entries made for CA sets other than
// the current ones (an entry's name starts with its set's sha256), the
// temporary entries of hooks that died while writing one, and then the
// entries used least recently, beyond the cache's bounds.
func (s *stager) pruneCache(currentSHAs []string, now time.Time) error {
	cache, err := s.dir.sub(cacheDirName)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer cache.Close()
	names, err := cache.readDirNames(".")
	if err != nil {
		return err
	}
	var keep []cachedEntry
	var errs []error
	for _, name := range names {
		e, err := weighEntry(cache, name)
		current := validCacheEntry(name) && slices.ContainsFunc(currentSHAs, func(sha string) bool { return strings.HasPrefix(name, sha[:min(16, len(sha))]+"-") })
		switch {
		case err == nil && current:
			keep = append(keep, e)
		case err == nil && strings.HasPrefix(name, ".tmp-") && now.Sub(e.used) < cacheTempAge:
		default: // of another CA set, left by a dead hook, or not ours at all
			errs = append(errs, cache.removeAll(name))
		}
	}
	slices.SortFunc(keep, func(a, b cachedEntry) int { return b.used.Compare(a.used) })
	var total int64
	for i, e := range keep {
		if total += e.bytes; i >= cacheMaxEntries || total > cacheMaxBytes {
			errs = append(errs, cache.removeAll(e.name))
		}
	}
	return errors.Join(errs...)
}

// weighEntry says when a cache entry was last used and how large it is.
func weighEntry(cache *safeDir, name string) (cachedEntry, error) {
	e := cachedEntry{name: name}
	info, typ, err := cache.stat(name) // refuses a symlink: nothing here is one
	if err != nil || typ != unix.S_IFDIR {
		return e, err
	}
	e.used = info.mtime
	dir, err := cache.sub(name)
	if err != nil {
		return e, err
	}
	defer dir.Close()
	files, err := dir.readDirNames(".")
	for _, f := range files {
		if info, _, err := dir.stat(f); err == nil {
			e.bytes += info.size
		}
	}
	return e, err
}

// validCacheEntry accepts the names cacheEntry makes.
func validCacheEntry(name string) bool {
	ours, key, ok := strings.Cut(name, "-")
	return ok && len(ours) == 16 && len(key) == 64 && isHex(ours) && isHex(key)
}

// readDirNames lists the directory p, following symlinks as d does.
func (d *safeDir) readDirNames(p string) ([]string, error) {
	return d.readDir(p, nil, math.MaxInt)
}
