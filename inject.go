package main

// One container's injection, as the hook does it (and `cainjekt inspect`
// simulates it): detect the distribution, merge ours into the OS trust
// store and stage the container's own trust merged with ours, then merge
// ours into the trust files of the language runtimes the image has. Every
// trust file goes through one routine, read then apply, whatever its
// format.
//
// An injection reads and writes this container's files only: nothing of
// another container, nothing kept from one container for the next. What a
// container gets follows from its image, its pod and the CAs, never from
// what another container did before it.

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// injection is the hook's work on one container: what it knows of it, and
// which real files it merged already, so that none is merged twice.
type injection struct {
	root, staging *safeDir
	processors    []string
	env           []string    // the container process's environment, as injectionEnv keeps it
	mounts        []bindMount // the container's volumes, over the image's files
	sawMount      bool        // a trust path was a volume's: the injection follows from the pod too
	ours          *caBundle   // nil: detection only
	prefill       []byte      // the bundle the plugin staged, for images without trust
	trustAttrs    fileAttrs   // what staged files holding the container's own trust get
	merged        map[string]bool
	sites         *[]string // the image's Python sites, once searched (pythonSites)
	// dryRun resolves every write and stops there: inspect says what the
	// hook would change.
	dryRun bool
	// scratch holds the trust file being merged. Each file is read, merged
	// and written before the next is read into the same buffer: in a
	// process that runs once, every fresh page is a page fault, and a fat
	// image's trust files are a megabyte. It is address space for the
	// largest file read, whose pages cost only once a read touches them.
	scratch []byte
}

// newInjection makes the context of an injection. Of the container's
// environment it keeps the variables the injection reads, and only those:
// the plugin decides by them what the container needs (imageEntry).
func newInjection(root, staging *safeDir, processors, env []string, ours *caBundle, prefill []byte) *injection {
	return &injection{root: root, staging: staging, processors: processors, env: injectionEnv(env), ours: ours,
		prefill: prefill, merged: map[string]bool{}, trustAttrs: fileAttrs{mode: 0o644, uid: -1, gid: -1},
		scratch: make([]byte, 0, maxBundleSize+bytes.MinRead)}
}

// injectionEnv keeps the variables of env the injection reads, in a fixed
// order, the first value of each.
func injectionEnv(env []string) []string {
	var kept []string
	for _, name := range injectionEnvNames() {
		if envHas(env, name) {
			kept = append(kept, name+"="+envValue(env, name))
		}
	}
	return kept
}

func (in *injection) enabled(processor string) bool { return slices.Contains(in.processors, processor) }

// osStore merges ours into each bundle of the family's candidates that the
// image has, once per real file (RHEL's three names for one bundle are read
// once), or creates the family's primary bundle when it has none, and
// drops ours into the family's anchor directory for the distribution's
// update tool, run later inside the container. The first bundle read is
// the container's own trust, staged before the OS store is written, so
// that SSL_CERT_FILE's file holds it whatever else fails. With update
// false (the family's processor excluded) only that is done. A bundle that
// is there but cannot be read is an error: the store is then only partly
// ours. It returns the changes and how many certificates the image trusted.
func (in *injection) osStore(fam distroFamily, update bool) ([]fileChange, int, error) {
	var changes []fileChange
	var errs []error
	note := func(c fileChange, err error) {
		changes = append(changes, c)
		errs = append(errs, err)
		in.merged[cmp.Or(c.Resolved, c.Path)] = true
	}
	imageCerts, staged, seen := 0, false, map[string]bool{}
	for _, p := range bundleCandidates(fam) {
		t := in.read(p, pemFormat)
		if seen[t.canon] || errors.Is(t.err, unix.ENOENT) || errors.Is(t.err, unix.ENOTDIR) {
			continue
		}
		seen[t.canon] = true
		if t.err == nil && !staged {
			staged, imageCerts = true, countCerts(t.data)
			errs = append(errs, in.stageTrust(t))
		}
		if update {
			note(in.apply(t))
		}
	}
	if update && len(seen) == 0 {
		note(in.create(fam.bundles[0], in.prefill, actionCreated, countCerts(in.prefill)))
	}
	if update && fam.anchorDir != "" {
		// One file for all our CAs: every distribution's update tool takes
		// a PEM file of several certificates.
		note(in.create(fam.anchorDir+"/cainjekt"+fam.anchorExt, in.ours.pem, actionAnchor, len(in.ours.certs)))
	}
	return changes, imageCerts, errors.Join(errs...)
}

// stageTrust stages the container's own trust, t: as image-trust.pem, which
// a rotation rebuilds bundle.pem from, then merged with ours as bundle.pem,
// which SSL_CERT_FILE names. Both get no more access than t has in the
// container. An empty bundle is no trust: bundle.pem keeps what the plugin
// staged, our CAs and the node's base bundle.
func (in *injection) stageTrust(t trustFile) error {
	if len(t.data) == 0 || in.dryRun {
		return nil
	}
	attrs, err := in.reach(t)
	if err == nil {
		in.trustAttrs = attrs
		err = in.staging.writeFileAs(stagedImageTrust, attrs, t.data)
	}
	if err == nil {
		err = in.staging.writeFileAs(stagedBundle, attrs, t.merged...)
	}
	if err != nil {
		return fmt.Errorf("stage the container's trust: %w", err)
	}
	return nil
}

