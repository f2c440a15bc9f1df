//go:build !hookonly

package main

// The operator's CA bundles, re-read when they change.
//
// The default bundle is CAINJEKT_CA_FILE. CAINJEKT_BUNDLES_DIR may hold
// named ones (a ConfigMap with a key per tenant: NAME, NAME.pem or
// NAME.crt), which a pod or namespace picks with <prefix>/bundle: NAME.
// A ConfigMap update swaps files (kubelet renames a symlink), so a stat
// before each use finds a change at once; a periodic check also reports a
// broken file before any container needs it. A file that does not load
// never replaces the last good version.

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultBundle names CAINJEKT_CA_FILE in logs and metrics.
const defaultBundle = "default"

// fileKey identifies a file's version without reading it.
type fileKey struct {
	dev, ino   uint64
	size       int64
	mtim, ctim syscall.Timespec
	err        string
}

func keyOf(p string) fileKey {
	if p == "" {
		return fileKey{}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return fileKey{err: err.Error()}
	}
	return fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtim: st.Mtim, ctim: st.Ctim}
}

// caSource is one bundle file, with the optional base bundle.
type caSource struct {
	name, caPath, basePath string
	log                    *slog.Logger

	mu       sync.Mutex
	good     *trustSet
	findings []finding // of the good version
	loaded   time.Time // when the good version loaded
	tried    [2]fileKey
	lastErr  error
	reloads  map[string]uint64 // by result: ok, or why the file was unusable
}

func newCASource(name, caPath, basePath string, log *slog.Logger) *caSource {
	return &caSource{name: name, caPath: caPath, basePath: basePath, log: log.With("bundle", name), reloads: map[string]uint64{}}
}

// get returns the current trust set, loading the files first if they
// changed. It fails only if no version of them ever loaded.
func (s *caSource) get() (*trustSet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := [2]fileKey{keyOf(s.caPath), keyOf(s.basePath)}
	if key != s.tried {
		s.tried = key
		s.reload()
	}
	if s.good == nil {
		return nil, fmt.Errorf("no usable CA bundle %q: %w", s.name, s.lastErr)
	}
	return s.good, nil
}

// readFrom points the source at another file: the next get loads it.
func (s *caSource) readFrom(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.caPath != path {
		s.log.Info("CA bundle: reading another file", "file", path, "was", s.caPath)
		s.caPath = path
	}
}

// usable says whether a version of the bundle has loaded, and if none has,
// why, without reading the file: the periodic refresh does.
func (s *caSource) usable() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.good != nil:
		return true, ""
	case s.lastErr == nil:
		return false, fmt.Sprintf("CA bundle %s not loaded yet", s.caPath)
	}
	return false, fmt.Sprintf("no usable CA bundle %q: %v", s.name, s.lastErr)
}

// currentSHA names the version being injected, "" if none ever loaded.
func (s *caSource) currentSHA() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.good == nil {
		return ""
	}
	return s.good.sha
}

// reload loads both files; the caller holds s.mu.
func (s *caSource) reload() {
	set, findings, err := loadTrustSet(s.caPath, s.basePath, time.Now())
	for _, f := range findings {
		s.log.Warn("CA bundle: "+f.String(), "kind", f.kind, "file", s.caPath)
	}
	s.lastErr = err
	if err != nil {
		s.reloads[reasonOf(err)]++
		if s.good != nil {
			s.log.Error("CA bundle unusable; keeping the last good one", "file", s.caPath, "error", err, "kept_sha256", s.good.sha)
		} else {
			s.log.Error("CA bundle unusable; opted-in containers are handled by the fail policy", "file", s.caPath, "error", err)
		}
		return
	}
	set.bundle = s.name
	s.good, s.findings, s.loaded = set, findings, time.Now()
	s.reloads["ok"]++
	subjects := make([]string, len(set.ours.certs))
	for i, c := range set.ours.certs {
		subjects[i], _ = about(c)
	}
	s.log.Info("CA bundle loaded", "file", s.caPath, "certificates", len(set.ours.certs), "sha256", set.sha, "subjects", subjects)
}

// lastFindings are the findings of the version being injected.
func (s *caSource) lastFindings() []finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.findings)
}

// bundleSnapshot is what /metrics reports of a bundle.
type bundleSnapshot struct {
	name     string
	reloads  map[string]uint64
	certs    []caCert
	loaded   time.Time
	findings map[string]int // by kind
}

func (s *caSource) snapshot() bundleSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := bundleSnapshot{name: s.name, reloads: map[string]uint64{}, loaded: s.loaded, findings: map[string]int{}}
	for k, v := range s.reloads {
		snap.reloads[k] = v
	}
	if s.good != nil {
		snap.certs = s.good.ours.certs
	}
	for _, f := range s.findings {
		snap.findings[f.kind]++
	}
	return snap
}

