package main

// Certificates made for a test.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// certSpec describes a certificate to make.
type certSpec struct {
	cn                  string
	notBefore, notAfter time.Time
	isCA, bcNotCritical bool
	noSKI               bool
	parent              *issued
	keyUsage            x509.KeyUsage
}

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func issue(t *testing.T, s certSpec) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: s.cn},
		NotBefore:    s.notBefore, NotAfter: s.notAfter,
		KeyUsage: s.keyUsage,
	}
	if s.noSKI {
		tmpl.SubjectKeyId = []byte{} // Go fills it in for CAs otherwise; an empty one is omitted
	}
	switch {
	case s.bcNotCritical:
		value, _ := asn1.Marshal(struct{ IsCA bool }{true})
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: false, Value: value}}
	case s.isCA:
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	}
	parent, signer := tmpl, key
	if s.parent != nil {
		parent, signer = s.parent.cert, s.parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &issued{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}
