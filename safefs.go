package main

// Safe file access below a directory file descriptor.
//
// The hook runs as root on the host against a container image, a tree whose
// symlinks, FIFOs and device nodes were chosen by whoever built the image; the
// plugin writes into its own staging tree on the host. Neither ever joins
// strings into a host path: every lookup is an openat2(2) relative to a
// directory descriptor, with resolve flags the kernel enforces on each step.
//
//   - An image is opened with RESOLVE_IN_ROOT: "/" and ".." in a path or a
//     symlink stop at the image's root, so /etc/ssl/cert.pem -> /etc/ssl/certs/…
//     works as it does inside the container and can never reach the host.
//   - Our own staging tree is opened with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS:
//     we never create symlinks there, so one appearing is an attack.
//
// Reads refuse anything but regular files, are bounded, and never open a FIFO
// or device for reading; below an image they also draw on one budget for the
// whole hook run, in bytes read and directory entries examined, so that no
// number of files makes the hook's time or memory grow without bound. Writes
// go to a temporary file in the target's own directory and are renamed over
// it, keeping the old file's mode, owner and extended attributes, so a reader
// sees the old or the new content and never half of it.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// maxSymlinks bounds symlink expansion in canonical, as the kernel does (MAXSYMLINKS).
	maxSymlinks = 40
	// openRetries bounds retries of openat2 when the kernel reports a
	// concurrent rename with EAGAIN.
	openRetries = 64
)

var (
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = errors.New("file too large")
	errBudget     = errors.New("budget spent")
)

// The budget of one hook run in one image. A fat image with a JDK, Python
// and Node reads about 3 MiB and lists a few thousand entries.
const (
	imageReadBudget  = 32 << 20
	imageEntryBudget = 16384
)

// imageBudget is what may still be read from an image, in all: a hostile
// one can hold any number of trust files of the largest size each read
// accepts, and directories of any size.
type imageBudget struct {
	bytes   int64
	entries int
}

// safeDir is a directory, held open, below which all access is confined.
type safeDir struct {
	fd      int          // O_PATH descriptor of the directory
	resolve uint64       // openat2 RESOLVE_* flags applied to every lookup
	name    string       // the directory's host path, for messages only
	budget  *imageBudget // an image's, shared by its safeDirs; nil for our own trees
	owner   fileOwner    // of the files and directories created below it
}

// fileOwner is a user and a group; -1 for either: the caller's.
type fileOwner struct{ uid, gid int }

// chownNeeded says whether what the caller creates needs a chown to get o.
func (o fileOwner) chownNeeded() bool {
	return o.uid >= 0 && o.uid != euid || o.gid >= 0 && o.gid != egid
}

// openImageRoot opens a container's root filesystem at p. A relative p (what
// containerd writes) resolves below the directory at, its OCI bundle, without
// any symlink; an absolute p is the runtime's own host path, whose last
// component must not be a symlink. Paths inside the rootfs then resolve as
// they would inside the container, and never across a mount point: at hook
// time nothing is mounted inside the rootfs as seen from the host.
func openImageRoot(at int, p string) (*safeDir, error) {
	openResolve := uint64(unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS)
	if path.IsAbs(p) {
		at, openResolve = unix.AT_FDCWD, 0
	}
	d, err := openSafeDir(at, p, openResolve,
		unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_MAGICLINKS|unix.RESOLVE_NO_XDEV)
	if err == nil {
		d.budget = newImageBudget()
	}
	return d, err
}

// newImageBudget is the budget of one hook run.
func newImageBudget() *imageBudget {
	return &imageBudget{bytes: imageReadBudget, entries: imageEntryBudget}
}

// openOwnDir opens a directory of cainjekt's own on the host. The path is the
// operator's and may pass through symlinks (/var/run -> /run) but must not be
// one itself; below it, nothing is followed.
func openOwnDir(hostPath string) (*safeDir, error) {
	return openSafeDir(unix.AT_FDCWD, hostPath, 0,
		unix.RESOLVE_BENEATH|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS|unix.RESOLVE_NO_XDEV)
}

func openSafeDir(at int, p string, openResolve, resolve uint64) (*safeDir, error) {
	fd, err := openat2(at, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, openResolve)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", p, err)
	}
	return &safeDir{fd: fd, resolve: resolve, name: p, owner: fileOwner{-1, -1}}, nil
}