// loadTrustSet reads and validates a CA file and the base bundle, and lints
// the CA file's certificates.
func loadTrustSet(caPath, basePath string, now time.Time) (*trustSet, []finding, error) {
	data, err := readHostFile(caPath)
	if err != nil {
		return nil, nil, err
	}
	ours, findings, err := parseCABundle(data)
	if err != nil {
		return nil, findings, fmt.Errorf("%s: %w", caPath, err)
	}
	findings = append(findings, lintCertificates(ours, now)...)
	set := &trustSet{ours: ours, sha: ours.sha256(), noTrust: ours.pem}
	if basePath != "" {
		base, err := readHostFile(basePath)
		if err != nil {
			return nil, findings, fmt.Errorf("base bundle: %w", err)
		}
		baseBundle, _, err := parseCABundle(base)
		if err != nil {
			return nil, findings, fmt.Errorf("base bundle %s: %w", basePath, err)
		}
		set.noTrust, _ = mergeBundle(baseBundle.pem, ours)
	}
	return set, findings, nil
}

// parseCABundle reads the operator's CA bundle. Only CERTIFICATE blocks that
// parse as X.509 are kept, once each (a TRUSTED CERTIFICATE block gives its
// certificate, without OpenSSL's trust settings); every other block is
// dropped, private keys above all, so that nothing but certificates can ever
// reach a container. What was dropped or converted is reported as findings.
// A bundle without a usable certificate is a bundleError.
func parseCABundle(data []byte) (*caBundle, []finding, error) {
	var findings []finding
	b := &caBundle{}
	blocks := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		blocks++
		der := certificateDER(block.Type, block.Bytes)
		if f := blockFinding(blocks, block, der); f != nil {
			findings = append(findings, *f)
		}
		if der == nil {
			continue
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			findings = append(findings, finding{kind: findUnparsable, block: blocks, detail: "dropped a certificate that does not parse: " + err.Error()})
			continue
		}
		if !b.add(newCACert(cert.Raw)) {
			findings = append(findings, finding{kind: findDuplicate, block: blocks, subject: cert.Subject.String(), detail: "dropped a duplicate"})
		}
	}
	switch {
	case len(b.certs) > 0:
		return b, findings, nil
	case len(bytes.TrimSpace(data)) == 0:
		return nil, findings, &bundleError{reason: reasonEmpty, msg: "the bundle is empty"}
	case blocks == 0:
		return nil, findings, &bundleError{reason: reasonNotPEM, msg: "no complete PEM block found (truncated, DER or another format?)"}
	default:
		return nil, findings, &bundleError{reason: reasonNoCertificate, msg: "no usable CERTIFICATE block"}
	}
}

// about is what the operator reads of one of their CAs: its subject and
// when it expires.
func about(c caCert) (subject string, notAfter time.Time) {
	cert, err := x509.ParseCertificate(c.der)
	if err != nil {
		return "", time.Time{} // not in a bundle parseCABundle made
	}
	return cert.Subject.String(), cert.NotAfter
}

// bundleSet is the default bundle and the named ones.
type bundleSet struct {
	def           *caSource
	dir, basePath string
	log           *slog.Logger
	mu            sync.Mutex
	named         map[string]*caSource
	ignored       map[string]string // files of dir no bundle is read from, and why, as of the last refresh
}

func newBundleSet(cfg *config, log *slog.Logger) *bundleSet {
	return &bundleSet{
		def:      newCASource(defaultBundle, cfg.caFile, cfg.baseBundle, log),
		dir:      cfg.bundlesDir,
		basePath: cfg.baseBundle,
		log:      log,
		named:    map[string]*caSource{},
	}
}

// get returns the trust set of the named bundle, "" naming the default.
func (b *bundleSet) get(name string) (*trustSet, error) {
	src, err := b.source(name)
	if err != nil {
		return nil, err
	}
	return src.get()
}

// currentSHA names the version of a bundle being injected, "" if unknown.
func (b *bundleSet) currentSHA(name string) string {
	src, err := b.source(name)
	if err != nil {
		return ""
	}
	return src.currentSHA()
}