// stagedTrust is what bundle.pem holds: the container's own trust and
// ours, or what the plugin staged for a container without any.
func (in *injection) stagedTrust() ([]byte, error) {
	if in.dryRun {
		return in.prefill, nil
	}
	data, _, err := in.staging.readFile(stagedBundle, maxBundleSize)
	return data, err
}

// trustFormat is a kind of trust file: how large one may be, and what
// merging ours into its content gives, in parts written one after another.
type trustFormat struct {
	limit int64
	merge func(data []byte, ours *caBundle) (merged [][]byte, added int, err error)
}

// pemFormat is a PEM bundle, merged byte for byte: the image's bytes, then
// what mergeTail adds.
var pemFormat = trustFormat{limit: maxBundleSize, merge: func(data []byte, ours *caBundle) ([][]byte, int, error) {
	tail, added := mergeTail(data, ours)
	return [][]byte{data, tail}, added, nil
}}

// trustFile is a trust file of the image, read and merged with ours.
type trustFile struct {
	path, canon string
	info        fileInfo
	data        []byte // in the injection's scratch buffer: dead once the next file is read
	merged      [][]byte
	added       int
	mounted     bool  // the pod mounts its own file there: read from the volume, never written
	err         error // reading or merging it failed
}

// read reads the trust file at p (canonical already, or not) into the
// scratch buffer and merges ours into it in format f.
func (in *injection) read(p string, f trustFormat) trustFile {
	t := trustFile{path: p, canon: p}
	if t.canon, t.err = in.root.canonical(p); t.err != nil {
		t.canon = p
		return t
	}
	if m, ok := in.mountAt(t.canon); ok {
		t.mounted, in.sawMount = true, true
		t.data, t.info, t.err = m.readFile(in.scratch, t.canon, f.limit, in.root.budget)
	} else {
		t.data, t.info, t.err = in.root.readFileInto(in.scratch, t.canon, f.limit)
	}
	if cap(t.data) > cap(in.scratch) {
		in.scratch = t.data[:0]
	}
	if t.err == nil && in.ours != nil {
		t.merged, t.added, t.err = f.merge(t.data, in.ours)
	}
	return t
}

// apply writes a trust file back if merging added anything, and records
// what happened. A format the hook does not rewrite is a fallback, for the
// runtime to handle (javaFallback); any other failure is an error.
func (in *injection) apply(t trustFile) (fileChange, error) {
	c := fileChange{Path: t.path, Resolved: resolvedIfDifferent(t.path, t.canon), Action: actionUnchanged, Added: t.added}
	err := t.err
	switch {
	case t.mounted && (err == nil || errors.Is(err, errStoreUnsupported) || errors.Is(err, unix.ENOENT)):
		// What the pod mounts is the pod's: a store the hook could not
		// rewrite, or no file at all, is what the container sees there.
		c.Action, c.Added = actionMounted, 0
		return c, nil
	case errors.Is(err, errStoreUnsupported):
		c.Action, c.Error = actionFallback, err.Error()
		return c, nil
	case err == nil && t.added > 0:
		c.Action = actionMerged
		if !in.dryRun {
			_, err = in.root.write(t.canon, 0o644, nil, t.merged...)
		}
	}
	if err != nil {
		c.Action, c.Error = actionFailed, err.Error()
	}
	return c, err
}

// create writes a file of ours into the image, creating its directory, and
// records it as action. A dangling symlink at p (ca-certificates.crt naming
// a bundle the image lacks) gets its target created, inside the image,
// with the target's directory: both names then hold the bundle.
func (in *injection) create(p string, data []byte, action string, certs int) (fileChange, error) {
	c := fileChange{Path: p, Action: action, Added: certs}
	canon, err := in.root.canonical(p)
	c.Resolved = resolvedIfDifferent(p, canon)
	if _, mounted := in.mountAt(canon); err == nil && mounted {
		c.Action, c.Added, in.sawMount = actionMounted, 0, true
		return c, nil
	}
	if err == nil && !in.dryRun {
		if err = in.root.mkdirAll(path.Dir(canon), 0o755); err == nil {
			_, err = in.root.writeFile(canon, data, 0o644)
		}
	}
	if err != nil {
		c.Action, c.Error = actionFailed, err.Error()
	}
	return c, err
}

func resolvedIfDifferent(p, canon string) string {
	if canon == p {
		return ""
	}
	return canon
}

// hasAction reports whether any of changes was action.
func hasAction(changes []fileChange, action string) bool {
	return slices.ContainsFunc(changes, func(c fileChange) bool { return c.Action == action })
}

