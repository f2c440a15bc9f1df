//go:build !hookonly

package main

// What loading a CA bundle has to say: blocks dropped or converted, and
// certificates that some runtime will not use the way the operator expects.
// The findings are logged at every load, counted by kind in
// cainjekt_ca_bundle_findings, and printed by `cainjekt lint FILE`, so a
// mystery outage becomes a warning before rollout.

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Finding kinds, as the metric labels them.
const (
	findPrivateKey         = "private_key"         // dropped
	findOtherBlock         = "other_block"         // dropped
	findUnparsable         = "unparsable"          // dropped
	findDuplicate          = "duplicate"           // dropped
	findTrustedCertificate = "trusted_certificate" // converted
	findExpired            = "expired"
	findNotYetValid        = "not_yet_valid"
	findExpiresSoon        = "expires_soon"
	findNotCA              = "not_ca"
	findPythonStrict       = "python_strict"
	findDotnetNotRoot      = "dotnet_not_root"
)

var findingKinds = []string{findPrivateKey, findOtherBlock, findUnparsable, findDuplicate, findTrustedCertificate,
	findExpired, findNotYetValid, findExpiresSoon, findNotCA, findPythonStrict, findDotnetNotRoot}

// expiresSoon is how close to its end a certificate is worth a warning.
const expiresSoon = 30 * 24 * time.Hour

// finding is one thing worth telling about a bundle.
type finding struct {
	kind    string
	block   int // PEM block number, from 1
	subject string
	detail  string
}

// Severities of findings: an error makes `cainjekt lint` fail, a warning
// only with --strict.
const (
	severityError   = "error"
	severityWarning = "warning"
)

// severity is error for what must never be in a CA bundle: a private key,
// whose holder could impersonate anyone the CA vouches for (the plugin
// drops it, but it was handed around with the bundle), and a certificate
// that is not a CA, which every container would trust as a server itself.
// Everything else the plugin copes with.
func (f finding) severity() string {
	if f.kind == findPrivateKey || f.kind == findNotCA {
		return severityError
	}
	return severityWarning
}

func (f finding) String() string {
	s := fmt.Sprintf("block %d", f.block)
	if f.subject != "" {
		s += fmt.Sprintf(" (%s)", f.subject)
	}
	return s + ": " + f.detail
}

// Reasons a bundle is unusable, as cainjekt_ca_bundle_reloads_total labels them.
const (
	reasonEmpty         = "empty"
	reasonNotPEM        = "not_pem"
	reasonNoCertificate = "no_certificate"
	reasonTooLarge      = "too_large"
	reasonUnreadable    = "unreadable"
)

var bundleErrorReasons = []string{reasonEmpty, reasonNotPEM, reasonNoCertificate, reasonTooLarge, reasonUnreadable}

// bundleError is why a bundle cannot be used.
type bundleError struct {
	reason, msg string
}

func (e *bundleError) Error() string { return e.msg }

// reasonOf classifies a load error for the metric.
func reasonOf(err error) string {
	var be *bundleError
	switch {
	case errors.As(err, &be):
		return be.reason
	case errors.Is(err, errTooLarge):
		return reasonTooLarge
	}
	return reasonUnreadable
}

// blockFinding says what becomes of a PEM block of the operator's bundle
// that is not a plain certificate; der is the certificate it gave, if any.
func blockFinding(n int, block *pem.Block, der []byte) *finding {
	switch {
	case block.Type == "CERTIFICATE":
		return nil
	case block.Type == "TRUSTED CERTIFICATE" && der == nil:
		return &finding{kind: findUnparsable, block: n, detail: "dropped a TRUSTED CERTIFICATE block that does not parse"}
	case block.Type == "TRUSTED CERTIFICATE":
		return &finding{kind: findTrustedCertificate, block: n,
			detail: "a TRUSTED CERTIFICATE block: its certificate is injected, its OpenSSL trust settings are not (and .NET ignores such blocks)"}
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return &finding{kind: findPrivateKey, block: n,
			detail: "dropped a " + block.Type + " block: a CA bundle must never hold a private key; it is not staged and never reaches a container"}
	default:
		return &finding{kind: findOtherBlock, block: n, detail: fmt.Sprintf("dropped a %q block: only certificates are injected", block.Type)}
	}
}

// lintCertificates checks each certificate against what the runtimes
// require of a trust anchor. It parses them again: a caCert keeps no
// *x509.Certificate, which the hook's build cannot link.
func lintCertificates(b *caBundle, now time.Time) []finding {
	var out []finding
	for i, c := range b.certs {
		cert, err := x509.ParseCertificate(c.der)
		if err != nil {
			continue // not in a bundle parseCABundle made
		}
		add := func(kind, detail string) {
			out = append(out, finding{kind: kind, block: i + 1, subject: cert.Subject.String(), detail: detail})
		}
		switch {
		case now.After(cert.NotAfter):
			add(findExpired, "expired on "+cert.NotAfter.UTC().Format(time.DateOnly)+": no runtime will accept a chain through it")
		case now.Before(cert.NotBefore):
			add(findNotYetValid, "not valid before "+cert.NotBefore.UTC().Format(time.DateOnly))
		case cert.NotAfter.Sub(now) < expiresSoon:
			add(findExpiresSoon, "expires on "+cert.NotAfter.UTC().Format(time.DateOnly)+", within 30 days")
		}
		selfSigned := cert.CheckSignatureFrom(cert) == nil
		if !cert.IsCA {
			add(findNotCA, "not a CA (no basicConstraints CA:TRUE): it is trusted as a server certificate itself, and signs nothing")
			continue
		}
		if problem := pythonStrictProblem(cert, selfSigned); problem != "" {
			add(findPythonStrict, "Python 3.13+ rejects it (VERIFY_X509_STRICT): "+problem)
		}
		if !selfSigned {
			add(findDotnetNotRoot, "not self-signed: .NET on Linux uses only self-signed certificates as roots")
		}
	}
	return out
}

// pythonStrictProblem says why OpenSSL's X509_V_FLAG_X509_STRICT, on by
// default in Python 3.13's ssl module, rejects a CA certificate.
func pythonStrictProblem(cert *x509.Certificate, selfSigned bool) string {
	switch {
	case !basicConstraintsCritical(cert):
		return "basicConstraints is not marked critical"
	case len(cert.SubjectKeyId) == 0:
		return "no subject key identifier"
	case !selfSigned && len(cert.AuthorityKeyId) == 0:
		return "no authority key identifier"
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return "keyUsage lacks keyCertSign"
	}
	return ""
}

func basicConstraintsCritical(cert *x509.Certificate) bool {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal([]int{2, 5, 29, 19}) {
			return ext.Critical
		}
	}
	return false
}
