// Package clientauth verifies the certificate chains that clients present
// to mtls vhosts: trust anchors, SPKI pins, validity, key usage,
// revocation by the CAs' certificate revocation lists, and a cache
// of chains that verified so that a client presenting the same chain again
// costs a hash instead of signature checks.
package clientauth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Reason names why a client certificate was refused. The values are
// stable: they appear in metrics labels and log fields.
type Reason string

// Reasons returned by Verifier.Verify.
const (
	RejectNoCertificate  Reason = "no_certificate"
	RejectUnknownIssuer  Reason = "unknown_issuer"
	RejectExpired        Reason = "expired"
	RejectNotYetValid    Reason = "not_yet_valid"
	RejectBadKeyUsage    Reason = "bad_key_usage"
	RejectPinMismatch    Reason = "pin_mismatch"
	RejectBadCertificate Reason = "bad_certificate"
	RejectRevoked        Reason = "revoked"
)

// maxClientChain bounds the certificates a client may present. Cloudflare
// sends a leaf and at most an intermediate; a long chain is only a way to
// make us hash and parse more.
const maxClientChain = 8

// Verifier verifies the certificate chain a client presents to an mtls
// vhost. It is meant to be called from tls.Config.VerifyConnection, with
// the server's tls.Config.ClientAuth set to tls.RequestClientCert: crypto/tls
// asks for a certificate but neither requires nor verifies one (so it never
// sends an alert of its own for a missing or bad certificate), and this is
// the only verification that counts. VerifyConnection also runs on
// resumption, where a session without a verified certificate is refused
// here as no_certificate.
//
// A Verifier must not be modified after first use. A reload that keeps a
// vhost's trust (Roots and Pins) may give its new Verifier the old one's
// Generation and Cache, whatever its Revoked; one that changes it needs a
// new Generation.
type Verifier struct {
	// Roots are the trust anchors. A nil pool trusts nothing.
	Roots *x509.CertPool
	// Pins, if not empty, are the SHA-256 digests of the SubjectPublicKeyInfo
	// of the leaves allowed; a chain that verifies to Roots is still refused
	// unless its leaf matches one of them.
	Pins [][32]byte
	// Generation identifies this combination of Roots and Pins in Cache keys.
	// It must differ between any two Verifiers that share a Cache and trust
	// differently, including the old and new one around a reload; take it
	// from NewTrustGeneration.
	Generation uint64
	// Cache remembers chains that verified, so a client presenting the same
	// chain again (Cloudflare presents one chain millions of times) costs a
	// hash instead of signature checks. Nil disables caching.
	Cache *Cache
	// Revoked, if not nil, refuses a chain holding a certificate its CRLs
	// revoke. It is consulted on every verification, cached chains
	// included, so it is not part of the trust a Generation names: a CRL
	// replaced by a reload applies at once to chains cached before.
	Revoked *Revocations
}

var trustGeneration atomic.Uint64

// NewTrustGeneration returns a number never returned before in this process,
// for Verifier.Generation.
func NewTrustGeneration() uint64 {
	return trustGeneration.Add(1)
}

// verifyDER checks rawCerts, the DER certificates a client presented, leaf
// first: the chain must verify to a.Roots for client authentication, every
// certificate in it must be valid at now, the leaf's KeyUsage, when present,
// must allow digitalSignature, the leaf must match a pin if a.Pins is set,
// and no certificate in it may be revoked by a.Revoked. It returns "" and
// nil when the client is accepted, or the reason and an error describing
// the refusal.
func (a *Verifier) verifyDER(rawCerts [][]byte, now time.Time) (Reason, error) {
	return a.verify(rawCerts, nil, now)
}

// Verify judges the certificates a client presented, leaf first, as
// crypto/tls parsed them (tls.ConnectionState.PeerCertificates inside
// VerifyConnection): the chain must verify to a.Roots for client
// authentication, every certificate in it must be valid at now, the leaf's
// KeyUsage, when present, must allow digitalSignature, the leaf must match
// a pin if a.Pins is set, and no certificate in it may be revoked by
// a.Revoked. It returns "" and nil when the client is accepted, or the
// reason and an error describing the refusal.
func (a *Verifier) Verify(certs []*x509.Certificate, now time.Time) (Reason, error) {
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		if c == nil {
			return RejectBadCertificate, errors.New("client certificate: nil certificate in chain")
		}
		raw[i] = c.Raw
	}
	return a.verify(raw, certs, now)
}

