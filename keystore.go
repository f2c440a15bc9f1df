package main

// Java truststores: the JVM's cacerts, read and written without a JDK.
//
// A JVM does not read PEM (no JDK has a "PEM" KeyStore type), so trusting a
// CA means a real store. Two formats are handled, both with certificates
// only, which is what every JDK ships as cacerts:
//
//   - JKS (JDK 17 and older, RHEL's and Alpine's p11-kit extracts): entries in
//     the clear, then a SHA-1 over a password and the content. The password
//     only guards integrity; a store is rewritten only if it verified with
//     "changeit" or the empty password, the ones a JVM uses for cacerts.
//   - password-less PKCS#12 (JDK 18 and later): certificate bags in the
//     clear, each marked trusted with Oracle's trusted-key-usage attribute,
//     and no MAC.
//
// Anything else (private keys, encrypted bags, another password) is not
// rewritten: the hook then gives the JVM a store of its own (java.go).
//
// A cacerts comes from an image. Both formats are read by walking the bytes
// in place, each value a slice of the input, counts checked as the walk
// goes: parsing is linear and allocates only the entries it keeps, so that
// neither millions of tiny PKCS#12 bags nor an OID of millions of arcs can
// make the hook's memory grow before the limit refuses them.

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"time"
	"unicode/utf16"
)

const (
	storeJKS    = "jks"
	storePKCS12 = "pkcs12"

	jksMagic          = 0xFEEDFEED
	jksVersion        = 2
	jksTrustedCertTag = 2
	maxStoreEntries   = 10000 // a cacerts holds about 150
	// storePassword is the password every JDK's cacerts has, if any.
	storePassword = "changeit"
)

var errStoreUnsupported = errors.New("unsupported truststore")

// javaStore is a truststore of certificates only.
type javaStore struct {
	format   string
	password string // JKS: the integrity password it verified with
	entries  []storeEntry
	// The entries of a JKS store read, as they are in it, and how many:
	// the store is written with them as they are, and those added after.
	read  []byte
	nRead int
}

type storeEntry struct {
	alias   string
	created int64 // JKS: milliseconds since the epoch
	der     []byte
}

// parseJavaStore reads a JKS or password-less PKCS#12 truststore.
func parseJavaStore(data []byte) (*javaStore, error) {
	if len(data) >= 4 && binary.BigEndian.Uint32(data) == jksMagic {
		return parseJKS(data)
	}
	return parsePKCS12(data)
}

// add appends the certificates of ours the store lacks, and returns how many.
func (s *javaStore) add(ours *caBundle) int {
	have := map[[sha256.Size]byte]bool{}
	for _, e := range s.entries {
		have[sha256.Sum256(e.der)] = true
	}
	added := 0
	now := time.Now().UnixMilli()
	for _, c := range ours.certs {
		if have[c.sum] {
			continue
		}
		s.entries = append(s.entries, storeEntry{alias: "cainjekt-" + c.id(), created: now, der: c.der})
		added++
	}
	return added
}

// marshal writes the store in its own format, in parts written one after
// another. A JKS store keeps the bytes of the entries it was read with, so
// that merging a JVM's cacerts copies none of it in memory: only its
// count, the entries added and its digest are new.
func (s *javaStore) marshal() ([][]byte, error) {
	if s.format == storePKCS12 {
		return [][]byte{marshalPKCS12(s.entries)}, nil
	}
	head := binary.BigEndian.AppendUint32(nil, jksMagic)
	head = binary.BigEndian.AppendUint32(head, jksVersion)
	head = binary.BigEndian.AppendUint32(head, uint32(len(s.entries)))
	var added []byte
	for _, e := range s.entries[s.nRead:] {
		if len(e.alias) > 0xFFFF {
			return nil, fmt.Errorf("JKS: alias of %d bytes", len(e.alias))
		}
		added = binary.BigEndian.AppendUint32(added, jksTrustedCertTag)
		added = appendUTF(added, e.alias)
		added = binary.BigEndian.AppendUint64(added, uint64(e.created))
		added = appendUTF(added, "X.509")
		added = binary.BigEndian.AppendUint32(added, uint32(len(e.der)))
		added = append(added, e.der...)
	}
	parts := [][]byte{head, s.read, added}
	return append(parts, jksDigest(s.password, parts...)), nil
}

