// Package testbed runs a real containerd + runc node on the local machine and drives it
// through the CRI API the way kubelet does, so end-to-end tests exercise the real NRI path.
//
// Everything expensive (binaries, images, the public test CA) is built once and kept in
// CacheDir, keyed by version or content hash. Entries are built in a temporary directory
// beside their final place and renamed into place under a per-entry flock, so concurrent
// test runs never collide and never observe a half-built entry.
package testbed

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CacheDir is where built artifacts are kept between runs:
// $CAINJEKT_TESTBED_CACHE, default /var/cache/cainjekt-testbed.
func CacheDir() string {
	if dir := os.Getenv("CAINJEKT_TESTBED_CACHE"); dir != "" {
		return dir
	}
	return "/var/cache/cainjekt-testbed"
}

// cached returns the directory of cache entry key, first calling build to fill a fresh
// temporary directory when the entry does not exist yet.
func cached(key string, build func(tmp string) error) (string, error) {
	root := CacheDir()
	final := filepath.Join(root, key)
	if isDir(final) {
		return final, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("create cache dir: %w", err)
	}
	unlock, err := lock(filepath.Join(root, key+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// A concurrent run may have finished the entry while we waited for the lock.
	if isDir(final) {
		return final, nil
	}
	if err := removeStaleTemps(root, key); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(root, tempPrefix(key))
	if err != nil {
		return "", fmt.Errorf("create build dir for %s: %w", key, err)
	}
	if err := build(tmp); err != nil {
		return "", errors.Join(fmt.Errorf("build %s: %w", key, err), removeTree(tmp))
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("install cache entry %s: %w", key, err)
	}
	return final, nil
}

func tempPrefix(key string) string { return ".tmp-" + key + "-" }

// removeStaleTemps deletes build directories left by runs that died mid-build. The caller
// holds the entry's lock, so no live builder can own them.
func removeStaleTemps(root, key string) error {
	stale, err := filepath.Glob(filepath.Join(root, tempPrefix(key)+"*"))
	if err != nil {
		return fmt.Errorf("find stale builds of %s: %w", key, err)
	}
	for _, dir := range stale {
		if err := removeTree(dir); err != nil {
			return fmt.Errorf("remove stale build: %w", err)
		}
	}
	return nil
}

// lock takes an exclusive flock on path, blocking until it is free.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Closing the descriptor releases the lock.
	return func() { f.Close() }, nil
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// contentKey hashes parts unambiguously (each is length-prefixed) into a hex string.
func contentKey(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashDir is a contentKey of every regular file directly in dir whose name ends in suffix.
func hashDir(dir, suffix string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", dir, err)
	}
	var parts [][]byte
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), suffix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", fmt.Errorf("read source: %w", err)
		}
		parts = append(parts, []byte(e.Name()), data)
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("no *%s files in %s: %w", suffix, dir, fs.ErrNotExist)
	}
	return contentKey(parts...), nil
}

func nopLog(string, ...any) {}

// logger makes a nil log function safe to call.
func logger(log func(string, ...any)) func(string, ...any) {
	if log == nil {
		return nopLog
	}
	return log
}