func (a *Verifier) verify(raw [][]byte, parsed []*x509.Certificate, now time.Time) (Reason, error) {
	if len(raw) == 0 {
		return RejectNoCertificate, errors.New("client certificate: none presented")
	}
	if len(raw) > maxClientChain {
		return RejectBadCertificate, fmt.Errorf("client certificate: chain of %d certificates, limit %d", len(raw), maxClientChain)
	}
	var key [32]byte
	if a.Cache != nil {
		key = chainKey(raw, a.Generation)
		if a.Cache.valid(key, now) {
			if a.Revoked == nil {
				return "", nil
			}
			chain, err := parseChain(raw, parsed)
			if err != nil {
				return RejectBadCertificate, err
			}
			return a.revocation(chain)
		}
	}
	parsed, err := parseChain(raw, parsed)
	if err != nil {
		return RejectBadCertificate, err
	}
	leaf := parsed[0]
	// Pins first: comparing a hash is far cheaper than checking signatures,
	// so a flood of wrong leaves costs little.
	if len(a.Pins) > 0 && !a.pinned(leaf) {
		return RejectPinMismatch, fmt.Errorf("client certificate %q: public key matches no pin", leaf.Subject.CommonName)
	}
	inter := x509.NewCertPool()
	for _, c := range parsed[1:] {
		inter.AddCert(c)
	}
	roots := a.Roots
	if roots == nil {
		roots = x509.NewCertPool()
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return classifyVerifyError(err, now), fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	// x509 checks the extended key usage only. A leaf that carries the
	// KeyUsage extension must allow digitalSignature to sign a TLS
	// CertificateVerify; OpenSSL refuses it otherwise, and so does this.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return RejectBadKeyUsage, fmt.Errorf("client certificate %q: key usage does not allow digitalSignature", leaf.Subject.CommonName)
	}
	if r, err := a.revocation(parsed); err != nil {
		return r, err
	}
	if a.Cache != nil {
		a.Cache.add(key, chainWindow(chains[0]))
	}
	return "", nil
}

// parseChain returns parsed when crypto/tls has parsed the chain already,
// or parses raw.
func parseChain(raw [][]byte, parsed []*x509.Certificate) ([]*x509.Certificate, error) {
	if parsed != nil {
		return parsed, nil
	}
	parsed = make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("client certificate %d: %w", i, err)
		}
		parsed[i] = c
	}
	return parsed, nil
}

// revocation refuses a chain that holds a certificate a.Revoked revokes:
// the leaf, or an intermediate the client sent. It is called only for a
// chain that verified (now or when it was cached), so the issuer names it
// looks up are those of certificates the roots vouch for.
func (a *Verifier) revocation(chain []*x509.Certificate) (Reason, error) {
	for i, c := range chain {
		if a.Revoked.Revoked(c) {
			what := "client certificate"
			if i > 0 {
				what = fmt.Sprintf("intermediate %q of client certificate", c.Subject.CommonName)
			}
			return RejectRevoked, fmt.Errorf("%s %q: serial %s revoked by the CRL of %q",
				what, chain[0].Subject.CommonName, c.SerialNumber.Text(16), c.Issuer.CommonName)
		}
	}
	return "", nil
}

func (a *Verifier) pinned(leaf *x509.Certificate) bool {
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	for _, p := range a.Pins {
		if p == sum {
			return true
		}
	}
	return false
}

// classifyVerifyError maps an error from x509.Certificate.Verify to the
// reason operators see.
func classifyVerifyError(err error, now time.Time) Reason {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) {
		switch inv.Reason {
		case x509.Expired:
			if inv.Cert != nil && now.Before(inv.Cert.NotBefore) {
				return RejectNotYetValid
			}
			return RejectExpired
		case x509.IncompatibleUsage:
			return RejectBadKeyUsage
		}
		return RejectBadCertificate
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return RejectUnknownIssuer
	}
	return RejectBadCertificate
}

// window is the time span in which every certificate of a verified chain is
// valid; a cached verification holds only inside it.
type window struct {
	notBefore, notAfter time.Time
}

func chainWindow(chain []*x509.Certificate) window {
	w := window{notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
	for _, c := range chain[1:] {
		if c.NotBefore.After(w.notBefore) {
			w.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(w.notAfter) {
			w.notAfter = c.NotAfter
		}
	}
	return w
}

// chainKey digests the trust generation and every presented certificate,
// each prefixed by its length so that no two different chains hash the same
// input. A client that adds, drops or changes any certificate (not only the
// leaf) gets a different key and a full verification.
func chainKey(raw [][]byte, generation uint64) [32]byte {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], generation)
	h.Write(b[:])
	for _, der := range raw {
		binary.BigEndian.PutUint64(b[:], uint64(len(der)))
		h.Write(b[:])
		h.Write(der)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}
