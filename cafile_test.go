//go:build !hookonly

package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseCABundleDropsAllButCertificates(t *testing.T) {
	b, findings, err := parseCABundle(readTestdata(t, "bundles/with-private-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.certs) != 2 {
		t.Fatalf("kept %d certificates, want 2 (root and proxy CA, the duplicate and the broken one dropped)", len(b.certs))
	}
	if bytes.Contains(b.pem, []byte("PRIVATE")) || bytes.Contains(b.pem, []byte("comment")) {
		t.Errorf("staged PEM holds more than certificates:\n%s", b.pem)
	}
	var kinds []string
	for _, f := range findings {
		kinds = append(kinds, f.kind)
	}
	if want := []string{findPrivateKey, findDuplicate, findUnparsable}; !slices.Equal(kinds, want) {
		t.Errorf("findings %v, want %v", findings, want)
	}
	if !strings.Contains(findings[0].String(), "block 2: dropped a PRIVATE KEY block: a CA bundle must never hold a private key") {
		t.Errorf("private key finding: %s", findings[0])
	}
	if got := countCerts(b.pem); got != 2 {
		t.Errorf("re-encoded PEM holds %d certificates", got)
	}
}

func TestParseCABundleRejectsUnusableBundles(t *testing.T) {
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"empty":       {[]byte(" \n\t\n"), "empty"},
		"DER":         {readTestdata(t, "bundles/corp-root.der"), "no complete PEM block"},
		"key only":    {readTestdata(t, "bundles/only-private-key.pem"), "no usable CERTIFICATE"},
		"garbage PEM": {[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "no usable CERTIFICATE"},
		"truncated":   {readTestdata(t, "certs/corp-root.pem")[:200], "no complete PEM block"},
	} {
		_, _, err := parseCABundle(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to say %q", name, err, tc.want)
		}
	}
}

// Two files naming one bundle: the first of the directory's order is
// read, the other is reported once, and doctor names both. When the first
// goes (a ConfigMap key renamed from team-a to team-a.pem), the bundle is
// read from the one left, not kept as it was.
func TestBundleNamedByTwoFiles(t *testing.T) {
	dir := t.TempDir()
	root, second := string(readTestdata(t, "certs/corp-root.pem")), string(readTestdata(t, "certs/corp-second.pem"))
	writeTree(t, dir, map[string]string{"team-a": root, "team-a.pem": second})
	b, log, doctor := bundlesDirSet(t, dir)
	subject := func() string {
		t.Helper()
		set, err := b.get("team-a")
		if err != nil || len(set.ours.certs) != 1 {
			t.Fatalf("bundle team-a: %v", err)
		}
		s, _ := about(set.ours.certs[0])
		return s
	}
	rootSubject, secondSubject := subjectOf(t, root), subjectOf(t, second)
	for range 3 {
		b.refresh()
	}
	if n := strings.Count(log.String(), "file="+filepath.Join(dir, "team-a.pem")+` why="bundle \"team-a\" is read from team-a"`); n != 1 {
		t.Errorf("team-a.pem reported %d times, want once:\n%s", n, log)
	}
	if got := subject(); got != rootSubject {
		t.Errorf("team-a is %s, want the first file's, %s", got, rootSubject)
	}
	stdout := doctor()
	if !strings.Contains(stdout, `warning: team-a.pem is ignored: bundle "team-a" is read from team-a`) {
		t.Errorf("doctor:\n%s", stdout)
	}

	if err := os.Remove(filepath.Join(dir, "team-a")); err != nil {
		t.Fatal(err)
	}
	b.refresh()
	if got := subject(); got != secondSubject {
		t.Errorf("after team-a went, team-a is %s, want team-a.pem's, %s", got, secondSubject)
	}
	if ignored := b.ignoredFiles(); len(ignored) != 0 {
		t.Errorf("still ignored: %v", ignored)
	}
}

// bundlesDirSet is the bundle set of a plugin whose bundles directory is
// dir, logging into the buffer, and doctor's output on that configuration.
func bundlesDirSet(t *testing.T, dir string) (*bundleSet, *bytes.Buffer, func() string) {
	t.Helper()
	caFile, _ := filepath.Abs("testdata/certs/corp-root.pem")
	cfg, err := loadConfig([]string{"--ca-file", caFile, "--bundles-dir", dir}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	doctor := func() string {
		stdout, _, _ := runBinary(t, nil, nil, "doctor", "--ca-file", caFile, "--bundles-dir", dir,
			"--dynamic-ca-root", filepath.Join(dir, "absent"), "--socket", filepath.Join(dir, "nri.sock"))
		return stdout
	}
	return newBundleSet(cfg, newLogger(&log, "text", slog.LevelInfo)), &log, doctor
}

// subjectOf is the subject of the one certificate of a PEM file.
func subjectOf(t *testing.T, pemData string) string {
	t.Helper()
	block, _ := pem.Decode([]byte(pemData))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Subject.String()
}

// A file of the bundles directory whose name is no bundle's is reported
// once, not at every poll, and doctor names it.
func TestMisnamedBundleFiles(t *testing.T) {
	dir := t.TempDir()
	corp := string(readTestdata(t, "certs/corp-second.pem"))
	// A ConfigMap volume: each key a symlink into ..data.
	writeTree(t, dir, map[string]string{
		"..2026_11_23/tenant-a.pem":   corp,
		"..2026_11_23/Team_C.pem":     corp,
		"..2026_11_23/default.pem":    corp,
		"..2026_11_23/team-b.crt.pem": corp,
		"..data":                      "->..2026_11_23",
		"tenant-a.pem":                "->..data/tenant-a.pem",
		"Team_C.pem":                  "->..data/Team_C.pem",
		"default.pem":                 "->..data/default.pem",
		"team-b.crt.pem":              "->..data/team-b.crt.pem",
	})
	b, log, doctor := bundlesDirSet(t, dir)
	for range 3 {
		b.refresh()
	}
	for _, file := range []string{"Team_C.pem", "default.pem", "team-b.crt.pem"} {
		if n := strings.Count(log.String(), "file="+filepath.Join(dir, file)); n != 1 {
			t.Errorf("%s reported %d times, want once:\n%s", file, n, log)
		}
	}
	if strings.Contains(log.String(), "..data") || !strings.Contains(log.String(), "lower-case letters, digits or '-'") {
		t.Errorf("log:\n%s", log)
	}
	if _, err := b.get("team-b"); err == nil {
		t.Error("team-b.crt.pem is read as the bundle team-b")
	}
	stdout := doctor()
	if !strings.Contains(stdout, "ok   CA bundles directory "+dir+": warning: Team_C.pem is ignored: a bundle's file is NAME") ||
		!strings.Contains(stdout, "default.pem is ignored") || !strings.Contains(stdout, "ok   CA bundle tenant-a") {
		t.Errorf("doctor:\n%s", stdout)
	}
}
