package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func readTestdata(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// corpBundle is the injected bundle of most tests: two unrelated CAs.
func corpBundle(t testing.TB) *caBundle {
	t.Helper()
	b, err := parseStagedCAs(append(readTestdata(t, "certs/corp-root.pem"), readTestdata(t, "certs/corp-second.pem")...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mergedBundle is image with ours merged in, as the hook writes it.
func mergedBundle(image []byte, ours *caBundle) ([]byte, int) {
	tail, added := mergeTail(image, ours)
	return append(slices.Clone(image), tail...), added
}

func publicBundle(t testing.TB) []byte {
	t.Helper()
	var b []byte
	for _, n := range []string{"a", "b", "c"} {
		b = append(b, readTestdata(t, "certs/public-"+n+".pem")...)
	}
	return b
}

func TestParseStagedCAsTakesCertificatesOnly(t *testing.T) {
	ours := corpBundle(t)
	b, err := parseStagedCAs(append(slices.Clone(ours.pem), ours.pem...))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.certs) != len(ours.certs) || !bytes.Equal(b.pem, ours.pem) || b.certs[0].sum != ours.certs[0].sum {
		t.Errorf("staged CAs read back as %d certificates, want the %d staged, once each", len(b.certs), len(ours.certs))
	}
	key := readTestdata(t, "bundles/with-private-key.pem")
	for name, data := range map[string][]byte{
		"a private key":   key,
		"a trailing text": append(slices.Clone(ours.pem), "garbage\n"...),
		"headers":         []byte("-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n"),
		"nothing":         []byte("\n"),
	} {
		if _, err := parseStagedCAs(data); err == nil {
			t.Errorf("staged CAs with %s were accepted", name)
		}
	}
}

func TestMergeBundleKeepsImageBytesAndAddsMissing(t *testing.T) {
	ours := corpBundle(t)
	image := publicBundle(t)
	image = append([]byte("# image comment, kept\n"), image...)
	image = image[:len(image)-1] // no final newline

	merged, added := mergedBundle(image, ours)
	if added != 2 {
		t.Errorf("added %d, want 2", added)
	}
	if !bytes.HasPrefix(merged, image) {
		t.Error("merged bundle does not start with the image's bundle byte for byte")
	}
	if got := countCerts(merged); got != 5 {
		t.Errorf("merged bundle holds %d certificates, want 5", got)
	}
	again, added := mergedBundle(merged, ours)
	if added != 0 || !bytes.Equal(again, merged) {
		t.Errorf("merging twice added %d certificates", added)
	}
	if _, added := mergedBundle(nil, ours); added != 2 {
		t.Errorf("merge into nothing added %d", added)
	}
}

// An image whose bundle holds our CA right after an END line that goes on
// with its BEGIN line, as encoding/pem (and OpenSSL) read it, already
// trusts it: merging adds it once, not twice.
func TestMergeBundleFindsACAAfterAnOddENDLine(t *testing.T) {
	ours := corpBundle(t)
	image := append([]byte("-----BEGIN -----\nMAA=\n-----END "), ours.pem...)
	merged, added := mergedBundle(image, ours)
	if added != 0 || !bytes.Equal(merged, image) {
		t.Errorf("added %d of the CAs the bundle holds", added)
	}
}

func TestMergeBundleRecognisesTrustedCertificateBlocks(t *testing.T) {
	root := readTestdata(t, "certs/corp-root.pem")
	trusted, err := exec.Command("openssl", "x509", "-in", "testdata/certs/corp-root.pem", "-addtrust", "serverAuth").Output()
	if err != nil {
		t.Skipf("openssl: %v", err)
	}
	if !bytes.Contains(trusted, []byte("TRUSTED CERTIFICATE")) {
		t.Fatalf("openssl did not write a TRUSTED CERTIFICATE block:\n%s", trusted)
	}
	ours, err := parseStagedCAs(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, added := mergedBundle(trusted, ours); added != 0 {
		t.Errorf("a CA present as TRUSTED CERTIFICATE was added again")
	}
	block, _ := pem.Decode(root)
	if !bundleSums(trusted)[sha256.Sum256(block.Bytes)] {
		t.Error("bundleSums missed the certificate inside a TRUSTED CERTIFICATE block")
	}
	// The JVM fallback store, built from the image's trust, keeps it too.
	parts, err := fallbackStore(trusted)
	if err != nil {
		t.Fatal(err)
	}
	store, err := parseJavaStore(bytes.Join(parts, nil))
	if err != nil || len(store.entries) != 1 || !bytes.Equal(store.entries[0].der, block.Bytes) {
		t.Errorf("fallback store from a TRUSTED CERTIFICATE: %v %+v", err, store)
	}
}

// bundleSums returns the certificates a bundle holds, by the SHA-256 of
// their DER, decoding every block: the slow, sure way the tests check by.
func bundleSums(data []byte) map[[sha256.Size]byte]bool {
	sums := map[[sha256.Size]byte]bool{}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return sums
		}
		if der := certificateDER(block.Type, block.Bytes); der != nil {
			sums[sha256.Sum256(der)] = true
		}
	}
}

func holds(bundle []byte, c caCert) bool { return present(bundle, []caCert{c})[c.sum] }

func TestPresentFindsCertificatesHoweverWrapped(t *testing.T) {
	ours := corpBundle(t)
	c := ours.certs[0]
	wrapped := func(width int) []byte {
		b64 := base64.StdEncoding.EncodeToString(c.der)
		var out strings.Builder
		out.WriteString("# comment\n-----BEGIN CERTIFICATE-----\n")
		for len(b64) > width {
			out.WriteString(b64[:width] + "\n")
			b64 = b64[width:]
		}
		out.WriteString(b64 + "\n-----END CERTIFICATE-----\n")
		return []byte(out.String())
	}
	for _, width := range []int{64, 76, 48} {
		if !holds(append(publicBundle(t), wrapped(width)...), c) {
			t.Errorf("a certificate wrapped at %d was not found", width)
		}
	}
	if holds(publicBundle(t), c) {
		t.Error("found a certificate that is not there")
	}
	// Another certificate whose text starts the same way is not a find.
	decoy := append([]byte(nil), wrapped(64)...)
	i := strings.Index(string(decoy), "-----END")
	decoy[i-10] ^= 1
	if holds(decoy, c) {
		t.Error("a damaged block was taken for the certificate")
	}
}

// crafted are bundles shaped against a PEM scan, 8 MiB each (the most a
// bundle may be): BEGIN lines without an END that begin like our CAs,
// complete blocks that all begin like ours, BEGIN lines on one line, blocks
// whose END names another type.
func crafted(t testing.TB, ours *caBundle) map[string][]byte {
	const size = 8 << 20
	repeat := func(unit string) []byte { return bytes.Repeat([]byte(unit), size/len(unit)) }
	start := string(ours.certs[0].b64Start)
	return map[string][]byte{
		"unended BEGIN lines like ours":   quadraticPEM(nil, ours, size),
		"complete blocks like ours":       repeat("-----BEGIN CERTIFICATE-----\n" + start + "\n-----END CERTIFICATE-----\n"),
		"BEGIN without a line break":      repeat("-----BEGIN CERTIFICATE-----"),
		"BEGIN lines, one END at the end": append(repeat("-----BEGIN CERTIFICATE-----\n"+start+"\n"), "-----END CERTIFICATE-----\n"...),
		"ENDs of another type":            repeat("-----BEGIN CERTIFICATE-----\n" + start + "\n-----END X-----\n"),
	}
}

// Every scan of an image's PEM takes time linear in it: on each crafted
// 8 MiB bundle, finding ours, reading every certificate and rebuilding a
// bundle take about 2 to 20 ms here; a scan that went back to decode from
// each BEGIN line, as the hook and the plugin once did, takes hours.
func TestPEMScansAreLinearOnCraftedBundles(t *testing.T) {
	ours := corpBundle(t)
	for name, data := range crafted(t, ours) {
		began := time.Now()
		present(data, ours.certs)
		bundleCertificates(data, maxStoreEntries)
		mergeTail(data, ours)
		if took := time.Since(began); took > time.Second {
			t.Errorf("%s: %s, more than a second", name, took)
		}
	}
}

// pemBlocks finds what encoding/pem finds in real bundles, at the same
// offsets.
func TestPEMBlocksAgreeWithEncodingPEM(t *testing.T) {
	for _, data := range [][]byte{publicBundle(t), readTestdata(t, "bench/public-150.pem"), readTestdata(t, "bundles/with-private-key.pem"),
		[]byte("junk\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\r\n" +
			"-----BEGIN CERTIFICATE-----\n-----BEGIN TRUSTED CERTIFICATE-----\nMAMCAQA=\n-----END TRUSTED CERTIFICATE-----\n"),
		// Found by FuzzPEMBlocks: an END line of an empty type that goes on
		// with a BEGIN line ends no block, and the certificate after it counts.
		[]byte("-----BEGIN -----\nMAA=\n-----END -----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"),
		[]byte("-----BEGIN A-----\nMAA=\n-----END A----- \t\r\n-----BEGIN B-----\nMAA=\n-----END B-----x\n")} {
		var want []string
		for rest := data; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if len(block.Headers) == 0 {
				want = append(want, block.Type+" "+hex.EncodeToString(block.Bytes))
			}
		}
		var got []string
		for blk := range pemBlocks(data) {
			if content, err := blk.decode(); err == nil {
				got = append(got, blk.typ+" "+hex.EncodeToString(content))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("pemBlocks found\n%v\nencoding/pem\n%v", got, want)
		}
	}
}