// source finds a bundle by name. A named bundle is a file of the bundles
// directory found by listing it: the name a pod gives is compared, never
// joined into a path.
func (b *bundleSet) source(name string) (*caSource, error) {
	if name == "" || name == defaultBundle {
		return b.def, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if src, ok := b.named[name]; ok {
		return src, nil
	}
	if b.dir == "" {
		return nil, fmt.Errorf("%w %q: no bundles directory is configured (CAINJEKT_BUNDLES_DIR)", errNoBundleNamed, printable(name, 64))
	}
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, fmt.Errorf("CA bundles directory: %w", err)
	}
	for _, e := range entries {
		if bundleName(e.Name()) == name {
			src := newCASource(name, b.dir+"/"+e.Name(), b.basePath, b.log)
			b.named[name] = src
			return src, nil
		}
	}
	return nil, fmt.Errorf("%w %q in %s", errNoBundleNamed, printable(name, 64), b.dir)
}

// bundleNameRule is what bundleName accepts, for the operator.
const bundleNameRule = `a bundle's file is NAME, NAME.pem or NAME.crt, where NAME is 1 to 63 lower-case letters, digits or '-', ` +
	`neither starting nor ending with '-', and not "default" (CAINJEKT_CA_FILE)`

// errNoBundleNamed is a pod's or namespace's bundle name that names none:
// theirs to fix, not the operator's.
var errNoBundleNamed = errors.New("no CA bundle named")

// bundleName is the name of a file of the bundles directory: NAME, NAME.pem
// or NAME.crt, a DNS label other than "default"; "" for anything else.
func bundleName(file string) string {
	name, found := strings.CutSuffix(file, ".pem")
	if !found {
		name = strings.TrimSuffix(file, ".crt")
	}
	if !dnsLabel(name) || name == defaultBundle {
		return ""
	}
	return name
}

// sources lists the bundles known so far, the default first. Named bundles
// are loaded in the bundles directory's order when the set is refreshed.
func (b *bundleSet) sources() []*caSource {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, 0, len(b.named))
	for n := range b.named {
		names = append(names, n)
	}
	slices.Sort(names)
	out := []*caSource{b.def}
	for _, n := range names {
		out = append(out, b.named[n])
	}
	return out
}

// refresh loads every bundle: the default and each file of the bundles
// directory, so a broken one is reported before a container needs it. A
// file that names no bundle, or one an earlier file of the directory's
// order names too (team-a and team-a.pem), is reported once, not at every
// refresh.
func (b *bundleSet) refresh() {
	if b.dir != "" {
		if entries, err := os.ReadDir(b.dir); err == nil {
			ignored := map[string]string{}
			fileOf := map[string]string{} // bundle name → the file it is read from
			for _, e := range entries {
				switch name := bundleName(e.Name()); {
				case name != "" && fileOf[name] == "":
					fileOf[name] = e.Name()
					b.readFrom(name, e.Name())
				case name != "":
					ignored[e.Name()] = fmt.Sprintf("bundle %q is read from %s", name, fileOf[name])
				case !strings.HasPrefix(e.Name(), ".."): // kubelet's, in a ConfigMap volume
					ignored[e.Name()] = bundleNameRule
				}
			}
			b.noteIgnored(ignored)
		}
	}
	for _, src := range b.sources() {
		src.get()
	}
}

// readFrom makes the named bundle's source read file, the first of the
// directory that names it. A source made earlier follows the file when
// it changes (a ConfigMap key renamed from team-a to team-a.pem) and
// keeps its last good version if the new file is unusable.
func (b *bundleSet) readFrom(name, file string) {
	path := b.dir + "/" + file
	b.mu.Lock()
	src := b.named[name]
	if src == nil {
		b.named[name] = newCASource(name, path, b.basePath, b.log)
	}
	b.mu.Unlock()
	if src != nil {
		src.readFrom(path)
	}
}

// noteIgnored keeps the ignored files of the bundles directory, each with
// why, and warns of new ones.
func (b *bundleSet) noteIgnored(ignored map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for file, why := range ignored {
		if b.ignored[file] != why {
			b.log.Warn("CA bundles directory: ignoring a file", "file", b.dir+"/"+file, "why", why)
		}
	}
	b.ignored = ignored
}

// ignoredFiles lists the files of the bundles directory that the last
// refresh ignored, and why.
func (b *bundleSet) ignoredFiles() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.ignored)
}

// snapshots reports every bundle for /metrics.
func (b *bundleSet) snapshots() []bundleSnapshot {
	var out []bundleSnapshot
	for _, src := range b.sources() {
		out = append(out, src.snapshot())
	}
	return out
}

// trustSet is what the plugin stages for an injected container.
type trustSet struct {
	bundle string // the bundle's name
	ours   *caBundle
	sha    string // of ours, naming this version in logs, status and metrics
	// noTrust is the bundle for images that trust nothing of their own:
	// the node's base bundle, if configured, plus ours.
	noTrust []byte
}
