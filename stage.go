package main

// Per-container staging on the host.
//
// Under the dynamic CA root (0700, root: no other host user may look in),
// each injected container has a directory named by its container ID, and
// nothing is shared between containers:
//
//	<root>/<id>/                 0755  bind-mounted read-only at /etc/cainjekt
//	<root>/<id>/ca.pem           0644  the injected CAs (for additive variables)
//	<root>/<id>/bundle.pem       0644  the bundle for replacing variables: filled by
//	                                   the plugin, rewritten by the hook with the
//	                                   container's own trust merged with ours
//	<root>/<id>/image-trust.pem        the container's own trust as the hook found it
//	                                   (the image's bundle, or the pod's volume over
//	                                   it): what bundle.pem is rebuilt from when the
//	                                   CAs rotate. Absent: it had none
//	<root>/<id>/java-cacerts.jks       the JVM fallback store, only when the hook
//	                                   could not merge a JVM's own cacerts
//	<root>/<id>/status.json      0644  what the hook found and did, and what it
//	                                   leaves for the wrapper (at most 64 KiB)
//
// The per-container directory is 0755 and its files 0644 because it is what
// the container sees, and its processes need not run as root. Nothing secret
// is ever staged: the plugin drops every non-certificate block first. The
// files that hold the container's own trust (image-trust.pem, bundle.pem once
// the hook wrote it, the JVM fallback store) take the owner and, at most, the
// access of its bundle, directories above it included: a trust store the
// image or a volume keeps from some users stays kept.

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	stagedCA         = "ca.pem"
	stagedBundle     = "bundle.pem"
	stagedImageTrust = "image-trust.pem"
	stagedStatus     = "status.json"
	stagedJavaStore  = "java-cacerts.jks"
	lockName         = ".lock"
)

// maxStatusSize bounds status.json, for the hook that writes it and for
// the wrapper and the plugin that read it.
const maxStatusSize = 64 << 10

// status.json: its version, and the hook's results.
const (
	statusVersion = 2

	hookResultOK      = "ok"
	hookResultFailed  = "failed"
	hookResultTimeout = "timeout"
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

// validContainerID accepts what the runtimes generate: 64 lower-case hex
// digits. Anything else never becomes a path.
func validContainerID(id string) bool { return len(id) == 64 && isHex(id) }

func isHex(s string) bool { return strings.Trim(s, "0123456789abcdef") == "" }

// hookStatus is what the hook writes to status.json for the operator, the
// plugin and the wrapper. Every field an image or a pod shapes is bounded
// where the hook records it, so the status always fits maxStatusSize.
type hookStatus struct {
	Version     int       `json:"version"`
	Result      string    `json:"result"`
	ContainerID string    `json:"container_id"`
	Bundle      string    `json:"bundle,omitempty"`
	Namespace   string    `json:"namespace,omitempty"`
	Pod         string    `json:"pod,omitempty"`
	Container   string    `json:"container,omitempty"`
	Processors  []string  `json:"processors"`
	CABundle    string    `json:"ca_bundle_sha256,omitempty"`
	OSRelease   osRelease `json:"os_release"`
	Family      string    `json:"family,omitempty"`
	ImageCerts  int       `json:"image_certificates"`
	// Mounted says that the pod's volumes held some of the container's
	// trust files: what the hook did follows from the pod, not only from
	// its image.
	Mounted bool         `json:"mounted,omitempty"`
	Wrapper hookContext  `json:"wrapper"`
	Files   []fileChange `json:"files,omitempty"`
	Errors  []string     `json:"errors,omitempty"`
	// FilesOmitted and ErrorsOmitted count what was not recorded: an image
	// decides how many paths the hook meets, status.json stays small.
	FilesOmitted  int     `json:"files_omitted,omitempty"`
	ErrorsOmitted int     `json:"errors_omitted,omitempty"`
	DurationMS    float64 `json:"duration_ms"`
	// TimingsMS says where the hook's time went, phase by phase.
	TimingsMS map[string]float64 `json:"timings_ms,omitempty"`
	Finished  time.Time          `json:"finished"`
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
	maxRecordedFiles  = 24
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

// addError records each error err joins apart, clipped and after where
// (the phase it comes from), the first maxRecordedErrors of them; the rest
// are counted.
func (s *hookStatus) addError(where string, err error) {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			s.addError(where, e)
		}
		return
	}
	switch {
	case err == nil:
	case len(s.Errors) == maxRecordedErrors:
		s.ErrorsOmitted++
	case where != "":
		s.Errors = append(s.Errors, clip(where+": "+err.Error()))
	default:
		s.Errors = append(s.Errors, clip(err.Error()))
	}
}

// clip makes text from an image fit a record: printable, and at most
// maxRecordedText bytes, marked where it was cut.
func clip(v string) string {
	if c := printable(v, maxRecordedText); len(c) < len(v) {
		return c + "…"
	}
	return v
}

// marshal renders the status as status.json.
func (s *hookStatus) marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	if buf.Len() > maxStatusSize {
		// Unreachable while every record is bounded where it is made
		// (TestStatusStaysBounded): a bug, not an image.
		return nil, fmt.Errorf("status of %d bytes, more than %d", buf.Len(), maxStatusSize)
	}
	return buf.Bytes(), nil
}

// openStaging opens the container's staging directory.
func openStaging(dynamicRoot, id string) (*safeDir, error) {
	root, err := openOwnDir(dynamicRoot)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	staging, err := root.sub(id)
	if err != nil {
		return nil, fmt.Errorf("staging for this container (was it created by the plugin?): %w", err)
	}
	return staging, nil
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

// printable drops control characters and truncates to max bytes.
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
