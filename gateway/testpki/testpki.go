// Package testpki builds a throwaway public-key infrastructure in memory: a
// root CA standing in for Cloudflare's origin-pull CA, optional intermediate
// CAs, server certificates and client certificates with deliberate defects
// (expired, not yet valid, server-auth usage only).
//
// It exists for tests, for the `edgegate demo` command and for the benchmark
// harness. Keys are generated fresh on every call and never meant to protect
// anything.
//
// Typical use:
//
//	ca, _ := testpki.NewCA("test origin-pull CA")
//	srv, _ := ca.Server("app.example.com")
//	cli, _ := ca.Client("cloudflare-client")
//	bad, _ := ca.Client("old", testpki.Expired())
//	crl, _ := ca.CRL(time.Now().Add(24*time.Hour), bad.Leaf) // revokes bad
//	pool := x509.NewCertPool()
//	pool.AddCert(ca.Cert)
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Validity defaults. Leaves live long enough for a demo left running for
// weeks; the backdating absorbs clock skew between processes on one host.
const (
	backdate      = time.Hour
	caLifetime    = 5 * 365 * 24 * time.Hour
	leafLifetime  = 90 * 24 * time.Hour
	defectOffset  = 24 * time.Hour
	rsaServerBits = 2048
)

// CA is a certificate authority whose key is held in memory. A root CA is
// self-signed; an intermediate CA (from Intermediate) is signed by its parent
// and its certificate is included in the chain of every leaf it issues.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key signs the certificates this CA issues.
	Key crypto.Signer
	// PEM is Cert in PEM form, ready to be written as a trust bundle.
	PEM []byte

	// chain holds the DER of the intermediates between this CA and its root,
	// this CA first; empty for a root.
	chain [][]byte
	// crlNumber is the number of the last CRL issued, for the next one.
	crlNumber atomic.Int64
}

// NewCA returns a self-signed root CA with an ECDSA P-256 key and the given
// common name. It carries no extended key usage, so it may issue both client
// and server certificates.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: generate CA key: %w", err)
	}
	tmpl, err := caTemplate(cn)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("testpki: create CA %q: %w", cn, err)
	}
	return newCA(der, key, nil)
}

// Intermediate returns a CA signed by ca. Leaves it issues carry the chain
// leaf, intermediate(s), but never the root, as a real client would send it.
func (ca *CA) Intermediate(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: generate intermediate key: %w", err)
	}
	tmpl, err := caTemplate(cn)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("testpki: create intermediate %q: %w", cn, err)
	}
	return newCA(der, key, append([][]byte{der}, ca.chain...))
}

// newCA wraps a CA certificate; chain is what its leaves carry after
// themselves (nil for a root).
func newCA(der []byte, key crypto.Signer, chain [][]byte) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse CA: %w", err)
	}
	ca := &CA{
		Cert:  cert,
		Key:   key,
		PEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		chain: chain,
	}
	return ca, nil
}

func caTemplate(cn string) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"edgegate testpki"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

// Server returns a server-auth leaf for the DNS names (IP literals become IP
// SANs) with an ECDSA P-256 key. The returned certificate carries its chain
// up to, but excluding, the root, and has Leaf set.
func (ca *CA) Server(names ...string) (tls.Certificate, error) {
	return ca.issue(leafSpec{cn: firstOr(names, "server"), names: names, serverAuth: true})
}

// ServerRSA is Server with an RSA 2048 key, for a vhost that offers both an
// ECDSA and an RSA certificate.
func (ca *CA) ServerRSA(names ...string) (tls.Certificate, error) {
	return ca.issue(leafSpec{cn: firstOr(names, "server"), names: names, serverAuth: true, rsaBits: rsaServerBits})
}

// ClientOption changes a client certificate issued by CA.Client.
type ClientOption func(*leafSpec)

// Expired makes the certificate's validity end a day before now.
func Expired() ClientOption {
	return func(s *leafSpec) {
		now := time.Now()
		s.notBefore, s.notAfter = now.Add(-2*defectOffset), now.Add(-defectOffset)
	}
}

// NotYetValid makes the certificate's validity start a day after now.
func NotYetValid() ClientOption {
	return func(s *leafSpec) {
		now := time.Now()
		s.notBefore, s.notAfter = now.Add(defectOffset), now.Add(2*defectOffset)
	}
}

// Validity sets the certificate's validity window explicitly.
func Validity(notBefore, notAfter time.Time) ClientOption {
	return func(s *leafSpec) { s.notBefore, s.notAfter = notBefore, notAfter }
}

// ServerAuthOnly gives the certificate the server-auth extended key usage
// and not client-auth, the mistake of reusing a server certificate as a
// client certificate.
func ServerAuthOnly() ClientOption {
	return func(s *leafSpec) { s.serverAuth, s.clientAuth = true, false }
}

// KeyUsage replaces the certificate's KeyUsage bits (digitalSignature by
// default); a non-zero set without digitalSignature makes a leaf that
// OpenSSL refuses for TLS client authentication.
func KeyUsage(ku x509.KeyUsage) ClientOption {
	return func(s *leafSpec) { s.keyUsage = ku }
}

