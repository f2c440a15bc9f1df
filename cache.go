package main

// The image cache: the hook's work, done once per image.
//
// Image layers are immutable and content-addressed. Every container of an
// image starts from the same files, so what the hook reads, decides and
// merges is the same for each, given the same CAs, processors and the few
// variables it reads. The first container of an image records every write
// its injection made (the merged OS bundle, certifi bundles, cacerts, the
// staged files) in an entry of the cache; the next ones replay those writes
// without reading, parsing or merging anything of the image, and their
// staged files are hard links to the entry's. Owners are recorded as the
// container sees them: a pod whose user namespace maps them elsewhere gets
// its own, and copies of the staged files.
//
// Why it is safe: the key holds the image's config digest, the sha256 of its
// content, which names its layers; the plugin takes it from the runtime,
// never from the pod. An image can only ever reach its own entries. The rest
// of the key is everything else the injection reads: the CAs, the bundle
// for images without trust, the processors and the container's variables
// the injection sees (injectionEnvNames), nothing else. Only a run without
// any error is recorded, an entry is bounded (maxPlanWrites writes,
// maxPlanBytes of data), and it is written by the hook as root into a
// directory only root can enter, replayed through the same safe writes as
// the first run. What can make two containers of one image differ is the
// mount points runc creates for their volumes, empty files and directories
// that the volumes then hide: a plan made beside one writes files that
// another container sees, which hold the image's files and our CAs only.
// The plugin drops every entry of a CA set no longer current, and bounds
// the cache (cacheMaxEntries, cacheMaxBytes).

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// cacheDirName is the cache's directory in the dynamic CA root.
	cacheDirName = ".cache"
	// cacheFormat changes whenever what an entry means changes.
	cacheFormat = "cainjekt-plan-1"
	planFile    = "plan.json"

	maxPlanSize   = 64 << 10 // plan.json
	maxPlanWrites = 64       // a fat image makes about 6
	maxPlanBytes  = 16 << 20 // a fat image writes about 1 MiB
)

// validImageID accepts an image config digest as the runtime gives it.
func validImageID(id string) bool {
	hexPart, ok := strings.CutPrefix(id, "sha256:")
	return ok && len(hexPart) == 64 && isHex(hexPart)
}

// plan is a cache entry's plan.json: what the first container's injection
// did, for the next ones to do the same.
type plan struct {
	Writes []plannedWrite `json:"writes"`
	// What the status and the wrapper say.
	imageFindings
	Files  []fileChange      `json:"files"`
	Env    map[string]string `json:"env,omitempty"`
	Append map[string]string `json:"append,omitempty"`
}

// cacheEntry names the entry of an injection: the sha256 of ours first, so
// that the plugin drops the entries of CA sets no longer current, then the
// key of everything else the injection depends on. env is what
// injectionEnv keeps of the container's environment.
func cacheEntry(imageID, oursSHA string, prefill []byte, processors, env []string) string {
	h := sha256.New()
	field := func(v string) { fmt.Fprintf(h, "%d:%s\n", len(v), v) }
	field(cacheFormat)
	field(version)
	field(imageID)
	prefillSum := sha256.Sum256(prefill)
	field(string(prefillSum[:]))
	field(strings.Join(processors, ","))
	for _, kv := range env {
		field(kv)
	}
	return oursSHA[:16] + "-" + hex.EncodeToString(h.Sum(nil))
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}

var (
	// errNoEntry says the image cache has no entry for an injection yet.
	errNoEntry = errors.New("no cache entry")
	// errNotKept says an injection is not worth an entry: an unusual image.
	errNotKept = errors.New("injection not kept in the cache")
)

// loadPlan reads the entry's plan, or says why there is none to use.
func loadPlan(cache *safeDir, entry string) (*plan, error) {
	var p plan
	err := readJSON(cache, entry+"/"+planFile, maxPlanSize, &p)
	if errors.Is(err, unix.ENOENT) {
		return nil, errNoEntry
	}
	if err != nil {
		return nil, err
	}
	if len(p.Writes) > maxPlanWrites {
		return nil, fmt.Errorf("cache entry %s: %d writes", entry, len(p.Writes))
	}
	return &p, nil
}

// replay makes the plan's writes: the image's files from the entry's data,
// and the staged files as hard links to it.
func (in *injection) replay(cache *safeDir, entry string, p *plan) error {
	dir, err := cache.sub(entry)
	if err != nil {
		return err
	}
	defer dir.Close()
	for _, w := range p.Writes {
		if !isHex(w.Blob) || len(w.Blob) != 64 {
			return fmt.Errorf("cache entry %s: blob %q", entry, w.Blob)
		}
		if w.Op == opStage {
			err = in.stageFromCache(dir, w)
		} else {
			err = replayWrite(in.root, dir, w)
		}
		if err != nil {
			return fmt.Errorf("replay cache entry %s: %w", entry, err)
		}
	}
	// Touched, for the plugin to evict the entries used least recently.
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	unix.UtimesNanoAt(cache.fd, entry, now, unix.AT_SYMLINK_NOFOLLOW)
	return nil
}

