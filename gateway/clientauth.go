package gateway

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// RejectReason names why a client certificate was refused. The values are
// stable: they appear in metrics labels and log fields.
type RejectReason string

// Reasons returned by ClientAuth.Verify.
const (
	RejectNoCertificate  RejectReason = "no_certificate"
	RejectUnknownIssuer  RejectReason = "unknown_issuer"
	RejectExpired        RejectReason = "expired"
	RejectNotYetValid    RejectReason = "not_yet_valid"
	RejectBadKeyUsage    RejectReason = "bad_key_usage"
	RejectPinMismatch    RejectReason = "pin_mismatch"
	RejectBadCertificate RejectReason = "bad_certificate"
)

// maxClientChain bounds the certificates a client may present. Cloudflare
// sends a leaf and at most an intermediate; a long chain is only a way to
// make us hash and parse more.
const maxClientChain = 8

// ClientAuth verifies the certificate chain a client presents to an mtls
// vhost. It is meant to be called from tls.Config.VerifyConnection with the
// server's ClientAuth set to tls.RequireAnyClientCert, so that crypto/tls
// never verifies (and never sends an alert of its own) and this is the only
// verification that counts.
//
// A ClientAuth must not be modified after first use; on reload build a new
// one with a new Generation.
type ClientAuth struct {
	// Roots are the trust anchors. A nil pool trusts nothing.
	Roots *x509.CertPool
	// Pins, if not empty, are the SHA-256 digests of the SubjectPublicKeyInfo
	// of the leaves allowed; a chain that verifies to Roots is still refused
	// unless its leaf matches one of them.
	Pins [][32]byte
	// Generation identifies this combination of Roots and Pins in Cache keys.
	// It must differ between any two ClientAuths that share a Cache and trust
	// differently, including the old and new one around a reload; take it
	// from NewTrustGeneration.
	Generation uint64
	// Cache remembers chains that verified, so a client presenting the same
	// chain again (Cloudflare presents one chain millions of times) costs a
	// hash instead of signature checks. Nil disables caching.
	Cache *ChainCache
}

var trustGeneration atomic.Uint64

// NewTrustGeneration returns a number never returned before in this process,
// for ClientAuth.Generation.
func NewTrustGeneration() uint64 {
	return trustGeneration.Add(1)
}

// Verify checks rawCerts, the DER certificates a client presented, leaf
// first: the chain must verify to a.Roots for client authentication, every
// certificate in it must be valid at now, and the leaf must match a pin if
// a.Pins is set. It returns "" and nil when the client is accepted, or the
// reason and an error describing the refusal.
func (a *ClientAuth) Verify(rawCerts [][]byte, now time.Time) (RejectReason, error) {
	return a.verify(rawCerts, nil, now)
}

// VerifyChain is Verify for certificates crypto/tls already parsed, as found
// in tls.ConnectionState.PeerCertificates inside VerifyConnection; it saves
// parsing them a second time.
func (a *ClientAuth) VerifyChain(certs []*x509.Certificate, now time.Time) (RejectReason, error) {
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		if c == nil {
			return RejectBadCertificate, errors.New("client certificate: nil certificate in chain")
		}
		raw[i] = c.Raw
	}
	return a.verify(raw, certs, now)
}

func (a *ClientAuth) verify(raw [][]byte, parsed []*x509.Certificate, now time.Time) (RejectReason, error) {
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
			return "", nil
		}
	}
	if parsed == nil {
		parsed = make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return RejectBadCertificate, fmt.Errorf("client certificate %d: %w", i, err)
			}
			parsed[i] = c
		}
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
	if a.Cache != nil {
		a.Cache.add(key, chainWindow(chains[0]))
	}
	return "", nil
}

func (a *ClientAuth) pinned(leaf *x509.Certificate) bool {
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
func classifyVerifyError(err error, now time.Time) RejectReason {
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

// ChainCache remembers client certificate chains that verified, keyed by a
// digest of the presented chain and the trust generation, with the window in
// which the whole chain is valid. Only successes are stored. It is safe for
// concurrent use; the zero value is not usable, call NewChainCache.
type ChainCache struct {
	lru *lru.Cache[[32]byte, window]
}

// NewChainCache returns a cache holding at most size chains (at least 1),
// evicting the least recently used.
func NewChainCache(size int) *ChainCache {
	if size < 1 {
		size = 1
	}
	c, err := lru.New[[32]byte, window](size)
	if err != nil {
		// lru.New fails only for a size below 1, excluded above.
		panic(err)
	}
	return &ChainCache{lru: c}
}

// valid reports whether key is cached and now lies inside its window. An
// entry found outside its window is dropped: a chain that expired never
// becomes valid again, and one not yet valid is cheap to verify once more.
func (c *ChainCache) valid(key [32]byte, now time.Time) bool {
	w, ok := c.lru.Get(key)
	if !ok {
		return false
	}
	if now.Before(w.notBefore) || now.After(w.notAfter) {
		c.lru.Remove(key)
		return false
	}
	return true
}

func (c *ChainCache) add(key [32]byte, w window) {
	c.lru.Add(key, w)
}

// Len returns the number of cached chains.
func (c *ChainCache) Len() int { return c.lru.Len() }

// Purge empties the cache, as a reload does; entries of the old generation
// could not match anyway, but they would hold memory.
func (c *ChainCache) Purge() { c.lru.Purge() }

// ParsePin parses an SPKI SHA-256 pin as written in client_auth.spki_sha256:
// 64 hex digits, optionally as colon-separated pairs (the form openssl
// prints), or 32 bytes in base64, standard or URL alphabet, padded or not.
func ParsePin(s string) ([32]byte, error) {
	var pin [32]byte
	s = strings.TrimSpace(s)
	h := s
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		ok := len(parts) == len(pin)
		for _, p := range parts {
			ok = ok && len(p) == 2
		}
		if !ok {
			return pin, fmt.Errorf("pin %q: colon form must be 32 pairs of hex digits", s)
		}
		h = strings.Join(parts, "")
	}
	if len(h) == hex.EncodedLen(len(pin)) {
		if _, err := hex.Decode(pin[:], []byte(h)); err == nil {
			return pin, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.Strict().DecodeString(s)
		if err == nil && len(b) == len(pin) {
			copy(pin[:], b)
			return pin, nil
		}
	}
	return [32]byte{}, fmt.Errorf("pin %q: want a SHA-256 digest as 64 hex digits or base64", s)
}
