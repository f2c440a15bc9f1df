package main

// Certificates and bundles: the CAs staged for a container, and merging them
// into a bundle an image already trusts without losing a byte of it. (The
// plugin parses and lints the operator's CA file: cafile.go, lint.go.)

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"iter"
	"strings"
)

// caCert is one certificate of a bundle. The hook's build links no X.509
// parser (see parseStagedCAs): what the plugin shows of a certificate it
// parses where it shows it (about).
type caCert struct {
	der      []byte
	sum      [sha256.Size]byte
	b64Start []byte // the first 48 characters of its PEM text, for present
}

func newCACert(der []byte) caCert {
	return caCert{der: der, sum: sha256.Sum256(der), b64Start: b64Start(der)}
}

// id is a short stable name for the certificate, used in anchor file names.
func (c caCert) id() string { return hex.EncodeToString(c.sum[:8]) }

// caBundle is a validated, deduplicated set of certificates with its PEM.
type caBundle struct {
	certs []caCert
	pem   []byte // the certificates re-encoded: no headers, comments or other blocks
}

// add appends c unless the bundle holds it already, and says which.
func (b *caBundle) add(c caCert) bool {
	for _, have := range b.certs {
		if have.sum == c.sum {
			return false
		}
	}
	b.certs = append(b.certs, c)
	b.pem = append(b.pem, certPEM(c)...)
	return true
}

// sha256 identifies the bundle's content, for logs and status.
func (b *caBundle) sha256() string {
	sum := sha256.Sum256(b.pem)
	return hex.EncodeToString(sum[:])
}

// parseStagedCAs reads the CAs the plugin staged for a container: its own
// output, written from a bundle it validated, in a directory only root can
// write. The hook takes the CERTIFICATE blocks as they are and refuses a
// file holding anything else, rather than parse X.509 a second time: its
// binary then links no X.509 parser and starts sooner, and every container
// start waits for it.
func parseStagedCAs(data []byte) (*caBundle, error) {
	b := &caBundle{}
	var err error
	end := 0
	for blk := range pemBlocks(data) {
		if strings.TrimSpace(string(data[end:blk.start])) != "" {
			return nil, errors.New("text that is no PEM block")
		}
		end = blk.end
		der, derErr := blk.decode()
		if blk.typ != "CERTIFICATE" || derErr != nil {
			err = fmt.Errorf("a %q block: only certificates are staged", printable(blk.typ, 64))
			break
		}
		b.add(newCACert(der))
	}
	switch {
	case err != nil:
		return nil, err
	case len(bytes.TrimSpace(data[end:])) > 0:
		return nil, errors.New("text that is no PEM block")
	case len(b.certs) == 0:
		return nil, errors.New("no certificate")
	}
	return b, nil
}

// pemBlock is one complete PEM block of a bundle.
type pemBlock struct {
	typ        string
	body       []byte // the base64 text between the BEGIN and END lines
	start, end int    // the block's offsets in the bundle, END line included
}

// decode returns the block's content; headers (RFC 1421's Proc-Type and
// the like), which no certificate has, make it fail.
func (b pemBlock) decode() ([]byte, error) {
	clean := make([]byte, 0, len(b.body))
	for _, c := range b.body {
		if c != '\n' && c != '\r' && c != ' ' && c != '\t' {
			clean = append(clean, c)
		}
	}
	der := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	n, err := base64.StdEncoding.Decode(der, clean)
	return der[:n], err
}

var (
	pemBegin = []byte("-----BEGIN ")
	pemEnd   = []byte("-----END ")
	pemTail  = []byte("-----")
)

// seeker finds sep in data at or after an offset that never decreases
// from one call to the next. It remembers its last hit, so every byte of
// data is scanned once, however the caller's walk goes.
type seeker struct {
	data, sep []byte
	at        int // the last hit; -1: none at or after the last search start
	searched  bool
}

func (s *seeker) next(off int) int {
	if s.searched && (s.at < 0 || s.at >= off) {
		return s.at
	}
	s.searched, s.at = true, -1
	if i := bytes.Index(s.data[off:], s.sep); i >= 0 {
		s.at = off + i
	}
	return s.at
}