// appendUTF appends s as Java's writeUTF does, for the ASCII of aliases.
func appendUTF(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// JKS.

// cursor reads the big-endian fields of a JKS stream; the first field that
// runs past the end sticks as its error.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) take(n int) []byte {
	if c.err == nil && (n < 0 || n > len(c.b)) {
		c.err = io.ErrUnexpectedEOF
	}
	if c.err != nil {
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u32() uint32 {
	if b := c.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// utf reads Java's modified UTF-8 with a 16-bit length; aliases are ASCII in
// practice, and anything else is kept as the bytes it is.
func (c *cursor) utf() string {
	if b := c.take(2); b != nil {
		return string(c.take(int(binary.BigEndian.Uint16(b))))
	}
	return ""
}

func parseJKS(data []byte) (*javaStore, error) {
	if len(data) < 4+4+4+sha1.Size {
		return nil, fmt.Errorf("JKS: %w", io.ErrUnexpectedEOF)
	}
	body, sum := data[:len(data)-sha1.Size], data[len(data)-sha1.Size:]
	s := &javaStore{format: storeJKS, password: storePassword, read: body[12:]}
	if !bytes.Equal(jksDigest(s.password, body), sum) {
		if s.password = ""; !bytes.Equal(jksDigest(s.password, body), sum) {
			return nil, fmt.Errorf("%w: JKS integrity does not verify with the default passwords", errStoreUnsupported)
		}
	}
	c := &cursor{b: body[4:]}
	if v := c.u32(); c.err == nil && v != jksVersion {
		return nil, fmt.Errorf("%w: JKS version %d", errStoreUnsupported, v)
	}
	count := c.u32()
	if count > maxStoreEntries {
		return nil, fmt.Errorf("%w: %d entries", errStoreUnsupported, count)
	}
	s.entries = make([]storeEntry, 0, count)
	for len(s.entries) < int(count) && c.err == nil {
		if tag := c.u32(); c.err == nil && tag != jksTrustedCertTag {
			return nil, fmt.Errorf("%w: JKS entry of type %d (not a trusted certificate)", errStoreUnsupported, tag)
		}
		e := storeEntry{alias: c.utf()}
		if b := c.take(8); b != nil {
			e.created = int64(binary.BigEndian.Uint64(b))
		}
		if typ := c.utf(); c.err == nil && typ != "X.509" {
			return nil, fmt.Errorf("%w: certificate type %q", errStoreUnsupported, typ)
		}
		e.der = c.take(int(c.u32()))
		s.entries = append(s.entries, e)
	}
	if c.err == nil && len(c.b) != 0 {
		c.err = errors.New("trailing data")
	}
	if c.err != nil {
		return nil, fmt.Errorf("JKS: %w", c.err)
	}
	s.nRead = len(s.entries)
	return s, nil
}

// jksDigest is JKS's integrity check: SHA-1 over the password as UTF-16BE,
// the phrase "Mighty Aphrodite", and the store.
func jksDigest(password string, body ...[]byte) []byte {
	h := sha1.New()
	h.Write(encodeBMP(password))
	h.Write([]byte("Mighty Aphrodite"))
	for _, b := range body {
		h.Write(b)
	}
	return h.Sum(nil)
}

// PKCS#12, as the JDK writes a password-less truststore (RFC 7292), in DER.

// DER tags used below.
const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagOID         = 0x06
	tagBMPString   = 0x1e
	tagSequence    = 0x30
	tagSet         = 0x31
	tagExplicit0   = 0xa0
)

// The OIDs of a truststore, as the contents of their encoding.
var (
	oidData         = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}                   // 1.2.840.113549.1.7.1
	oidCertBag      = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03}       // 1.2.840.113549.1.12.10.1.3
	oidX509         = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01}             // 1.2.840.113549.1.9.22.1
	oidFriendlyName = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14}                   // 1.2.840.113549.1.9.20
	oidTrustedUsage = []byte{0x60, 0x86, 0x48, 0x01, 0x86, 0xf9, 0x66, 0xad, 0xca, 0x7b, 0x01, 0x01} // 2.16.840.1.113894.746875.1.1
	oidAnyKeyUsage  = []byte{0x55, 0x1d, 0x25, 0x00}                                                 // 2.5.29.37.0
)

