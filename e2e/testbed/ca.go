package testbed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// publicCAKey names the cache entry of the public CA; bump it to mint a new one.
const publicCAKey = "public-ca-v1"

// CA is a certificate authority usable for issuing test server certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// NewCA creates a fresh CA valid for one day (backdated an hour against clock skew).
func NewCA(commonName string) (*CA, error) {
	return newCA(commonName, 24*time.Hour)
}

// NewCAValidFor creates a fresh CA valid for validity: one that
// `cainjekt lint --strict` passes must outlive its 30-day warning.
func NewCAValidFor(commonName string, validity time.Duration) (*CA, error) {
	return newCA(commonName, validity)
}

// PublicCA returns the CA standing in for a public CA. It is generated once and cached,
// because every Debian test image bakes it into its original trust store.
func PublicCA() (*CA, error) {
	dir, err := cached(publicCAKey, func(tmp string) error {
		ca, err := newCA("cainjekt e2e public CA", 10*365*24*time.Hour)
		if err != nil {
			return err
		}
		return ca.write(tmp)
	})
	if err != nil {
		return nil, err
	}
	return loadCA(dir)
}

func newCA(commonName string, validity time.Duration) (*CA, error) {
	return issueCA(commonName, validity, nil)
}

// Intermediate issues an intermediate CA signed by ca. A server it signs
// sends only its leaf, so clients must find the intermediate in their trust
// store: a bundle of root plus intermediate is what makes them verify.
func (ca *CA) Intermediate(commonName string) (*CA, error) {
	return issueCA(commonName, 24*time.Hour, ca)
}

// issueCA creates a CA certificate, self-signed when parent is nil.
func issueCA(commonName string, validity time.Duration, parent *CA) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"cainjekt e2e"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true, // Go always marks basicConstraints critical.
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          ski,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key // the AKI is copied from the parent's SKI
	} else {
		// Go fills the AKI from the parent only when issuer and subject differ, so a
		// self-signed certificate needs it set explicitly.
		tmpl.AuthorityKeyId = ski
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return caFromDER(der, key)
}

func caFromDER(der []byte, key crypto.Signer) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:     key,
	}, nil
}

func (ca *CA) write(dir string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return fmt.Errorf("marshal CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write CA certificate: %w", err)
	}
	return nil
}

func loadCA(dir string) (*CA, error) {
	certDER, err := readPEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyDER, err := readPEM(filepath.Join(dir, "ca.key"), "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA key in %s: %w", dir, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key in %s is a %T, not a signer", dir, key)
	}
	return caFromDER(certDER, signer)
}

func readPEM(path, blockType string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != blockType {
		return nil, fmt.Errorf("%s holds no %s PEM block", path, blockType)
	}
	return block.Bytes, nil
}

// Server is an HTTPS server on the loopback interface.
type Server struct {
	URL   string // https://127.0.0.1:PORT/
	Close func()
}

// Serve starts an HTTPS server on 127.0.0.1 whose certificate ca signed. It answers git's
// smart-HTTP discovery as an empty repository, so `git ls-remote URL` succeeds, botocore
// as S3 with no bucket, and every other request with 200 "ok\n". Host-network pods reach
// it on the same URL.
func (ca *CA) Serve() (*Server, error) {
	return ca.ServeOn(net.IPv4(127, 0, 0, 1))
}

// ServeOn is Serve on another address of this machine, e.g. one that pods
// with a network of their own reach.
func (ca *CA) ServeOn(ip net.IP) (*Server, error) {
	cert, err := ca.issueServerCert(ip)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(serveOKOrGit),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
		// Tests deliberately connect with clients that reject the certificate; the
		// resulting handshake errors are expected, not worth logging.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.ServeTLS(ln, "", "")
	return &Server{
		URL:   "https://" + ln.Addr().String() + "/",
		Close: func() { srv.Close() },
	}, nil
}

func serveOKOrGit(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/info/refs") && r.URL.Query().Get("service") == "git-upload-pack":
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		io.WriteString(w, gitEmptyRepoAdvertisement)
	case strings.Contains(r.UserAgent(), "Botocore"):
		// S3's ListBuckets with no bucket: what botocore's list_buckets parses.
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, s3EmptyBucketList)
	default:
		io.WriteString(w, "ok\n")
	}
}

const s3EmptyBucketList = `<?xml version="1.0" encoding="UTF-8"?>
<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>e2e</ID></Owner><Buckets></Buckets></ListAllMyBucketsResult>`

// gitEmptyRepoAdvertisement is what a git server sends for an empty repository in
// protocol v0: the service line, a flush, the capabilities pseudo-ref, a flush.
var gitEmptyRepoAdvertisement = pktLine("# service=git-upload-pack\n") + "0000" +
	pktLine("0000000000000000000000000000000000000000 capabilities^{}\x00agent=cainjekt-e2e\n") + "0000"

func pktLine(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// issueServerCert issues a leaf for ip and localhost, valid like NewCA's CAs.
func (ca *CA) issueServerCert(ip net.IP) (tls.Certificate, error) {
	return ca.issue(x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{ip},
	})
}

// issue signs a leaf with tmpl's subject, names and extended usages for a
// fresh key, valid like NewCA's CAs.
func (ca *CA) issue(tmpl x509.Certificate) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate leaf key: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.SubjectKeyId = ski // the AKI is copied from the CA's SKI
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// subjectKeyID is RFC 5280's method 1: the SHA-1 of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return serial, nil
}
