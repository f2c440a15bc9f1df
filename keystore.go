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

// marshal writes the store in its own format.
func (s *javaStore) marshal() ([]byte, error) {
	if s.format == storePKCS12 {
		return marshalPKCS12(s.entries), nil
	}
	return marshalJKS(s.entries, s.password)
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
	s := &javaStore{format: storeJKS, password: storePassword}
	if !bytes.Equal(jksDigest(body, s.password), sum) {
		if s.password = ""; !bytes.Equal(jksDigest(body, s.password), sum) {
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
	return s, nil
}

func marshalJKS(entries []storeEntry, password string) ([]byte, error) {
	size := 12 + sha1.Size
	for _, e := range entries {
		size += 4 + 2 + len(e.alias) + 8 + 2 + len("X.509") + 4 + len(e.der)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, size), jksMagic)
	b = binary.BigEndian.AppendUint32(b, jksVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	utf := func(s string) {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	for _, e := range entries {
		if len(e.alias) > 0xFFFF {
			return nil, fmt.Errorf("JKS: alias of %d bytes", len(e.alias))
		}
		b = binary.BigEndian.AppendUint32(b, jksTrustedCertTag)
		utf(e.alias)
		b = binary.BigEndian.AppendUint64(b, uint64(e.created))
		utf("X.509")
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.der)))
		b = append(b, e.der...)
	}
	return append(b, jksDigest(b, password)...), nil
}