// der reads DER values one after another, each a slice of the input. The
// first error sticks, for every reader of the values read from this one:
// each read after it gives an empty reader, and the walk runs out.
type der struct {
	b   []byte
	err *error
}

func newDER(b []byte) der { return der{b: b, err: new(error)} }

// fail records err, unless an error came first.
func (d der) fail(err error) {
	if *d.err == nil {
		*d.err = err
	}
}

// more says whether values are left to read.
func (d der) more() bool { return len(d.b) > 0 && *d.err == nil }

// next reads one value of the given tag, and gives a reader of its contents.
func (d *der) next(tag byte) der {
	b := d.b
	switch {
	case *d.err != nil:
		return der{err: d.err}
	case len(b) < 2:
		d.fail(errors.New("DER: truncated"))
		return der{err: d.err}
	case b[0] != tag:
		d.fail(fmt.Errorf("DER: tag 0x%02x, want 0x%02x", b[0], tag))
		return der{err: d.err}
	}
	n, b := int(b[1]), b[2:]
	if size := n & 0x7f; n >= 0x80 && (size == 0 || size > 3 || size > len(b)) {
		d.fail(errors.New("DER: unsupported length"))
		return der{err: d.err}
	} else if n >= 0x80 {
		n = 0
		for _, c := range b[:size] {
			n = n<<8 | int(c)
		}
		b = b[size:]
	}
	if n > len(b) {
		d.fail(errors.New("DER: truncated"))
		return der{err: d.err}
	}
	d.b = b[n:]
	return der{b: b[:n], err: d.err}
}

// full reads one value of the given tag and gives all of its encoding.
func (d *der) full(tag byte) []byte {
	before := d.b
	if d.next(tag); *d.err != nil {
		return nil
	}
	return before[:len(before)-len(d.b)]
}

// only reads the one value of the given tag that d holds.
func (d der) only(tag byte) der {
	v := d.next(tag)
	if len(d.b) > 0 {
		d.fail(errors.New("DER: trailing data"))
	}
	return v
}

// is reads an OBJECT IDENTIFIER, compared as bytes, and says whether it
// is oid.
func (d *der) is(oid []byte) bool { return bytes.Equal(d.next(tagOID).b, oid) }

// dataContent reads a ContentInfo of type data, and gives its octets.
func dataContent(ci der) der {
	if !ci.is(oidData) {
		ci.fail(fmt.Errorf("%w: PKCS#12 content that is not data (encrypted?)", errStoreUnsupported))
	}
	return ci.only(tagExplicit0).only(tagOctetString)
}

func parsePKCS12(data []byte) (*javaStore, error) {
	top := newDER(data)
	pfx := top.only(tagSequence)
	if *top.err != nil {
		return nil, fmt.Errorf("neither JKS nor PKCS#12: %w", *top.err)
	}
	pfx.next(tagInteger)
	authSafe := dataContent(pfx.next(tagSequence))
	if pfx.more() {
		return nil, fmt.Errorf("%w: password-protected PKCS#12", errStoreUnsupported)
	}
	s := &javaStore{format: storePKCS12}
	for infos := authSafe.only(tagSequence); infos.more(); {
		for bags := dataContent(infos.next(tagSequence)).only(tagSequence); bags.more(); {
			if len(s.entries) == maxStoreEntries {
				bags.fail(fmt.Errorf("%w: more than %d entries", errStoreUnsupported, maxStoreEntries))
			}
			s.entries = append(s.entries, trustedCertEntry(bags.next(tagSequence)))
		}
	}
	if err := *top.err; err != nil {
		return nil, fmt.Errorf("PKCS#12: %w", err)
	}
	return s, nil
}

