package main

// The operator's CA bundle file, re-read when it changes.
//
// A ConfigMap update swaps the file (kubelet renames a symlink), so a stat
// before each use finds the change at once; a periodic check also reports a
// broken file before any container needs it. A file that does not load never
// replaces the last good bundle.

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// trustSet is what the plugin stages for every injected container.
type trustSet struct {
	ours *caBundle
	sha  string // of ours, naming this version in logs, status and metrics
	// noTrust is the bundle for images that trust nothing of their own:
	// the node's base bundle, if configured, plus ours.
	noTrust []byte
}

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

// caSource loads the CA file and the optional base bundle.
type caSource struct {
	caPath, basePath string
	log              *slog.Logger
	metrics          *metrics

	mu      sync.Mutex
	good    *trustSet
	tried   [2]fileKey // the versions last loaded, or last failed to load
	lastErr error
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
		return nil, fmt.Errorf("no usable CA bundle: %w", s.lastErr)
	}
	return s.good, nil
}

// currentSHA names the bundle being injected, "" if none ever loaded.
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
		s.metrics.bundleReloads.inc(reasonOf(err))
		if s.good != nil {
			s.log.Error("CA bundle unusable; keeping the last good one", "file", s.caPath, "error", err, "kept_sha256", s.good.sha)
		} else {
			s.log.Error("CA bundle unusable; opted-in containers are handled by the fail policy", "file", s.caPath, "error", err)
		}
		return
	}
	s.good = set
	s.metrics.bundleReloads.inc("ok")
	kinds := make([]string, len(findings))
	for i, f := range findings {
		kinds[i] = f.kind
	}
	s.metrics.bundleFindings.setCounts(kinds)
	s.metrics.bundleCerts.Store(int64(len(set.ours.certs)))
	s.metrics.bundleLoaded.Store(time.Now().Unix())
	subjects := make([]string, len(set.ours.certs))
	for i, c := range set.ours.certs {
		subjects[i] = c.subject
	}
	s.log.Info("CA bundle loaded", "file", s.caPath, "certificates", len(set.ours.certs), "sha256", set.sha, "subjects", subjects)
}

// loadTrustSet reads and validates the CA file and the base bundle, and
// lints the CA file's certificates.
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

// readHostFile reads a regular file of the operator's, bounded in size.
// Symlinks are followed: a ConfigMap volume is made of them.
func readHostFile(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", p, errNotRegular)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(data) > maxBundleSize {
		return nil, fmt.Errorf("%s: %w (limit %d bytes)", p, errTooLarge, maxBundleSize)
	}
	return data, nil
}
