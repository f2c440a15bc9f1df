package main

// Certificates and bundles: the CAs staged for a container, and merging them
// into a bundle an image already trusts without losing a byte of it. (The
// plugin parses and lints the operator's CA file: cafile.go, lint.go.)

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// caCert is one certificate of a bundle.
type caCert struct {
	der      []byte
	sum      [sha256.Size]byte
	b64Start []byte // the first 48 characters of its PEM text, for present
	// Known to the plugin only, which parsed the certificate when it loaded
	// the bundle: the hook's build links no X.509 parser (see parseStagedCAs).
	subject  string
	notAfter time.Time
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
		d := der(content)
		cert, _ := d.full(tagSequence)
		return cert
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

// mergeBundle returns image, byte for byte, followed by the certificates of
// ours it does not hold yet, and how many were added. Keeping the image's
// bytes untouched is what guarantees nothing it trusted is dropped, whatever
// comments, trust blocks or oddities it contains.
func mergeBundle(image []byte, ours *caBundle) ([]byte, int) {
	merged := make([]byte, 0, len(image)+len(ours.pem)+1)
	merged = append(merged, image...)
	if len(merged) > 0 && merged[len(merged)-1] != '\n' {
		merged = append(merged, '\n')
	}
	added := 0
	have := present(image, ours.certs)
	for _, c := range ours.certs {
		if have[c.sum] {
			continue
		}
		merged = append(merged, certPEM(c)...)
		added++
	}
	return merged, added
}

// certPEM encodes one certificate.
func certPEM(c caCert) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})
}

// maxBundleSize bounds every bundle read from an image or the node; the
// Mozilla bundle is about 220 KiB.
const maxBundleSize = 8 << 20

// imageStore is an image's OS trust store as the hook found it, and our
// CAs merged into each of its bundles: once, for the staged bundle and the
// OS store alike.
type imageStore struct {
	bundles []trustFile
	// failed lists candidate paths that exist but could not be read (a FIFO,
	// a directory, a file too large): they are reported and left alone.
	failed []trustFile
}

// readImageStore reads every bundle of the family's candidates that exists,
// once per real file (RHEL's three names for one bundle are read once), and
// merges ours into each unless the injection only detects.
func (in *injection) readImageStore(fam distroFamily) *imageStore {
	s := &imageStore{}
	seen := map[string]bool{}
	for _, p := range bundleCandidates(fam) {
		b := in.read(p, pemFormat)
		switch {
		case seen[b.canon]:
		case errors.Is(b.err, unix.ENOENT) || errors.Is(b.err, unix.ENOTDIR):
		case b.err != nil:
			s.failed = append(s.failed, b)
		default:
			s.bundles = append(s.bundles, b)
		}
		seen[b.canon] = true
	}
	return s
}

// trust is what the image trusted: its primary bundle, or nil if it had none.
func (s *imageStore) trust() []byte {
	if len(s.bundles) == 0 {
		return nil
	}
	return s.bundles[0].data
}

// mergedTrust is the bundle a replacing variable such as SSL_CERT_FILE must
// name: the image's own trust plus ours. An image without any trust gets
// noTrust instead (our CAs, and the node's base bundle if one is configured).
func (s *imageStore) mergedTrust(noTrust []byte) []byte {
	if len(s.trust()) == 0 { // no bundle, or an empty one: as trustFor
		return noTrust
	}
	return s.bundles[0].merged
}

// trustAttrs are what the staged files that hold the image's trust get:
// never more access than its bundle gives, so a trust store the image keeps
// from some users stays kept from them. Our own bundle is anyone's to read.
func (s *imageStore) trustAttrs() fileAttrs {
	if len(s.trust()) == 0 {
		return fileAttrs{mode: 0o644, uid: -1, gid: -1}
	}
	return attrsOf(s.bundles[0].info, 0o644)
}

// imagePartLen is how many bytes of a merged bundle are the image's own:
// mergeBundle keeps them, plus a newline if they lacked one, and appends.
func imagePartLen(image []byte) int {
	n := len(image)
	if n > 0 && image[n-1] != '\n' {
		n++
	}
	return n
}

// write merges our CAs into every bundle found, or creates the family's
// primary bundle (with the no-trust bundle) when the image has none, and
// drops our CAs into the family's anchor directory so that the
// distribution's own update tool, run later inside the container, keeps
// them. A bundle that could not be read is an error too: the image's store
// is then only partly ours.
func (s *imageStore) write(in *injection, fam distroFamily) ([]fileChange, error) {
	var changes []fileChange
	var errs []error
	note := func(c fileChange, err error) {
		changes = append(changes, c)
		errs = append(errs, err)
	}
	for _, b := range slices.Concat(s.failed, s.bundles) {
		note(in.apply(b))
	}
	if len(s.bundles) == 0 && len(s.failed) == 0 {
		note(in.create(fam.bundles[0], in.prefill, actionCreated, countCerts(in.prefill)))
	}
	if fam.anchorDir != "" {
		// One file for all our CAs: every distribution's update tool takes
		// a PEM file of several certificates.
		note(in.create(fam.anchorDir+"/cainjekt"+fam.anchorExt, in.ours.pem, actionAnchor, len(in.ours.certs)))
	}
	for _, c := range changes {
		in.merged[cmp.Or(c.Resolved, c.Path)] = true
	}
	return changes, errors.Join(errs...)
}