// jksDigest is JKS's integrity check: SHA-1 over the password as UTF-16BE,
// the phrase "Mighty Aphrodite", and the store.
func jksDigest(body []byte, password string) []byte {
	h := sha1.New()
	h.Write(encodeBMP(password))
	h.Write([]byte("Mighty Aphrodite"))
	h.Write(body)
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

// der is DER to read, one value after another.
type der []byte

// next reads one value of the given tag and returns its contents.
func (d *der) next(tag byte) ([]byte, error) {
	b := *d
	if len(b) < 2 {
		return nil, errors.New("DER: truncated")
	}
	if b[0] != tag {
		return nil, fmt.Errorf("DER: tag 0x%02x, want 0x%02x", b[0], tag)
	}
	n, b := int(b[1]), b[2:]
	if n >= 0x80 {
		size := n & 0x7f
		if size == 0 || size > 3 || size > len(b) {
			return nil, errors.New("DER: unsupported length")
		}
		n = 0
		for _, c := range b[:size] {
			n = n<<8 | int(c)
		}
		b = b[size:]
	}
	if n > len(b) {
		return nil, errors.New("DER: truncated")
	}
	*d = b[n:]
	return b[:n], nil
}

// full reads one value of the given tag and returns all of its encoding.
func (d *der) full(tag byte) ([]byte, error) {
	before := *d
	_, err := d.next(tag)
	return before[:len(before)-len(*d)], err
}

// oid reads an OBJECT IDENTIFIER and says whether it is want.
func (d *der) oid(want []byte) (bool, error) {
	got, err := d.next(tagOID)
	return err == nil && bytes.Equal(got, want), err
}

// end checks that nothing follows the last value read.
func (d der) end() error {
	if len(d) > 0 {
		return errors.New("DER: trailing data")
	}
	return nil
}

// only reads the one value of the given tag that d holds.
func (d der) only(tag byte) ([]byte, error) {
	v, err := d.next(tag)
	if err == nil {
		err = d.end()
	}
	return v, err
}

// dataContent reads a ContentInfo of type data and returns its octets.
func dataContent(ci der) ([]byte, error) {
	isData, err := ci.oid(oidData)
	if err == nil && !isData {
		return nil, fmt.Errorf("%w: PKCS#12 content that is not data (encrypted?)", errStoreUnsupported)
	}
	var explicit, octets []byte
	if err == nil {
		explicit, err = ci.only(tagExplicit0)
	}
	if err == nil {
		octets, err = der(explicit).only(tagOctetString)
	}
	if err != nil {
		return nil, fmt.Errorf("PKCS#12 data: %w", err)
	}
	return octets, nil
}

func parsePKCS12(data []byte) (*javaStore, error) {
	body, err := der(data).only(tagSequence)
	if err != nil {
		return nil, fmt.Errorf("neither JKS nor PKCS#12: %w", err)
	}
	p := der(body)
	var authInfo, authSafe, infos []byte
	if _, err = p.next(tagInteger); err == nil {
		authInfo, err = p.next(tagSequence)
	}
	if err == nil && len(p) > 0 {
		return nil, fmt.Errorf("%w: password-protected PKCS#12", errStoreUnsupported)
	}
	if err == nil {
		authSafe, err = dataContent(der(authInfo))
	}
	if err == nil {
		infos, err = der(authSafe).only(tagSequence)
	}
	s := &javaStore{format: storePKCS12}
	for all := der(infos); err == nil && len(all) > 0; {
		var ci, octets []byte
		if ci, err = all.next(tagSequence); err == nil {
			if octets, err = dataContent(der(ci)); err == nil {
				err = s.readBags(octets)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("PKCS#12: %w", err)
	}
	return s, nil
}

// readBags reads a SafeContents, appending its trusted certificates.
func (s *javaStore) readBags(octets []byte) error {
	bags, err := der(octets).only(tagSequence)
	for all := der(bags); err == nil && len(all) > 0; {
		if len(s.entries) == maxStoreEntries {
			return fmt.Errorf("%w: more than %d entries", errStoreUnsupported, maxStoreEntries)
		}
		var bag []byte
		var e storeEntry
		if bag, err = all.next(tagSequence); err == nil {
			e, err = trustedCertEntry(der(bag))
		}
		s.entries = append(s.entries, e)
	}
	return err
}

// trustedCertEntry reads a certificate bag the JDK treats as a trusted
// certificate: one carrying the trusted-key-usage attribute.
func trustedCertEntry(bag der) (storeEntry, error) {
	isCert, err := bag.oid(oidCertBag)
	if err == nil && !isCert {
		return storeEntry{}, fmt.Errorf("%w: a PKCS#12 bag that is not a certificate", errStoreUnsupported)
	}
	var value, attrs []byte
	var e storeEntry
	if err == nil {
		value, err = bag.next(tagExplicit0)
	}
	if err == nil && len(bag) > 0 {
		attrs, err = bag.only(tagSet)
	}
	if err == nil {
		e.der, err = certBagContents(der(value))
	}
	if err != nil {
		return storeEntry{}, fmt.Errorf("%w: PKCS#12 certificate bag: %v", errStoreUnsupported, err)
	}
	trusted := false
	for all := der(attrs); len(all) > 0; {
		attr, err := all.next(tagSequence)
		if err != nil {
			return storeEntry{}, fmt.Errorf("PKCS#12 attribute: %w", err)
		}
		a := der(attr)
		switch id, _ := a.next(tagOID); {
		case bytes.Equal(id, oidTrustedUsage):
			trusted = true
		case bytes.Equal(id, oidFriendlyName):
			values, _ := a.next(tagSet)
			name, _ := der(values).only(tagBMPString)
			e.alias = decodeBMP(name)
		}
	}
	if !trusted {
		return storeEntry{}, fmt.Errorf("%w: PKCS#12 certificate not marked trusted", errStoreUnsupported)
	}
	return e, nil
}

// certBagContents reads a CertBag holding an X.509 certificate.
func certBagContents(wrapped der) ([]byte, error) {
	value, err := wrapped.only(tagSequence)
	if err != nil {
		return nil, err
	}
	bag := der(value)
	isX509, err := bag.oid(oidX509)
	if err == nil && !isX509 {
		return nil, errors.New("not an X.509 certificate")
	}
	var explicit []byte
	if err == nil {
		explicit, err = bag.only(tagExplicit0)
	}
	if err != nil {
		return nil, err
	}
	return der(explicit).only(tagOctetString)
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