// reach is what staged copies of the trust file t may have of its
// attributes: its owner, at most its read and write bits, and only for
// the classes of users (owner, group, others) who can reach it in the
// container: a 0644 bundle below a 0700 directory is the owner's alone.
// The directories above a file the pod mounts are the volume's, below its
// mount point, and the image's, above it.
func (in *injection) reach(t trustFile) (fileAttrs, error) {
	attrs := attrsOf(t.info, 0o644)
	m, mounted := in.mountAt(t.canon)
	for dir := path.Dir(t.canon); ; dir = path.Dir(dir) {
		var info fileInfo
		var err error
		if mounted && (dir == m.dest || strings.HasPrefix(dir, m.dest+"/")) {
			info, err = m.stat(dir)
		} else {
			info, _, err = in.root.stat(dir)
		}
		if err != nil {
			return attrs, fmt.Errorf("the directories above %s: %w", t.canon, err)
		}
		attrs.mode &= searchMask(info, t.info)
		if dir == "/" {
			return attrs, nil
		}
	}
}

// searchMask is the part of file's mode that the directory dir lets its
// owner, group and others reach: each class searches dir as its owner, its
// group or anyone else, whichever dir's owner and group make it.
func searchMask(dir, file fileInfo) uint32 {
	can := func(c uint32) bool { return dir.mode&c != 0 }
	mask := uint32(0o7777)
	if !(dir.uid == file.uid && can(0o100) || dir.uid != file.uid && dir.gid == file.gid && can(0o010) ||
		dir.uid != file.uid && dir.gid != file.gid && can(0o001)) {
		mask &^= 0o700
	}
	if !(dir.gid == file.gid && can(0o010) || dir.gid != file.gid && can(0o001)) {
		mask &^= 0o070
	}
	if !can(0o001) {
		mask &^= 0o007
	}
	return mask
}

// The pod's volumes over the image's files: a ConfigMap of CAs mounted at
// /etc/ssl/certs, a truststore at a JVM's cacerts. The container sees the
// volume's file there, not the image's. The hook runs in the host's view of
// the rootfs, where the container's mounts are not: it never writes a
// mounted path (a rename over the mounted file makes the kernel detach the
// container's mount, taking the pod's file away; a write below a mounted
// directory lands in the image, hidden) and never into a volume. A mounted
// bundle is read from the volume instead: it is the container's trust,
// which bundle.pem, SSL_CERT_FILE's file, then holds with ours, so that
// the pod keeps every CA it trusted.

// maxMounts bounds the mounts looked at; a pod has a few dozen.
const maxMounts = 256

// bindMount is a bind mount of the container: its destination, canonical
// inside the image as runc resolves it, and its source on the host.
type bindMount struct{ dest, source string }

// bindMounts keeps the container's bind mounts, but cainjekt's own.
func bindMounts(root *safeDir, mounts []specMount) []bindMount {
	var out []bindMount
	for _, m := range mounts[:min(len(mounts), maxMounts)] {
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		dest, err := root.canonical(m.Destination)
		if err == nil && path.IsAbs(m.Source) && dest != containerDir && dest != containerWrapper {
			out = append(out, bindMount{dest, path.Clean(m.Source)})
		}
	}
	return out
}

// mountAt is the mount the container sees at canon: the last one at it or
// above it, as runc makes them in order.
func (in *injection) mountAt(canon string) (bindMount, bool) {
	var at bindMount
	found := false
	for _, m := range in.mounts {
		if canon == m.dest || strings.HasPrefix(canon, strings.TrimSuffix(m.dest, "/")+"/") {
			at, found = m, true
		}
	}
	return at, found
}

// open opens the volume below the mount for the path canon the container
// sees there, and gives the name to look up in it. A mounted file (a
// subPath) must be a regular file, not a symlink; below a mounted
// directory, paths resolve inside the volume (a ConfigMap's keys are
// symlinks to its current data).
func (m bindMount) open(canon string, budget *imageBudget) (*safeDir, string, error) {
	dir, name := m.source, strings.TrimPrefix(canon, m.dest)
	resolve := uint64(unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV)
	if name == "" {
		dir, name = path.Split(m.source)
		resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS
	}
	vol, err := openSafeDir(unix.AT_FDCWD, dir, 0, resolve)
	if err != nil {
		return nil, "", fmt.Errorf("the pod's volume at %s: %w", m.dest, err)
	}
	vol.budget = budget
	return vol, name, nil
}

// readFile reads the file the container sees at canon, below the mount,
// from the volume on the host into buf, as safeDir.readFileInto does and
// on the image's budget.
func (m bindMount) readFile(buf []byte, canon string, limit int64, budget *imageBudget) ([]byte, fileInfo, error) {
	vol, name, err := m.open(canon, budget)
	if err != nil {
		return nil, fileInfo{}, err
	}
	defer vol.Close()
	data, info, err := vol.readFileInto(buf, name, limit)
	if err != nil {
		err = fmt.Errorf("the pod's volume at %s: %w", m.dest, err)
	}
	return data, info, err
}

// stat describes the directory the container sees at canon, at or below
// the mount point.
func (m bindMount) stat(canon string) (fileInfo, error) {
	vol, name, err := m.open(canon, nil)
	if err != nil {
		return fileInfo{}, err
	}
	defer vol.Close()
	info, _, err := vol.stat(name)
	return info, err
}