// mountsOver says whether the container mounts a volume over a path the
// plan read or wrote: its injection then differs from the image's.
func (in *injection) mountsOver(p *plan) bool {
	for _, f := range p.Files {
		if _, ok := in.mountAt(cmp.Or(f.Resolved, f.Path)); ok {
			return true
		}
	}
	for _, w := range p.Writes {
		if _, ok := in.mountAt(w.Path); ok && w.Op != opStage {
			return true
		}
	}
	return false
}

// replayWrite makes a write of the image from the entry's data, which the
// kernel copies.
func replayWrite(root, entry *safeDir, w plannedWrite) error {
	from, _, err := entry.openFile(w.Blob, maxBundleSize)
	if err != nil {
		return err
	}
	defer from.Close()
	if w.Op == opCreate {
		if _, err := root.mkdirAll(path.Dir(w.Path), 0o755); err != nil {
			return err
		}
	}
	return root.writeFileFrom(w.Path, from, 0o644)
}

// savePlan records a successful injection as the entry. The entry is
// written beside and renamed into place: a hook replaying it sees all of it
// or none; of two hooks saving one entry, the second one's is dropped.
func (in *injection) savePlan(cache *safeDir, entry string, p *plan) error {
	total := 0
	for _, w := range in.writes {
		total += len(w.data)
	}
	if len(in.writes) > maxPlanWrites || total > maxPlanBytes {
		return nil // an unusual image: not worth keeping
	}
	tmp := fmt.Sprintf(".tmp-%s-%d", entry, os.Getpid())
	if err := cache.mkdir(tmp, 0o700); err != nil {
		return err
	}
	err := in.writeEntry(cache, tmp, p)
	if errors.Is(err, errNotKept) {
		cache.removeAll(tmp)
		return nil
	}
	if err == nil {
		err = unix.Renameat(cache.fd, tmp, cache.fd, entry)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = nil // another container of the image saved it first
		}
	}
	cache.removeAll(tmp)
	return err
}

// writeEntry writes the data of every write, and the plan naming it.
func (in *injection) writeEntry(cache *safeDir, tmp string, p *plan) error {
	dir, err := cache.sub(tmp)
	if err != nil {
		return err
	}
	defer dir.Close()
	p.Writes = nil
	written := map[string]bool{}
	for _, w := range in.writes {
		sum := sha256.Sum256(w.data)
		w.Blob = hex.EncodeToString(sum[:])
		// Data is kept once however many files hold it. A staged file is
		// linked, not copied: its data gets the staged file's attributes,
		// and the plan its owner as the container sees it.
		attrs := fileAttrs{mode: 0o600, uid: -1, gid: -1}
		if w.Op == opStage {
			attrs = fileAttrs{mode: w.Mode, uid: w.UID, gid: w.GID}
			owner, ok := in.ids.toContainer(fileOwner{w.UID, w.GID})
			if !ok {
				return errNotKept // a bundle of an owner outside its user namespace
			}
			w.UID, w.GID = owner.uid, owner.gid
		}
		p.Writes = append(p.Writes, w)
		if written[w.Blob] && w.Op != opStage {
			continue
		}
		written[w.Blob] = true
		if err := dir.writeFileAs(w.Blob, w.data, attrs); err != nil {
			return err
		}
	}
	data, err := json.Marshal(p)
	if err == nil && len(data) > maxPlanSize {
		// loadPlan would refuse it, and the next container save it again.
		err = errNotKept
	}
	if err == nil {
		err = dir.writeFileAs(planFile, data, fileAttrs{mode: 0o600, uid: -1, gid: -1})
	}
	return err
}

// stageFromCache makes a staged file of the entry's blob: a hard link when
// the blob has the attributes the file must have, else a copy with them
// (for a pod whose user namespace maps the owner elsewhere than the one
// that saved the entry). The blob is opened as a regular file, of a size a
// staged file may have: whatever the entry holds, nothing else is linked.
func (in *injection) stageFromCache(entry *safeDir, w plannedWrite) error {
	owner, ok := in.ids.toHost(fileOwner{w.UID, w.GID})
	if !ok {
		return fmt.Errorf("staged %s: owner %d:%d outside the container's user namespace", w.Path, w.UID, w.GID)
	}
	f, info, err := entry.openFile(w.Blob, maxBundleSize)
	if err != nil {
		return err
	}
	defer f.Close()
	owner = owner.orCaller()
	attrs := fileAttrs{mode: w.Mode, uid: owner.uid, gid: owner.gid}
	if attrs != attrsOf(info, 0o7777) {
		_, err = in.staging.write(w.Path, body{from: f, canonical: true}, 0, &attrs)
		return err
	}
	return linkFile(f, in.staging, w.Path)
}

// linkFile makes name in to a hard link of f, replacing name.
func linkFile(f *os.File, to *safeDir, name string) error {
	tmp := fmt.Sprintf(".%s.cainjekt-%d.link", name, os.Getpid())
	if err := unix.Linkat(int(f.Fd()), "", to.fd, tmp, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := unix.Renameat(to.fd, tmp, to.fd, name); err != nil {
		unix.Unlinkat(to.fd, tmp, 0)
		return fmt.Errorf("link %s: %w", name, err)
	}
	return nil
}

// openCache opens the cache in the dynamic CA root, creating it.
func openCache(dynamicRoot *safeDir) (*safeDir, error) {
	if err := dynamicRoot.mkdir(cacheDirName, 0o700); err != nil {
		return nil, err
	}
	return dynamicRoot.sub(cacheDirName)
}