// pemBlocks yields the complete PEM blocks of data in order, in one pass:
// a BEGIN line without its END, or with another BEGIN before it, is text
// between blocks, as OpenSSL and encoding/pem take it. The bundles come
// from images: a scan that went back to decode from each BEGIN line to the
// next END line would take time quadratic in a crafted bundle.
func pemBlocks(data []byte) iter.Seq[pemBlock] {
	return func(yield func(pemBlock) bool) {
		begins := seeker{data: data, sep: pemBegin}
		ends := seeker{data: data, sep: pemEnd}
		lines := seeker{data: data, sep: []byte{'\n'}}
		for off := 0; ; {
			start := begins.next(off)
			if start < 0 {
				return
			}
			typeAt := start + len(pemBegin)
			nl := lines.next(typeAt)
			end := ends.next(typeAt)
			if nl < 0 || end < 0 {
				return
			}
			off = typeAt
			typ, ok := bytes.CutSuffix(bytes.TrimRight(data[typeAt:nl], " \t\r"), pemTail)
			if !ok || end < nl || begins.next(off) < end && begins.next(off) >= 0 {
				continue
			}
			trailer := data[end+len(pemEnd):]
			if !bytes.HasPrefix(trailer, typ) || !bytes.HasPrefix(trailer[len(typ):], pemTail) {
				continue
			}
			blockEnd := end + len(pemEnd) + len(typ) + len(pemTail)
			if !lineEnds(data[blockEnd:]) {
				// "-----END -----BEGIN CERTIFICATE-----" ends no block of
				// an empty type: what follows may begin one.
				continue
			}
			if !yield(pemBlock{typ: string(typ), body: data[nl+1 : end], start: start, end: blockEnd}) {
				return
			}
			off = blockEnd
		}
	}
}

// lineEnds says whether data begins with the end of a line: blanks, then
// a line break or nothing. Each END line is looked at once, so the scan
// stays linear.
func lineEnds(data []byte) bool {
	rest := bytes.TrimLeft(data, " \t\r")
	return len(rest) == 0 || rest[0] == '\n'
}

// certificateDER returns the certificate a CERTIFICATE block holds, or the
// one of a TRUSTED CERTIFICATE block (OpenSSL's, the certificate followed
// by trust settings); nil for any other block.
func certificateDER(typ string, content []byte) []byte {
	switch typ {
	case "CERTIFICATE":
		return content
	case "TRUSTED CERTIFICATE":
		d := newDER(content)
		return d.full(tagSequence)
	}
	return nil
}

// bundleCertificates decodes the certificates of a bundle, at most max of
// them; more is an error.
func bundleCertificates(data []byte, max int) ([][]byte, error) {
	var certs [][]byte
	for blk := range pemBlocks(data) {
		content, err := blk.decode()
		if err != nil {
			continue
		}
		if der := certificateDER(blk.typ, content); der != nil {
			if len(certs) == max {
				return nil, fmt.Errorf("%w: more than %d certificates", errTooLarge, max)
			}
			certs = append(certs, der)
		}
	}
	return certs, nil
}

// countCerts counts the certificate blocks of a bundle file.
func countCerts(data []byte) int {
	return bytes.Count(data, []byte("-----BEGIN CERTIFICATE-----")) + bytes.Count(data, []byte("-----BEGIN TRUSTED CERTIFICATE-----"))
}

// b64Start is how a certificate's base64 text begins: its first 48
// characters, which every PEM encoder writes the same way before its first
// line break (64 characters for OpenSSL and Go).
func b64Start(der []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(der[:min(b64StartLen/4*3, len(der))]))
}

// b64StartLen is how many characters of a certificate's base64 present compares.
const b64StartLen = 48

// present says which of certs a PEM bundle holds. Decoding a whole bundle
// of 150 roots to find out takes a millisecond; instead it compares how
// each block's text begins with how each of certs begins, and decodes only
// a block that begins alike. A bundle wrapped at fewer than 48 characters
// defeats the comparison and gets a certificate a second time: harmless to
// every runtime, never a loss. It takes time linear in the bundle, however
// many blocks begin like ours.
func present(bundle []byte, certs []caCert) map[[sha256.Size]byte]bool {
	byStart := map[string][]caCert{}
	for _, c := range certs {
		byStart[string(c.b64Start)] = append(byStart[string(c.b64Start)], c)
	}
	found := map[[sha256.Size]byte]bool{}
	for blk := range pemBlocks(bundle) {
		if len(found) == len(certs) {
			break
		}
		alike := byStart[string(blk.body[:min(len(blk.body), b64StartLen)])]
		if len(alike) == 0 {
			continue
		}
		content, err := blk.decode()
		if err != nil {
			continue
		}
		der := certificateDER(blk.typ, content)
		for _, c := range alike {
			if bytes.Equal(der, c.der) {
				found[c.sum] = true
			}
		}
	}
	return found
}

// mergeTail returns what merging ours into image appends to it, and how
// many certificates that adds: a line break if image lacks its last, then
// each certificate of ours it does not hold yet. The image's bytes stay as
// they are, which is what guarantees nothing it trusted is dropped,
// whatever comments, trust blocks or oddities it contains.
func mergeTail(image []byte, ours *caBundle) ([]byte, int) {
	var tail []byte
	if len(image) > 0 && image[len(image)-1] != '\n' {
		tail = append(tail, '\n')
	}
	added := 0
	have := present(image, ours.certs)
	for _, c := range ours.certs {
		if !have[c.sum] {
			tail = append(tail, certPEM(c)...)
			added++
		}
	}
	return tail, added
}

// certPEM encodes one certificate.
func certPEM(c caCert) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})
}

// maxBundleSize bounds every bundle read from an image or the node; the
// Mozilla bundle is about 220 KiB.
const maxBundleSize = 8 << 20
