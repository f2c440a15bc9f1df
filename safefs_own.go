//go:build !hookonly

package main

// Safe operations the plugin needs on its own staging tree, beside those of
// safefs.go: creating a container's directory, listing and removing them.
// None of them follows a symlink.

import (
	"math"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

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

// readDirNames lists the directory p, following symlinks as d does.
func (d *safeDir) readDirNames(p string) ([]string, error) {
	return d.readDir(p, nil, math.MaxInt)
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