// Close releases the directory descriptor.
func (d *safeDir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// sub opens the directory p below d as a safeDir with the same confinement.
// For an image root this is only right for trees without absolute symlinks
// of their own; the hook uses it for cainjekt's staging directories only.
func (d *safeDir) sub(p string) (*safeDir, error) {
	fd, err := d.open(p, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return &safeDir{fd: fd, resolve: d.resolve, name: path.Join(d.name, p), budget: d.budget, owner: d.owner}, nil
}

// open opens p below d with the directory's resolve flags plus extra. p is
// taken relative to d whether or not it starts with a slash (RESOLVE_BENEATH
// refuses absolute paths; under RESOLVE_IN_ROOT both mean the same).
func (d *safeDir) open(p string, flags int, extra uint64) (int, error) {
	rel := strings.TrimLeft(p, "/")
	if rel == "" {
		rel = "."
	}
	fd, err := openat2(d.fd, rel, flags, d.resolve|extra)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: d.show(p), Err: err}
	}
	return fd, nil
}

// show renders p for messages: the path inside the tree, not a host path.
func (d *safeDir) show(p string) string {
	return "/" + strings.TrimPrefix(path.Clean("/"+p), "/")
}

// openat2 retries the kernel's transient failures: EINTR, and EAGAIN, which
// RESOLVE_IN_ROOT and RESOLVE_BENEATH return when a rename raced the lookup.
func openat2(dirfd int, p string, flags int, resolve uint64) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve}
	var err error
	for range openRetries {
		var fd int
		fd, err = unix.Openat2(dirfd, p, how)
		if err == nil {
			return fd, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			return -1, err
		}
	}
	return -1, err
}

// canonical returns p with every symlink resolved the way the kernel resolves
// it under d's flags; components that do not exist are kept as written. Under
// RESOLVE_NO_SYMLINKS it is path.Clean. The result is a path, not a promise:
// callers open it again with RESOLVE_NO_SYMLINKS, so a component swapped for
// a symlink in between makes that open fail instead of escaping.
func (d *safeDir) canonical(p string) (string, error) {
	clean := path.Clean("/" + p)
	if d.resolve&unix.RESOLVE_IN_ROOT == 0 {
		return clean, nil
	}
	// Most paths hold no symlink, or stop existing before one: a single
	// lookup that refuses symlinks says so. Not a path with "..": cleaning it
	// first would take the parent of a symlink, where the kernel takes the
	// parent of its target.
	if !slices.Contains(strings.Split(p, "/"), "..") {
		fd, st, err := d.openStat(clean, unix.O_PATH|unix.O_NOFOLLOW, unix.RESOLVE_NO_SYMLINKS)
		if err == nil {
			unix.Close(fd)
		}
		if errors.Is(err, unix.ENOENT) || err == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return clean, nil
		}
	}
	resolved, todo := "/", p
	for links := 0; todo != ""; {
		var comp string
		comp, todo, _ = strings.Cut(todo, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, comp)
		target, isLink, err := d.readlinkIfSymlink(next)
		if errors.Is(err, unix.ENOENT) {
			return path.Join(next, todo), nil
		}
		if err != nil {
			return "", err
		}
		if !isLink {
			resolved = next
			continue
		}
		if links++; links > maxSymlinks {
			return "", &os.PathError{Op: "resolve", Path: d.show(p), Err: unix.ELOOP}
		}
		if strings.HasPrefix(target, "/") {
			resolved = "/"
		}
		todo = target + "/" + todo
	}
	return resolved, nil
}

// readlinkIfSymlink reports whether p (whose parent contains no symlinks) is
// a symlink, and its target if so.
func (d *safeDir) readlinkIfSymlink(p string) (string, bool, error) {
	fd, st, err := d.openStat(p, unix.O_PATH|unix.O_NOFOLLOW, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return "", false, err
	}
	defer unix.Close(fd)
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", false, nil
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", false, &os.PathError{Op: "readlink", Path: d.show(p), Err: err}
	}
	return string(buf[:n]), true, nil
}

// openStat opens p as open does, and describes what it opened.
func (d *safeDir) openStat(p string, flags int, extra uint64) (int, *unix.Stat_t, error) {
	fd, err := d.open(p, flags, extra)
	if err != nil {
		return -1, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, nil, &os.PathError{Op: "stat", Path: d.show(p), Err: err}
	}
	return fd, &st, nil
}

