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
)

// injection is the hook's work on one container: what it knows of it, and
// which real files it merged already, so that none is merged twice.
type injection struct {
	root, staging *safeDir
	processors    []string
	env           []string  // the container process's environment
	ours          *caBundle // nil: detection only
	prefill       []byte    // the bundle the plugin staged, for images without trust
	trust         []byte    // the staged bundle: the image's trust merged with ours
	trustAttrs    fileAttrs // what staged files holding the image's trust get
	merged        map[string]bool
	// dryRun resolves every write and stops there: inspect says what the
	// hook would change.
	dryRun bool
}

func newInjection(root, staging *safeDir, processors, env []string, ours *caBundle, prefill []byte) *injection {
	return &injection{root: root, staging: staging, processors: processors, env: env, ours: ours,
		prefill: prefill, merged: map[string]bool{}}
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
	return in.stage(func(staging *safeDir) error {
		if err := staging.writeFileAs(stagedBundle, in.trust, in.trustAttrs); err != nil {
			return fmt.Errorf("write staged bundle: %w", err)
		}
		return nil
	})
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
	if t.data, t.info, t.err = in.root.readFile(t.canon, f.limit); t.err == nil && in.ours != nil {
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
	case errors.Is(err, errStoreUnsupported):
		c.Action, c.Error = actionFallback, err.Error()
		return c, nil
	case err == nil && t.added > 0:
		c.Action = actionMerged
		_, err = in.write(t.canon, t.merged)
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
	if err == nil && !in.dryRun {
		if _, err = in.root.mkdirAll(path.Dir(canon), 0o755); err == nil {
			_, err = in.write(canon, data)
		}
	}
	c.Resolved = resolvedIfDifferent(p, canon)
	if err != nil {
		c.Action, c.Error = actionFailed, err.Error()
	}
	return c, err
}

// write replaces a file of the image as writeFile does; in a dry run it
// only resolves it.
func (in *injection) write(p string, data []byte) (string, error) {
	if in.dryRun {
		return in.root.canonical(p)
	}
	return in.root.writeFile(p, data, 0o644)
}

// stage writes into the container's staging directory, unless in a dry run.
func (in *injection) stage(write func(staging *safeDir) error) error {
	if in.dryRun {
		return nil
	}
	return write(in.staging)
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
