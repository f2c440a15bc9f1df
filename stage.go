package main

// Per-container staging on the host.
//
// Under the dynamic CA root (0700, root: no other host user may look in),
// each injected container has a directory named by its container ID:
//
//	<root>/<id>/              0755  bind-mounted read-only at /etc/cainjekt
//	<root>/<id>/ca.pem        0644  the injected CAs (for additive variables)
//	<root>/<id>/bundle.pem    0644  the bundle for replacing variables: filled by
//	                                the plugin, rewritten by the hook with the
//	                                image's trust merged with ours
//	<root>/<id>/java-cacerts.jks    the JVM fallback store, only when the hook
//	                                could not merge a JVM's own cacerts
//	<root>/<id>/status.json   0644  what the hook found and did, and what it
//	                                leaves for the wrapper (at most 64 KiB)
//
// The per-container directory is 0755 and its files 0644 because it is what
// the container sees, and its processes need not run as root. Nothing secret
// is ever staged: the plugin drops every non-certificate block first. The
// files that hold the image's trust (bundle.pem once the hook wrote it, the
// JVM fallback store) take the owner and, at most, the mode of the image's
// bundle: a trust store the image keeps from some users stays kept.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode"
)

// Paths inside the container.
const (
	containerDir    = "/etc/cainjekt"
	containerCA     = containerDir + "/" + stagedCA
	containerBundle = containerDir + "/" + stagedBundle
	containerStatus = containerDir + "/" + stagedStatus
	// The wrapper: the host binary, bind-mounted read-only. It lives apart
	// from /etc/cainjekt so that neither mount depends on the other.
	containerWrapper = "/.cainjekt/cainjekt"
)

// Files in a container's staging directory.
const (
	stagedCA        = "ca.pem"
	stagedBundle    = "bundle.pem"
	stagedStatus    = "status.json"
	stagedJavaStore = "java-cacerts.jks"
	lockName        = ".lock"
)

// maxStatusSize bounds status.json, for the hook that writes it and for
// the wrapper and the plugin that read it.
const maxStatusSize = 64 << 10

// status.json: its version, and the hook's results.
const (
	statusVersion = 1

	hookResultOK      = "ok"
	hookResultFailed  = "failed"
	hookResultTimeout = "timeout"

	cacheHit  = "hit"
	cacheMiss = "miss"
	cachePod  = "pod" // the pod's volumes over trust files: an injection of its own, neither replayed nor saved
)

// fileChange records what the hook did, or found, at one path of the image.
type fileChange struct {
	Path     string `json:"path"`               // as the distribution names it
	Resolved string `json:"resolved,omitempty"` // the file behind its symlinks, when different
	Action   string `json:"action"`             // one of the actions below
	Added    int    `json:"added,omitempty"`    // certificates added
	Error    string `json:"error,omitempty"`
}

// What the hook did at a path.
const (
	actionMerged    = "merged"    // our CAs added to the file
	actionUnchanged = "unchanged" // it held them all already
	actionCreated   = "created"   // a trust store the image lacked
	actionAnchor    = "anchor"    // our CAs for the distribution's update tool
	actionFallback  = "fallback"  // a format not rewritten: the runtime gets a store of its own
	actionMounted   = "mounted"   // the pod mounts its own file here: left alone
	actionFailed    = "failed"
)