// fileInfo is what the safe operations report about a file.
type fileInfo struct {
	mode     uint32 // permission bits
	uid, gid uint32
	size     int64
}

func infoOf(st *unix.Stat_t) fileInfo {
	return fileInfo{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid, size: st.Size}
}

// stat describes the file at p, following symlinks inside the tree.
func (d *safeDir) stat(p string) (fileInfo, uint32, error) {
	fd, st, err := d.openStat(p, unix.O_PATH, 0)
	if err != nil {
		return fileInfo{}, 0, err
	}
	unix.Close(fd)
	return infoOf(st), st.Mode & unix.S_IFMT, nil
}

// openFile opens the regular file at p for reading, following symlinks
// inside the tree, if it is at most limit bytes. It first opens p with
// O_PATH, which has no side effects even on a FIFO or a device, checks the
// type and size, and only then opens that very inode for reading through
// /proc/self/fd. Below an image, the size must fit in the budget left.
func (d *safeDir) openFile(p string, limit int64) (*os.File, fileInfo, error) {
	pathFD, st, err := d.openStat(p, unix.O_PATH, 0)
	if err != nil {
		return nil, fileInfo{}, err
	}
	defer unix.Close(pathFD)
	info := infoOf(st)
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, info, &os.PathError{Op: "read", Path: d.show(p), Err: errNotRegular}
	case st.Size > limit:
		return nil, info, &os.PathError{Op: "read", Path: d.show(p), Err: fmt.Errorf("%w: %d bytes, limit %d", errTooLarge, st.Size, limit)}
	case d.budget != nil && st.Size > d.budget.bytes:
		return nil, info, &os.PathError{Op: "read", Path: d.show(p),
			Err: fmt.Errorf("%w: %d bytes, and the read budget of %d MiB for this image has %d left", errBudget, st.Size, imageReadBudget>>20, d.budget.bytes)}
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pathFD), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, info, &os.PathError{Op: "reopen", Path: d.show(p), Err: err}
	}
	return os.NewFile(uintptr(fd), d.show(p)), info, nil
}

// readFile reads the regular file at p, following symlinks inside the tree,
// and fails if it is larger than limit bytes (see openFile).
func (d *safeDir) readFile(p string, limit int64) ([]byte, fileInfo, error) {
	return d.readFileInto(nil, p, limit)
}

// readFileInto is readFile into buf, grown if it is too small: one buffer
// of the size fstat gave, and room to see the file grew or reach its end.
func (d *safeDir) readFileInto(buf []byte, p string, limit int64) ([]byte, fileInfo, error) {
	f, info, err := d.openFile(p, limit)
	if err != nil {
		return nil, info, err
	}
	defer f.Close()
	if d.budget != nil {
		limit = min(limit, d.budget.bytes)
	}
	if need := int(info.size) + bytes.MinRead; cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	b := bytes.NewBuffer(buf[:0])
	_, err = b.ReadFrom(io.LimitReader(f, limit+1))
	data := b.Bytes()
	if err != nil {
		return nil, info, &os.PathError{Op: "read", Path: d.show(p), Err: err}
	}
	if int64(len(data)) > limit {
		return nil, info, &os.PathError{Op: "read", Path: d.show(p), Err: fmt.Errorf("%w: grew past limit %d while reading", errTooLarge, limit)}
	}
	if d.budget != nil {
		d.budget.bytes -= int64(len(data))
	}
	return data, info, nil
}

// fileAttrs are a file's permission bits and owner.
type fileAttrs struct {
	mode     uint32
	uid, gid int
}

// attrsOf keeps what a copy of a file may have of its attributes: its owner
// and at most its read and write bits (never exec, setuid or sticky).
func attrsOf(info fileInfo, perm uint32) fileAttrs {
	return fileAttrs{mode: info.mode & perm, uid: int(info.uid), gid: int(info.gid)}
}

