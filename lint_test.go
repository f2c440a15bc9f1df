//go:build !hookonly

package main

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLintFindsWhatRuntimesReject(t *testing.T) {
	now := time.Now()
	year := 365 * 24 * time.Hour
	valid := func(cn string) certSpec {
		return certSpec{cn: cn, notBefore: now.Add(-time.Hour), notAfter: now.Add(year), isCA: true, keyUsage: x509.KeyUsageCertSign}
	}
	root := issue(t, valid("good root"))
	inter := valid("intermediate")
	inter.parent = root
	expired := valid("expired")
	expired.notBefore, expired.notAfter = now.Add(-2*year), now.Add(-year)
	future := valid("future")
	future.notBefore = now.Add(year)
	future.notAfter = now.Add(2 * year)
	soon := valid("soon")
	soon.notAfter = now.Add(10 * 24 * time.Hour)
	leaf := valid("leaf")
	leaf.isCA, leaf.keyUsage = false, x509.KeyUsageDigitalSignature
	lax := valid("lax basic constraints")
	lax.bcNotCritical = true

	want := map[string][]string{
		"good root":             nil,
		"intermediate":          {findDotnetNotRoot},
		"expired":               {findExpired},
		"future":                {findNotYetValid},
		"soon":                  {findExpiresSoon},
		"leaf":                  {findNotCA},
		"lax basic constraints": {findPythonStrict},
	}
	bundle := slices.Concat(root.pem, issue(t, inter).pem, issue(t, expired).pem, issue(t, future).pem,
		issue(t, soon).pem, issue(t, leaf).pem, issue(t, lax).pem)
	b, findings, err := parseCABundle(bundle)
	if err != nil || len(findings) != 0 {
		t.Fatalf("parse: %v %v", err, findings)
	}
	got := map[string][]string{}
	for _, f := range lintCertificates(b, now) {
		cn := strings.TrimPrefix(f.subject, "CN=")
		got[cn] = append(got[cn], f.kind)
	}
	for cn, kinds := range want {
		if !slices.Equal(got[cn], kinds) {
			t.Errorf("%s: findings %v, want %v", cn, got[cn], kinds)
		}
	}
}

func TestTrustedCertificateBlocksAreConverted(t *testing.T) {
	root := readTestdata(t, "certs/corp-root.pem")
	block, _ := pem.Decode(root)
	aux, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Class: asn1.ClassUniversal})
	trusted := pem.EncodeToMemory(&pem.Block{Type: "TRUSTED CERTIFICATE", Bytes: append(block.Bytes, aux...)})
	b, findings, err := parseCABundle(trusted)
	if err != nil || len(b.certs) != 1 || string(b.pem) != string(root) {
		t.Fatalf("converted: %v, %d certs", err, len(b.certs))
	}
	if len(findings) != 1 || findings[0].kind != findTrustedCertificate {
		t.Errorf("findings %v", findings)
	}
}

// cainjekt lint's exit codes: 0 usable, 1 errors, 2 usage or unreadable,
// 3 warnings with --strict.
func TestLintCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	huge := write("huge.pem", []byte(strings.Repeat(string(readTestdata(t, "certs/corp-root.pem")), 20<<20/700)))
	now, year := time.Now(), 365*24*time.Hour
	leaf := write("leaf.pem", slices.Concat(readTestdata(t, "certs/corp-root.pem"),
		issue(t, certSpec{cn: "a server", notBefore: now.Add(-time.Hour), notAfter: now.Add(year), keyUsage: x509.KeyUsageDigitalSignature}).pem))
	lax := write("lax.pem", issue(t, certSpec{cn: "lax", notBefore: now.Add(-time.Hour), notAfter: now.Add(year), bcNotCritical: true, keyUsage: x509.KeyUsageCertSign}).pem)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"lint", "testdata/certs/corp-root.pem"}, 0, "certificate CN=Example Corp Root CA,O=Example Corp, expires 2126"},
		{[]string{"lint", "--strict", "testdata/certs/corp-root.pem"}, 0, "certificate CN=Example Corp Root CA"},
		{[]string{"lint", lax}, 0, "warning: python_strict: block 1"},
		{[]string{"lint", "--strict", lax}, 3, "warning: python_strict: block 1"},
		{[]string{"lint", "testdata/bundles/with-private-key.pem"}, 1, "error: private_key: block 2"},
		{[]string{"lint", "--strict", "testdata/bundles/with-private-key.pem"}, 1, "error: private_key: block 2"},
		{[]string{"lint", leaf}, 1, "error: not_ca: block 2 (CN=a server)"},
		{[]string{"lint", "testdata/bundles/only-private-key.pem"}, 1, "unusable (no_certificate)"},
		{[]string{"lint", "testdata/bundles/corp-root.der"}, 1, "unusable (not_pem)"},
		{[]string{"lint", huge}, 1, "unusable (too_large)"},
		{[]string{"lint", dir}, 2, "not a regular file"},
		{[]string{"lint", filepath.Join(dir, "missing.pem")}, 2, "no such file"},
		{[]string{"lint"}, 2, "usage: cainjekt lint"},
		{[]string{"lint", "--stric", lax}, 2, "flag provided but not defined: -stric"},
	} {
		stdout, stderr, code := runBinary(t, nil, nil, tc.args...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.out) {
			t.Errorf("%v: exit %d, want %d and %q:\n%s%s", tc.args, code, tc.code, tc.out, stdout, stderr)
		}
	}
}
