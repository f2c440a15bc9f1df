package main

// One container's injection, as the hook does it (and `cainjekt inspect`
// simulates it): detect the distribution, rewrite the staged bundle with
// the image's trust merged with ours, merge ours into the OS trust store,
// then into the trust files of the language runtimes the image has. Every
// trust file goes through one routine, read then apply, whatever its
// format.

import (
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
	env           []string    // the container process's environment
	ids           userNS      // the container's user namespace
	mounts        []bindMount // the container's volumes, over the image's files
	sawMount      bool        // a trust path was a volume's: the injection is the pod's, not the image's
	ours          *caBundle   // nil: detection only
	prefill       []byte      // the bundle the plugin staged, for images without trust
	trust         []byte      // the staged bundle: the image's trust merged with ours
	trustAttrs    fileAttrs   // what staged files holding the image's trust get
	merged        map[string]bool
	// dryRun resolves every write and stops there: inspect says what the
	// hook would change.
	dryRun bool
	// writes are every write made, in order, for the image's cache (cache.go).
	writes []plannedWrite
}

// newInjection makes the context of an injection. Of the container's
// environment it keeps the variables the injection reads, and only those:
// the image cache keys on them (cache.go).
func newInjection(root, staging *safeDir, processors, env []string, ours *caBundle, prefill []byte) *injection {
	return &injection{root: root, staging: staging, processors: processors, env: injectionEnv(env), ours: ours,
		prefill: prefill, merged: map[string]bool{}}
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

// detect reads the image's os-release and its OS trust store.
func (in *injection) detect() (osRelease, distroFamily, *imageStore, error) {
	rel, fam, err := detectDistro(in.root)
	return rel, fam, in.readImageStore(fam), err
}

// stageTrust rewrites the staged bundle with the image's trust merged with
// ours. It comes first: it is what SSL_CERT_FILE names, and must hold the
// image's trust even if the OS store cannot be written.
func (in *injection) stageTrust(store *imageStore) error {
	in.trust, in.trustAttrs = store.mergedTrust(in.prefill), store.trustAttrs()
	if string(in.trust) == string(in.prefill) {
		return nil
	}
	if err := in.stage(stagedBundle, in.trust, in.trustAttrs); err != nil {
		return fmt.Errorf("write staged bundle: %w", err)
	}
	return nil
}

// trustFormat is a kind of trust file: how large one may be, and what
// merging ours into its content gives.
type trustFormat struct {
	limit int64
	merge func(data []byte, ours *caBundle) (merged []byte, added int, err error)
}

// pemFormat is a PEM bundle, merged byte for byte (mergeBundle).
var pemFormat = trustFormat{limit: maxBundleSize, merge: func(data []byte, ours *caBundle) ([]byte, int, error) {
	merged, added := mergeBundle(data, ours)
	return merged, added, nil
}}

// trustFile is a trust file of the image, read and merged with ours.
type trustFile struct {
	path, canon  string
	info         fileInfo
	data, merged []byte
	added        int
	mounted      bool  // the pod mounts its own file there: read from the volume, never written
	err          error // reading or merging it failed
}

// read reads the trust file at p (canonical already, or not) and merges
// ours into it in format f.
func (in *injection) read(p string, f trustFormat) trustFile {
	t := trustFile{path: p, canon: p}
	if t.canon, t.err = in.root.canonical(p); t.err != nil {
		t.canon = p
		return t
	}
	if m, ok := in.mountAt(t.canon); ok {
		t.mounted, in.sawMount = true, true
		t.data, t.info, t.err = m.readFile(t.canon, f.limit, in.root.budget)
	} else {
		t.data, t.info, t.err = in.root.readFile(t.canon, f.limit)
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
		err = in.write(t.canon, t.merged)
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
	if _, mounted := in.mountAt(canon); err == nil && mounted {
		c.Action, c.Added, c.Resolved, in.sawMount = actionMounted, 0, resolvedIfDifferent(p, canon), true
		return c, nil
	}
	if err == nil {
		err = in.do(plannedWrite{Op: opCreate, Path: canon}, data)
	}
	c.Resolved = resolvedIfDifferent(p, canon)
	if err != nil {
		c.Action, c.Error = actionFailed, err.Error()
	}
	return c, err
}

// write replaces a file of the image as writeFile does.
func (in *injection) write(canon string, data []byte) error {
	return in.do(plannedWrite{Op: opWrite, Path: canon}, data)
}

// stage writes a file of the container's staging directory with attrs.
func (in *injection) stage(name string, data []byte, attrs fileAttrs) error {
	return in.do(plannedWrite{Op: opStage, Path: name, Mode: attrs.mode, UID: attrs.uid, GID: attrs.gid}, data)
}

// What a write does.
const (
	opWrite  = "write"  // replace a file of the image, keeping its attributes
	opCreate = "create" // the same, creating its directories first
	opStage  = "stage"  // replace a file of the staging directory, with given attributes
)

// plannedWrite is one write of an injection, as the image's cache keeps it:
// every container of the image gets the same.
type plannedWrite struct {
	Op   string `json:"op"`
	Path string `json:"path"` // canonical inside the image, or a staged file's name
	Blob string `json:"blob"` // the data's sha256, naming it in the cache entry
	// The attributes of a staged file.
	Mode uint32 `json:"mode,omitempty"`
	UID  int    `json:"uid,omitempty"`
	GID  int    `json:"gid,omitempty"`
	data []byte
}

// do makes a write, and records it; a dry run does nothing.
func (in *injection) do(w plannedWrite, data []byte) error {
	if in.dryRun {
		return nil
	}
	var err error
	switch w.Op {
	case opCreate:
		if _, err = in.root.mkdirAll(path.Dir(w.Path), 0o755); err == nil {
			_, err = in.root.writeFile(w.Path, data, 0o644)
		}
	case opWrite:
		_, err = in.root.writeFile(w.Path, data, 0o644)
	case opStage:
		err = in.staging.writeFileAs(w.Path, data, fileAttrs{mode: w.Mode, uid: w.UID, gid: w.GID})
	}
	if err == nil {
		w.data = data
		in.writes = append(in.writes, w)
	}
	return err
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

// readFile reads the file the container sees at canon, below the mount,
// from the volume on the host, as safeDir.readFile does and on the image's
// budget. A mounted file (a subPath) must be a regular file, not a
// symlink; below a mounted directory, paths resolve inside the volume (a
// ConfigMap's keys are symlinks to its current data).
func (m bindMount) readFile(canon string, limit int64, budget *imageBudget) ([]byte, fileInfo, error) {
	dir, name := m.source, strings.TrimPrefix(canon, m.dest)
	resolve := uint64(unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV)
	if name == "" {
		dir, name = path.Split(m.source)
		resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS
	}
	vol, err := openSafeDir(unix.AT_FDCWD, dir, 0, resolve)
	if err != nil {
		return nil, fileInfo{}, fmt.Errorf("the pod's volume at %s: %w", m.dest, err)
	}
	defer vol.Close()
	vol.budget = budget
	data, info, err := vol.readFile(name, limit)
	if err != nil {
		err = fmt.Errorf("the pod's volume at %s: %w", m.dest, err)
	}
	return data, info, err
}