// writeFile atomically replaces the file at p (symlinks inside the tree are
// followed to the real file) with data. An existing file keeps its mode,
// owner and extended attributes (security.selinux above all: a relabelled
// trust store is unreadable to the container on an SELinux node); a new one
// gets perm and d's owner. It refuses to replace anything but a
// regular file. Missing parent directories are an error. It returns the
// canonical path it wrote.
func (d *safeDir) writeFile(p string, data []byte, perm uint32) (string, error) {
	return d.write(p, perm, nil, data)
}

// writeFileAs atomically replaces the file at p with content, the parts
// one after another, with exactly attrs whatever the file had.
func (d *safeDir) writeFileAs(p string, attrs fileAttrs, content ...[]byte) error {
	_, err := d.write(p, 0, &attrs, content...)
	return err
}

// write is writeFile of content, the parts one after another, with attrs
// if given.
func (d *safeDir) write(p string, perm uint32, attrs *fileAttrs, content ...[]byte) (string, error) {
	canon, err := d.canonical(p)
	if err != nil {
		return "", err
	}
	dir, base := path.Split(canon)
	if base == "" {
		return "", &os.PathError{Op: "write", Path: d.show(p), Err: unix.EISDIR}
	}
	dirFD, err := d.open(dir, unix.O_PATH|unix.O_DIRECTORY, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return "", err
	}
	defer unix.Close(dirFD)

	t := tempFile{attrs: fileAttrs{mode: perm, uid: d.owner.uid, gid: d.owner.gid}}
	var st unix.Stat_t
	switch err := unix.Fstatat(dirFD, base, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return "", &os.PathError{Op: "write", Path: d.show(canon), Err: errNotRegular}
	case err == nil && attrs == nil:
		t.attrs = fileAttrs{mode: st.Mode & 0o7777, uid: int(st.Uid), gid: int(st.Gid)}
		if t.xattrs, err = readXattrs(dirFD, base); err != nil {
			return "", &os.PathError{Op: "read extended attributes of", Path: d.show(canon), Err: err}
		}
	case err != nil && err != unix.ENOENT:
		return "", &os.PathError{Op: "stat", Path: d.show(canon), Err: err}
	}
	if attrs != nil {
		t.attrs = *attrs
	}

	tmp, fd, err := createTemp(dirFD, base)
	if err != nil {
		return "", &os.PathError{Op: "create", Path: d.show(dir), Err: err}
	}
	if err := t.fill(fd, content); err != nil {
		unix.Unlinkat(dirFD, tmp, 0)
		return "", &os.PathError{Op: "write", Path: d.show(canon), Err: err}
	}
	if err := unix.Renameat(dirFD, tmp, dirFD, base); err != nil {
		unix.Unlinkat(dirFD, tmp, 0)
		return "", &os.PathError{Op: "rename", Path: d.show(canon), Err: err}
	}
	return canon, nil
}

// createTemp creates a new, exclusive temporary file next to base.
func createTemp(dirFD int, base string) (string, int, error) {
	var err error
	for i := range 16 {
		name := fmt.Sprintf(".%s.cainjekt-%d-%d.tmp", base, os.Getpid(), i)
		var fd int
		fd, err = unix.Openat(dirFD, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return name, fd, nil
		}
		if err != unix.EEXIST {
			break
		}
	}
	return "", -1, err
}

// tempFile is what a replacement file gets besides its data.
type tempFile struct {
	attrs  fileAttrs // uid and gid -1: the caller's
	xattrs []xattr
}

// fill writes content, sets owner, mode and extended attributes, then
// closes fd. Ownership is set before the mode so that setuid/setgid bits
// are not cleared by chown, and extended attributes last, as chown clears
// security.capability.
func (t tempFile) fill(fd int, content [][]byte) error {
	f := os.NewFile(uintptr(fd), "temp")
	defer f.Close()
	for _, part := range content {
		if _, err := f.Write(part); err != nil {
			return err
		}
	}
	if (fileOwner{t.attrs.uid, t.attrs.gid}).chownNeeded() {
		if err := unix.Fchown(fd, t.attrs.uid, t.attrs.gid); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, t.attrs.mode); err != nil {
		return err
	}
	for _, x := range t.xattrs {
		if err := unix.Fsetxattr(fd, x.name, x.value, 0); err != nil {
			return fmt.Errorf("set extended attribute %s: %w", x.name, err)
		}
	}
	return f.Close()
}

// The owner a new file gets: no chown is needed to give it that one.
var euid, egid = os.Geteuid(), os.Getegid()

