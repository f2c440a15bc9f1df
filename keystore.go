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
// rewritten: the hook then gives the JVM a store of its own (see lang.go).

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
		return marshalPKCS12(s.entries)
	}
	return marshalJKS(s.entries, s.password)
}

// jksReader reads the big-endian fields of a JKS stream.
type jksReader struct {
	r   *bytes.Reader
	err error
}

func (j *jksReader) u32() uint32 {
	var v uint32
	if j.err == nil {
		j.err = binary.Read(j.r, binary.BigEndian, &v)
	}
	return v
}

func (j *jksReader) u64() uint64 {
	var v uint64
	if j.err == nil {
		j.err = binary.Read(j.r, binary.BigEndian, &v)
	}
	return v
}

func (j *jksReader) bytes(n int) []byte {
	if j.err != nil {
		return nil
	}
	if n < 0 || n > j.r.Len() {
		j.err = io.ErrUnexpectedEOF
		return nil
	}
	b := make([]byte, n)
	_, j.err = io.ReadFull(j.r, b)
	return b
}

// utf reads Java's modified UTF-8 with a 16-bit length; aliases are ASCII in
// practice, and anything else is kept as the bytes it is.
func (j *jksReader) utf() string {
	var n uint16
	if j.err == nil {
		j.err = binary.Read(j.r, binary.BigEndian, &n)
	}
	return string(j.bytes(int(n)))
}

func parseJKS(data []byte) (*javaStore, error) {
	if len(data) < 4+4+4+sha1.Size {
		return nil, fmt.Errorf("JKS: %w", io.ErrUnexpectedEOF)
	}
	body, sum := data[:len(data)-sha1.Size], data[len(data)-sha1.Size:]
	s := &javaStore{format: storeJKS}
	verified := false
	for _, pw := range []string{"changeit", ""} {
		if bytes.Equal(jksDigest(body, pw), sum) {
			s.password, verified = pw, true
			break
		}
	}
	if !verified {
		return nil, fmt.Errorf("%w: JKS integrity does not verify with the default passwords", errStoreUnsupported)
	}
	j := &jksReader{r: bytes.NewReader(body[4:])}
	if v := j.u32(); j.err == nil && v != jksVersion {
		return nil, fmt.Errorf("%w: JKS version %d", errStoreUnsupported, v)
	}
	count := j.u32()
	if count > maxStoreEntries {
		return nil, fmt.Errorf("%w: %d entries", errStoreUnsupported, count)
	}
	for i := uint32(0); i < count && j.err == nil; i++ {
		if tag := j.u32(); j.err == nil && tag != jksTrustedCertTag {
			return nil, fmt.Errorf("%w: JKS entry of type %d (not a trusted certificate)", errStoreUnsupported, tag)
		}
		e := storeEntry{alias: j.utf(), created: int64(j.u64())}
		if typ := j.utf(); j.err == nil && typ != "X.509" {
			return nil, fmt.Errorf("%w: certificate type %q", errStoreUnsupported, typ)
		}
		e.der = j.bytes(int(j.u32()))
		s.entries = append(s.entries, e)
	}
	if j.err == nil && j.r.Len() != 0 {
		j.err = errors.New("trailing data")
	}
	if j.err != nil {
		return nil, fmt.Errorf("JKS: %w", j.err)
	}
	return s, nil
}

func marshalJKS(entries []storeEntry, password string) ([]byte, error) {
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.BigEndian, v) }
	utf := func(s string) error {
		if len(s) > 0xFFFF {
			return fmt.Errorf("JKS: string of %d bytes", len(s))
		}
		w(uint16(len(s)))
		b.WriteString(s)
		return nil
	}
	w(uint32(jksMagic))
	w(uint32(jksVersion))
	w(uint32(len(entries)))
	for _, e := range entries {
		w(uint32(jksTrustedCertTag))
		if err := utf(e.alias); err != nil {
			return nil, err
		}
		w(uint64(e.created))
		utf("X.509")
		w(uint32(len(e.der)))
		b.Write(e.der)
	}
	b.Write(jksDigest(b.Bytes(), password))
	return b.Bytes(), nil
}