// validContainerID accepts what containerd's CRI generates: 64 lower-case hex
// digits. Anything else never becomes a path.
func validContainerID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// hookStatus is what the hook writes to status.json for the operator, the
// plugin and the wrapper.
type hookStatus struct {
	Version     int      `json:"version"`
	Result      string   `json:"result"`
	ContainerID string   `json:"container_id"`
	Bundle      string   `json:"bundle,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
	Pod         string   `json:"pod,omitempty"`
	Container   string   `json:"container,omitempty"`
	Processors  []string `json:"processors"`
	CABundle    string   `json:"ca_bundle_sha256,omitempty"`
	imageFindings
	Wrapper hookContext  `json:"wrapper"`
	Files   []fileChange `json:"files,omitempty"`
	Errors  []string     `json:"errors,omitempty"`
	// Cache says whether the image cache served the injection: hit, miss
	// (done in full, and saved), pod (done in full for the pod's volumes,
	// not saved), or empty (no cache).
	Cache string `json:"cache,omitempty"`
	// FilesOmitted and ErrorsOmitted count what was not recorded: an image
	// decides how many paths the hook meets, status.json stays small.
	FilesOmitted  int     `json:"files_omitted,omitempty"`
	ErrorsOmitted int     `json:"errors_omitted,omitempty"`
	DurationMS    float64 `json:"duration_ms"`
	// TimingsMS says where the hook's time went, phase by phase.
	TimingsMS map[string]float64 `json:"timings_ms,omitempty"`
	Finished  time.Time          `json:"finished"`
}

// imageFindings is what the hook found of an image, the same for each of
// its containers: status.json says it, and the image cache's plans keep it.
type imageFindings struct {
	OSRelease  osRelease `json:"os_release"`
	Family     string    `json:"family,omitempty"`
	ImageCerts int       `json:"image_certificates"`
	// ImageTrustBytes is how much of bundle.pem is the image's own trust:
	// a rotation rebuilds bundle.pem from that part. 0: the image had none.
	ImageTrustBytes int `json:"image_trust_bytes"`
}

// hookContext is what the hook leaves for the wrapper.
type hookContext struct {
	Injected bool   `json:"injected"`
	Message  string `json:"message,omitempty"`
	// Env is set where the container does not set it already; Append is
	// appended to what the container sets (JAVA_TOOL_OPTIONS).
	Env    map[string]string `json:"env,omitempty"`
	Append map[string]string `json:"append,omitempty"`
}

// Bounds on what the hook records of an image, whatever it holds:
// status.json stays within what its readers read, and a log line within
// what a log collector takes.
const (
	maxRecordedFiles  = 32
	maxRecordedErrors = 8
	maxRecordedText   = 256 // bytes of a path or a message, as recorded
)

// addFiles records changes, each path and message clipped, the first
// maxRecordedFiles of them; the rest are counted.
func (s *hookStatus) addFiles(changes []fileChange) {
	for _, c := range changes {
		if len(s.Files) == maxRecordedFiles {
			s.FilesOmitted++
			continue
		}
		c.Path, c.Resolved, c.Error = clip(c.Path), clip(c.Resolved), clip(c.Error)
		s.Files = append(s.Files, c)
	}
}

// addError records each error err joins, clipped, the first
// maxRecordedErrors of them; the rest are counted.
func (s *hookStatus) addError(err error) {
	for _, e := range flatten(err) {
		if len(s.Errors) == maxRecordedErrors {
			s.ErrorsOmitted++
			continue
		}
		s.Errors = append(s.Errors, clip(e.Error()))
	}
}

// flatten lists the errors that errors.Join joined, depth first.
func flatten(err error) []error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		if err == nil {
			return nil
		}
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// clip makes text from an image fit a record: printable, and at most
// maxRecordedText bytes, marked where it was cut.
func clip(v string) string {
	if c := printable(v, maxRecordedText); len(c) < len(v) {
		return c + "…"
	}
	return v
}

// marshal renders the status as status.json, never larger than
// maxStatusSize: should the records not fit, the list of files goes first.
func (s *hookStatus) marshal() ([]byte, error) {
	for {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return nil, err
		}
		switch {
		case buf.Len() <= maxStatusSize:
			return buf.Bytes(), nil
		case len(s.Files) > 0:
			s.FilesOmitted += len(s.Files)
			s.Files = nil
		case len(s.Errors) > 0:
			s.ErrorsOmitted += len(s.Errors)
			s.Errors, s.Wrapper.Message = nil, "cainjekt: CA injection "+s.Result+"; see "+containerStatus
		default:
			return nil, fmt.Errorf("status of %d bytes, more than %d", buf.Len(), maxStatusSize)
		}
	}
}

// openStaging opens the container's staging directory.
func openStaging(dynamicRoot, id string) (root, staging *safeDir, err error) {
	if root, err = openOwnDir(dynamicRoot); err != nil {
		return nil, nil, err
	}
	if staging, err = root.sub(id); err != nil {
		root.Close()
		return nil, nil, fmt.Errorf("staging for this container (was it created by the plugin?): %w", err)
	}
	return root, staging, nil
}

// readJSON decodes the JSON file at p below dir, at most limit bytes, into
// v: status.json and the image cache's plans.
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

// readStaged reads the CAs and the pre-filled bundle the plugin staged.
func readStaged(staging *safeDir) (*caBundle, []byte, error) {
	caPEM, _, err := staging.readFile(stagedCA, maxBundleSize)
	if err != nil {
		return nil, nil, fmt.Errorf("read staged CAs: %w", err)
	}
	ours, err := parseStagedCAs(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("staged CAs: %w", err)
	}
	prefill, _, err := staging.readFile(stagedBundle, maxBundleSize)
	if err != nil {
		return nil, nil, fmt.Errorf("read staged bundle: %w", err)
	}
	return ours, prefill, nil
}

// printable drops control characters and truncates to max runes.
func printable(v string, max int) string {
	var b strings.Builder
	for _, r := range v {
		if b.Len() >= max {
			break
		}
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}