// xattr is one extended attribute.
type xattr struct {
	name  string
	value []byte
}

// Bounds on the extended attributes copied to a replaced file. The kernel
// allows lists and values of 64 KiB each; a trust store has a label and
// perhaps an ACL.
const (
	maxXattrs     = 32
	maxXattrBytes = 64 << 10 // names and values together
)

// readXattrs reads the extended attributes of the regular file name in
// dirFD, through the directory's /proc/self/fd link, without following a
// symlink at name (the l- variants of the calls) or opening anything.
func readXattrs(dirFD int, name string) ([]xattr, error) {
	proc := "/proc/self/fd/" + strconv.Itoa(dirFD) + "/" + name
	n, err := unix.Llistxattr(proc, nil) // the size of the list, usually 0
	var list []byte
	if err == nil && n > 0 {
		list = make([]byte, min(n, maxXattrBytes))
		n, err = unix.Llistxattr(proc, list)
	}
	if err != nil {
		return nil, fmt.Errorf("list extended attributes: %w", err)
	}
	var attrs []xattr
	left := maxXattrBytes - n
	for _, attr := range strings.FieldsFunc(string(list[:n]), func(r rune) bool { return r == 0 }) {
		size, err := unix.Lgetxattr(proc, attr, nil)
		if err == unix.ENODATA {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("extended attribute %s: %w", attr, err)
		}
		if left -= size; left < 0 || len(attrs) == maxXattrs {
			return nil, fmt.Errorf("%w: more extended attributes than the %d bytes or %d attributes copied", errTooLarge, maxXattrBytes, maxXattrs)
		}
		value := make([]byte, size)
		if size, err = unix.Lgetxattr(proc, attr, value); err != nil {
			return nil, fmt.Errorf("extended attribute %s: %w", attr, err)
		}
		attrs = append(attrs, xattr{attr, value[:size]})
	}
	return attrs, nil
}

// mkdirAll creates the directory p and its missing parents with perm and
// d's owner, following symlinks inside the tree to existing directories.
// Where a component exists as something other than a directory, the
// write below it fails.
func (d *safeDir) mkdirAll(p string, perm uint32) error {
	canon, err := d.canonical(p)
	if err != nil {
		return err
	}
	cur := "/"
	for _, comp := range strings.Split(strings.Trim(canon, "/"), "/") {
		if comp == "" {
			continue
		}
		parent, err := d.open(cur, unix.O_PATH|unix.O_DIRECTORY, unix.RESOLVE_NO_SYMLINKS)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(parent, comp, perm)
		if err == nil && d.owner.chownNeeded() {
			err = unix.Fchownat(parent, comp, d.owner.uid, d.owner.gid, unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(parent)
		cur = path.Join(cur, comp)
		if err != nil && err != unix.EEXIST {
			return &os.PathError{Op: "mkdir", Path: d.show(cur), Err: err}
		}
	}
	return nil
}

// dirBatch is how many entries readDir takes from the kernel at a time.
const dirBatch = 256

// readDir lists the names in directory p that keep accepts (all, if keep is
// nil), following symlinks as d does. It reads the directory in batches and
// stops with an error once more than max names are kept or, below an
// image, once the entries it examined spend the image's budget: the time
// and memory it takes follow what it may keep, not what the directory holds.
func (d *safeDir) readDir(p string, keep func(string) bool, max int) ([]string, error) {
	fd, err := d.open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), d.show(p))
	defer f.Close()
	var names []string
	for examined := 0; ; {
		batch, err := f.Readdirnames(dirBatch)
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "readdir", Path: d.show(p), Err: err}
		}
		examined += len(batch)
		if d.budget != nil {
			if d.budget.entries -= len(batch); d.budget.entries < 0 {
				return names, &os.PathError{Op: "search", Path: d.show(p),
					Err: fmt.Errorf("%w: stopped after %d entries here, the budget of %d entries for this image is spent", errBudget, examined, imageEntryBudget)}
			}
		}
		for _, name := range batch {
			if keep != nil && !keep(name) {
				continue
			}
			if len(names) == max {
				return names, &os.PathError{Op: "search", Path: d.show(p),
					Err: fmt.Errorf("%w: stopped at more than %d matching entries", errTooLarge, max)}
			}
			names = append(names, name)
		}
	}
}