// RSAKey gives the certificate an RSA key of the given size instead of
// ECDSA P-256.
func RSAKey(bits int) ClientOption {
	return func(s *leafSpec) { s.rsaBits = bits }
}

// Client returns a client-auth leaf with subject common name cn and an ECDSA
// P-256 key, changed by opts. The returned certificate carries its chain up
// to, but excluding, the root, and has Leaf set.
func (ca *CA) Client(cn string, opts ...ClientOption) (tls.Certificate, error) {
	s := leafSpec{cn: cn, clientAuth: true}
	for _, o := range opts {
		o(&s)
	}
	return ca.issue(s)
}

// SelfSigned returns a self-signed leaf with an ECDSA P-256 key, usable for
// both client and server auth: what a scanner or a misconfigured client
// presents.
func SelfSigned(cn string) (tls.Certificate, error) {
	s := leafSpec{cn: cn, names: []string{cn}, clientAuth: true, serverAuth: true}
	key, err := s.newKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl, err := s.template()
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testpki: create self-signed %q: %w", cn, err)
	}
	return assemble(der, nil, key)
}

type leafSpec struct {
	cn                  string
	names               []string
	clientAuth          bool
	serverAuth          bool
	rsaBits             int
	keyUsage            x509.KeyUsage
	notBefore, notAfter time.Time
}

func (s *leafSpec) newKey() (crypto.Signer, error) {
	if s.rsaBits > 0 {
		k, err := rsa.GenerateKey(rand.Reader, s.rsaBits)
		if err != nil {
			return nil, fmt.Errorf("testpki: generate RSA %d key: %w", s.rsaBits, err)
		}
		return k, nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: generate ECDSA key: %w", err)
	}
	return k, nil
}

func (s *leafSpec) template() (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	nb, na := s.notBefore, s.notAfter
	if nb.IsZero() && na.IsZero() {
		now := time.Now()
		nb, na = now.Add(-backdate), now.Add(leafLifetime)
	}
	t := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.cn, Organization: []string{"edgegate testpki"}},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if s.rsaBits > 0 {
		// RSA key exchange in TLS 1.2 suites without ECDHE encrypts to the key.
		t.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if s.keyUsage != 0 {
		t.KeyUsage = s.keyUsage
	}
	if s.serverAuth {
		t.ExtKeyUsage = append(t.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.clientAuth {
		t.ExtKeyUsage = append(t.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, n := range s.names {
		if ip := net.ParseIP(n); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, n)
		}
	}
	return t, nil
}

func (ca *CA) issue(s leafSpec) (tls.Certificate, error) {
	key, err := s.newKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl, err := s.template()
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testpki: issue %q: %w", s.cn, err)
	}
	return assemble(der, ca.chain, key)
}

func assemble(leaf []byte, chain [][]byte, key crypto.Signer) (tls.Certificate, error) {
	parsed, err := x509.ParseCertificate(leaf)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testpki: parse leaf: %w", err)
	}
	return tls.Certificate{
		Certificate: append([][]byte{leaf}, chain...),
		PrivateKey:  key,
		Leaf:        parsed,
	}, nil
}

// WritePEM writes c's chain to dir/name.crt and its private key (PKCS #8) to
// dir/name.key, mode 0600, and returns both paths. This is the layout
// edgegate's config and nginx expect.
func WritePEM(dir, name string, c tls.Certificate) (certFile, keyFile string, err error) {
	if len(c.Certificate) == 0 {
		return "", "", errors.New("testpki: write PEM: certificate has no chain")
	}
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", fmt.Errorf("testpki: marshal key for %s: %w", name, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("testpki: %w", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("testpki: %w", err)
	}
	return certFile, keyFile, nil
}

// CRL returns a certificate revocation list signed by ca, in DER, that
// revokes the given certificates (by serial number) and is valid from an
// hour ago until nextUpdate. Each call gives the next CRL number. A
// nextUpdate in the past makes an expired CRL.
func (ca *CA) CRL(nextUpdate time.Time, revoked ...*x509.Certificate) ([]byte, error) {
	now := time.Now()
	thisUpdate := now.Add(-backdate)
	if !nextUpdate.After(thisUpdate) {
		thisUpdate = nextUpdate.Add(-backdate)
	}
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(ca.crlNumber.Add(1)),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   c.SerialNumber,
			RevocationTime: now.Add(-time.Minute),
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("testpki: CRL of %q: %w", ca.Cert.Subject.CommonName, err)
	}
	return der, nil
}

// CRLPEM wraps a DER CRL in PEM ("X509 CRL"), as openssl ca -gencrl
// writes it.
func CRLPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// SPKISHA256 returns the SHA-256 digest of cert's SubjectPublicKeyInfo, the
// value an operator pins in client_auth.spki_sha256.
func SPKISHA256(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return sum[:]
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("testpki: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func firstOr(names []string, def string) string {
	if len(names) > 0 {
		return names[0]
	}
	return def
}
