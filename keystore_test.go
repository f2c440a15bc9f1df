package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseJavaStores(t *testing.T) {
	for _, tc := range []struct {
		file, format, password string
	}{
		{"cacerts.jks", storeJKS, "changeit"},
		{"cacerts-passwordless.p12", storePKCS12, ""},
	} {
		s, err := parseJavaStore(readTestdata(t, "java/"+tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if s.format != tc.format || s.password != tc.password || len(s.entries) != 3 {
			t.Errorf("%s: format %s password %q entries %d", tc.file, s.format, s.password, len(s.entries))
		}
		if s.entries[0].alias != "public-a" {
			t.Errorf("%s: first alias %q", tc.file, s.entries[0].alias)
		}
		public := bundleSums(publicBundle(t))
		for _, e := range s.entries {
			if !public[sha256Sum(e.der)] {
				t.Errorf("%s: entry %s is not one of the fixture certificates", tc.file, e.alias)
			}
		}
	}
}

func TestUnsupportedJavaStoresAreRefused(t *testing.T) {
	for _, file := range []string{"cacerts-changeit.p12", "cacerts-other-password.jks"} {
		if _, err := parseJavaStore(readTestdata(t, "java/"+file)); !errors.Is(err, errStoreUnsupported) {
			t.Errorf("%s: %v, want errStoreUnsupported", file, err)
		}
	}
	for name, data := range map[string][]byte{
		"PEM":       readTestdata(t, "certs/public-a.pem"),
		"truncated": readTestdata(t, "java/cacerts.jks")[:100],
		"empty":     nil,
	} {
		if _, err := parseJavaStore(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestJavaStoresRoundTripThroughKeytool writes each format with our CAs
// added and has the JDK's own keytool read it back.
func TestJavaStoresRoundTripThroughKeytool(t *testing.T) {
	keytool := requireTool(t, "keytool")
	ours := corpBundle(t)
	for _, file := range []string{"cacerts.jks", "cacerts-passwordless.p12"} {
		s, err := parseJavaStore(readTestdata(t, "java/"+file))
		if err != nil {
			t.Fatal(err)
		}
		if added := s.add(ours); added != 2 {
			t.Errorf("%s: added %d", file, added)
		}
		if added := s.add(ours); added != 0 {
			t.Errorf("%s: added %d twice", file, added)
		}
		parts, err := s.marshal()
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Join(parts, nil)
		again, err := parseJavaStore(data)
		if err != nil || again.format != s.format || len(again.entries) != 5 {
			t.Fatalf("%s: reparse: %v", file, err)
		}
		p := filepath.Join(t.TempDir(), file)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(keytool, "-list", "-keystore", p, "-storepass", "changeit").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: keytool: %v\n%s", file, err, out)
		}
		if n := strings.Count(string(out), "trustedCertEntry"); n != 5 {
			t.Errorf("%s: keytool sees %d trusted certificates, want 5:\n%s", file, n, out)
		}
		if !bytes.Contains(out, []byte("cainjekt-"+ours.certs[0].id())) {
			t.Errorf("%s: keytool does not list our alias:\n%s", file, out)
		}
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// The OIDs are written as the bytes of their encoding; encoding/asn1 says
// they are the OIDs their comments name.
func TestTruststoreOIDs(t *testing.T) {
	for _, tc := range []struct {
		got  []byte
		want asn1.ObjectIdentifier
	}{
		{oidData, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}},
		{oidCertBag, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}},
		{oidX509, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}},
		{oidFriendlyName, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 20}},
		{oidTrustedUsage, asn1.ObjectIdentifier{2, 16, 840, 1, 113894, 746875, 1, 1}},
		{oidAnyKeyUsage, asn1.ObjectIdentifier{2, 5, 29, 37, 0}},
	} {
		if full, _ := asn1.Marshal(tc.want); !bytes.Equal(full[2:], tc.got) {
			t.Errorf("%v is % x, not % x", tc.want, full[2:], tc.got)
		}
	}
}