// trustedCertEntry reads a certificate bag the JDK treats as a trusted
// certificate: an X.509 certificate carrying the trusted-key-usage
// attribute. Any other bag is a store the hook does not rewrite.
func trustedCertEntry(outer der) storeEntry {
	bag := newDER(outer.b)
	if !bag.is(oidCertBag) {
		bag.fail(errors.New("a bag that is not a certificate"))
	}
	cert := bag.next(tagExplicit0).only(tagSequence)
	if !cert.is(oidX509) {
		cert.fail(errors.New("not an X.509 certificate"))
	}
	e := storeEntry{der: cert.only(tagExplicit0).only(tagOctetString).b}
	attrs, trusted := der{err: bag.err}, false
	if bag.more() {
		attrs = bag.only(tagSet)
	}
	for attrs.more() {
		a := attrs.next(tagSequence)
		switch id := a.next(tagOID).b; {
		case bytes.Equal(id, oidTrustedUsage):
			trusted = true
		case bytes.Equal(id, oidFriendlyName):
			e.alias = decodeBMP(a.next(tagSet).only(tagBMPString).b)
		}
	}
	if *bag.err == nil && !trusted {
		bag.fail(errors.New("certificate not marked trusted"))
	}
	if err := *bag.err; err != nil {
		outer.fail(fmt.Errorf("%w: PKCS#12 certificate bag: %v", errStoreUnsupported, err))
	}
	return e
}

// marshalPKCS12 writes a password-less truststore as the JDK does.
func marshalPKCS12(entries []storeEntry) []byte {
	bags := make([]asn, len(entries))
	for i, e := range entries {
		cert := seq(oid(oidX509), explicit(leaf(tagOctetString, e.der)))
		attrs := setOf(
			seq(oid(oidFriendlyName), asn{tag: tagSet, kids: []asn{leaf(tagBMPString, encodeBMP(e.alias))}}),
			seq(oid(oidTrustedUsage), asn{tag: tagSet, kids: []asn{oid(oidAnyKeyUsage)}}))
		bags[i] = seq(oid(oidCertBag), explicit(cert), attrs)
	}
	dataInfo := func(content asn) asn {
		return seq(oid(oidData), explicit(asn{tag: tagOctetString, kids: []asn{content}}))
	}
	authSafe := seq(dataInfo(asn{tag: tagSequence, kids: bags}))
	return seq(leaf(tagInteger, []byte{3}), dataInfo(authSafe)).encode()
}

// asn is a DER value to write: contents, or the values it holds. Its
// encoding is made in one buffer, each certificate copied once, however
// deep the PKCS#12 nests it.
type asn struct {
	tag      byte
	contents []byte
	kids     []asn
}

func leaf(tag byte, contents []byte) asn { return asn{tag: tag, contents: contents} }
func oid(contents []byte) asn            { return leaf(tagOID, contents) }
func seq(kids ...asn) asn                { return asn{tag: tagSequence, kids: kids} }
func explicit(kid asn) asn               { return asn{tag: tagExplicit0, kids: []asn{kid}} }

// setOf is a SET OF, its values in the order DER requires.
func setOf(kids ...asn) asn {
	slices.SortFunc(kids, func(a, b asn) int { return bytes.Compare(a.encode(), b.encode()) })
	return asn{tag: tagSet, kids: kids}
}

// size is the length of the contents.
func (a asn) size() int {
	n := len(a.contents)
	for _, k := range a.kids {
		n += k.encodedSize()
	}
	return n
}

func (a asn) encodedSize() int {
	n := a.size()
	return 1 + lengthSize(n) + n
}

func lengthSize(n int) int {
	if n < 0x80 {
		return 1
	}
	return 1 + (bits.Len(uint(n))+7)/8
}

func (a asn) encode() []byte { return a.appendTo(make([]byte, 0, a.encodedSize())) }

func (a asn) appendTo(b []byte) []byte {
	n := a.size()
	b = append(b, a.tag)
	if n < 0x80 {
		b = append(b, byte(n))
	} else {
		size := lengthSize(n) - 1
		b = append(b, 0x80|byte(size))
		for i := size - 1; i >= 0; i-- {
			b = append(b, byte(n>>(8*i)))
		}
	}
	b = append(b, a.contents...)
	for _, k := range a.kids {
		b = k.appendTo(b)
	}
	return b
}

func encodeBMP(s string) []byte {
	var b []byte
	for _, c := range utf16.Encode([]rune(s)) {
		b = append(b, byte(c>>8), byte(c))
	}
	return b
}

func decodeBMP(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
	}
	return string(utf16.Decode(u))
}