// jksDigest is JKS's integrity check: SHA-1 over the password as UTF-16BE,
// the phrase "Mighty Aphrodite", and the store.
func jksDigest(body []byte, password string) []byte {
	h := sha1.New()
	for _, c := range utf16.Encode([]rune(password)) {
		h.Write([]byte{byte(c >> 8), byte(c)})
	}
	h.Write([]byte("Mighty Aphrodite"))
	h.Write(body)
	return h.Sum(nil)
}

// PKCS#12 as the JDK writes a password-less truststore (RFC 7292).
var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidCertBag           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509Certificate   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidFriendlyName      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 20}
	oidJavaTrustedUsage  = asn1.ObjectIdentifier{2, 16, 840, 1, 113894, 746875, 1, 1}
	oidAnyExtendedKeyUse = asn1.ObjectIdentifier{2, 5, 29, 37, 0}
)

type pfx struct {
	Version  int
	AuthSafe contentInfo
}

// The [0] EXPLICIT fields below are RawValues of the wrapper itself: Go's
// encoding/asn1 ignores tag parameters when it marshals a RawValue.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

type safeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue
	Attributes []pkcs12Attribute `asn1:"set"`
}

type pkcs12Attribute struct {
	ID     asn1.ObjectIdentifier
	Values asn1.RawValue // a SET
}

type certBag struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// explicit0 wraps DER in a [0] EXPLICIT tag.
func explicit0(inner []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}
}

// set wraps DER as the contents of a SET.
func set(inner []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: inner}
}

// dataInfo wraps DER as a ContentInfo of type data.
func dataInfo(der []byte) (contentInfo, error) {
	octets, err := asn1.Marshal(der)
	return contentInfo{ContentType: oidData, Content: explicit0(octets)}, err
}

// Reading: a cacerts comes from an image. encoding/asn1 would build a Go
// value for every element, and an OID's every arc, before anything could
// be counted: a few MiB of tiny bags or of one OID's arcs take hundreds of
// MiB. Instead, der walks the encoding in place: each value is a slice of
// the input, OIDs are compared as their encoded bytes, and counts are
// checked as the walk goes, so parsing is linear and allocates only the
// entries it keeps.

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

// oid reads an OBJECT IDENTIFIER and says whether it is want, given as
// the contents of its encoding.
func (d *der) oid(want []byte) (bool, error) {
	got, err := d.next(tagOID)
	return err == nil && bytes.Equal(got, want), err
}

// The OIDs a cacerts is read by, as the contents of their encoding.
var (
	derOIDData         = oidContents(oidData)
	derOIDCertBag      = oidContents(oidCertBag)
	derOIDX509         = oidContents(oidX509Certificate)
	derOIDFriendlyName = oidContents(oidFriendlyName)
	derOIDTrustedUsage = oidContents(oidJavaTrustedUsage)
)

func oidContents(oid asn1.ObjectIdentifier) []byte {
	full, _ := asn1.Marshal(oid)
	return full[2:] // tag and a short length: our OIDs are short
}

// end checks that nothing follows the last value read.
func (d der) end() error {
	if len(d) > 0 {
		return errors.New("DER: trailing data")
	}
	return nil
}

// dataContent reads a ContentInfo of type data and returns its octets.
func dataContent(ci der) ([]byte, error) {
	isData, err := ci.oid(derOIDData)
	if err == nil && !isData {
		return nil, fmt.Errorf("%w: PKCS#12 content that is not data (encrypted?)", errStoreUnsupported)
	}
	var explicit, octets []byte
	if err == nil {
		explicit, err = ci.next(tagExplicit0)
	}
	if err == nil {
		inner := der(explicit)
		if octets, err = inner.next(tagOctetString); err == nil {
			err = inner.end()
		}
	}
	if err == nil {
		err = ci.end()
	}
	if err != nil {
		return nil, fmt.Errorf("PKCS#12 data: %w", err)
	}
	return octets, nil
}

