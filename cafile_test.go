//go:build !hookonly

package main

import (
	"bytes"
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