func parsePKCS12(data []byte) (*javaStore, error) {
	top := der(data)
	body, err := top.next(tagSequence)
	if err == nil {
		err = top.end()
	}
	if err != nil {
		return nil, fmt.Errorf("neither JKS nor PKCS#12: %w", err)
	}
	p := der(body)
	var authInfo []byte
	if _, err = p.next(tagInteger); err == nil {
		authInfo, err = p.next(tagSequence)
	}
	if err != nil {
		return nil, fmt.Errorf("PKCS#12: %w", err)
	}
	if len(p) > 0 {
		return nil, fmt.Errorf("%w: password-protected PKCS#12", errStoreUnsupported)
	}
	authSafe, err := dataContent(der(authInfo))
	if err != nil {
		return nil, err
	}
	s := &javaStore{format: storePKCS12}
	contents := der(authSafe)
	infos, err := contents.next(tagSequence)
	if err == nil {
		err = contents.end()
	}
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
	safe := der(octets)
	bags, err := safe.next(tagSequence)
	if err == nil {
		err = safe.end()
	}
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
	isCert, err := bag.oid(derOIDCertBag)
	if err == nil && !isCert {
		return storeEntry{}, fmt.Errorf("%w: a PKCS#12 bag that is not a certificate", errStoreUnsupported)
	}
	var value, attrs []byte
	if err == nil {
		value, err = bag.next(tagExplicit0)
	}
	if err == nil && len(bag) > 0 {
		attrs, err = bag.next(tagSet)
	}
	if err == nil {
		err = bag.end()
	}
	var e storeEntry
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
		id, _ := a.next(tagOID)
		switch {
		case bytes.Equal(id, derOIDTrustedUsage):
			trusted = true
		case bytes.Equal(id, derOIDFriendlyName):
			e.alias = friendlyName(a)
		}
	}
	if !trusted {
		return storeEntry{}, fmt.Errorf("%w: PKCS#12 certificate not marked trusted", errStoreUnsupported)
	}
	return e, nil
}

// certBagContents reads a CertBag holding an X.509 certificate.
func certBagContents(wrapped der) ([]byte, error) {
	value, err := wrapped.next(tagSequence)
	if err != nil {
		return nil, err
	}
	bag := der(value)
	isX509, err := bag.oid(derOIDX509)
	if err == nil && !isX509 {
		return nil, errors.New("not an X.509 certificate")
	}
	var explicit, cert []byte
	if err == nil {
		explicit, err = bag.next(tagExplicit0)
	}
	if err == nil {
		inner := der(explicit)
		cert, err = inner.next(tagOctetString)
	}
	return cert, err
}

// friendlyName reads the values of a friendlyName attribute: a SET holding
// a BMPString.
func friendlyName(values der) string {
	set, err := values.next(tagSet)
	if err != nil {
		return ""
	}
	inner := der(set)
	name, err := inner.next(tagBMPString)
	if err != nil {
		return ""
	}
	return decodeBMP(name)
}

func marshalPKCS12(entries []storeEntry) ([]byte, error) {
	usage, err := asn1.Marshal(oidAnyExtendedKeyUse)
	if err != nil {
		return nil, err
	}
	bags := make([]safeBag, 0, len(entries))
	for _, e := range entries {
		octets, err := asn1.Marshal(e.der)
		if err != nil {
			return nil, err
		}
		cb, err := asn1.Marshal(certBag{ID: oidX509Certificate, Value: explicit0(octets)})
		if err != nil {
			return nil, err
		}
		name, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: encodeBMP(e.alias)})
		if err != nil {
			return nil, err
		}
		bags = append(bags, safeBag{
			ID:    oidCertBag,
			Value: explicit0(cb),
			Attributes: []pkcs12Attribute{
				{ID: oidFriendlyName, Values: set(name)},
				{ID: oidJavaTrustedUsage, Values: set(usage)},
			},
		})
	}
	safe, err := asn1.Marshal(bags)
	if err != nil {
		return nil, err
	}
	safeInfo, err := dataInfo(safe)
	if err != nil {
		return nil, err
	}
	authSafe, err := asn1.Marshal([]contentInfo{safeInfo})
	if err != nil {
		return nil, err
	}
	authInfo, err := dataInfo(authSafe)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(pfx{Version: 3, AuthSafe: authInfo})
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
