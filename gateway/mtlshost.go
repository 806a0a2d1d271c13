package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/edgegate/edgegate/gateway/clientauth"
	"github.com/edgegate/edgegate/gateway/config"
)

// mtlsHost is an mtls vhost's server side, compiled: the tls.Config chosen
// from the SNI edgegate already read, who may connect, and how client
// certificates are judged.
type mtlsHost struct {
	tls   *tls.Config       // shared by the vhost's connections; see terminate
	certs []tls.Certificate // what tls serves, chosen by certificate
	auth  *clientauth.Verifier
	// trust digests what the vhost trusts (CA, pins); a reload that keeps
	// it keeps auth's cache of verified chains and its generation.
	trust [32]byte
}

// ticketSecret keys session tickets when no session_ticket_keys file is
// configured: random per process, so tickets survive a reload (when trust is
// unchanged) but not a restart.
var ticketSecret = func() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}()

// newMTLSHost loads vhost i's certificates, client CA, pins and ticket keys.
// prev is the same vhost in the configuration being replaced, or nil: when
// it trusts exactly what this one does, its cache of verified chains
// carries over (with the CRLs read now); any change of CA or pins starts a
// new one.
func newMTLSHost(cfg *config.Config, i int, prev *mtlsHost) (*mtlsHost, error) {
	vc := &cfg.VHosts[i]
	at := func(err error, path ...any) error {
		return cfg.ErrAt(fmt.Sprintf("vhost %q: %v", vc.Name, err), append([]any{"vhosts", i}, path...)...)
	}
	var certs []tls.Certificate
	for j, cf := range vc.TLS.Certificates {
		c, err := loadKeyPair(cfg, cf)
		if err != nil {
			return nil, at(fmt.Errorf("tls.certificates: cert %s, key %s: %w", cf.Cert, cf.Key, err), "tls", "certificates", j)
		}
		certs = append(certs, c)
	}

	// trust identifies what this vhost trusts; it keys the chain cache and
	// the ticket keys, so a change of CA or pins invalidates both.
	trust := sha256.New()
	auth := &clientauth.Verifier{Cache: clientauth.NewCache(1024)}
	var cas []*x509.Certificate // what may sign a CRL
	if vc.ClientAuth.CA == "cloudflare" {
		auth.Roots = cfg.Cloudflare.Pool()
		trust.Write(cfg.Cloudflare.CA.Raw)
		cas = append(cas, cfg.Cloudflare.CA)
	} else {
		pem, err := os.ReadFile(cfg.Path(vc.ClientAuth.CA))
		if err != nil {
			return nil, at(fmt.Errorf("client_auth.ca: %w", err), "client_auth", "ca")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, at(fmt.Errorf("client_auth.ca: %s holds no PEM certificate", vc.ClientAuth.CA), "client_auth", "ca")
		}
		auth.Roots = pool
		trust.Write(pem)
		cas = pemCertificates(pem)
	}
	// CRLs are not part of trust: the verifier consults them on every
	// verification, cached chains included, so a new CRL keeps the cache
	// and the session tickets (a resumed session is judged again too).
	if len(vc.ClientAuth.CRL) > 0 {
		auth.Revoked = &clientauth.Revocations{}
	}
	for j, f := range vc.ClientAuth.CRL {
		data, err := os.ReadFile(cfg.Path(f))
		var lists []*x509.RevocationList
		if err == nil {
			lists, err = clientauth.ParseCRLs(data)
		}
		for _, l := range lists {
			if err = auth.Revoked.Add(l, cas); err != nil {
				break
			}
		}
		if err != nil {
			return nil, at(fmt.Errorf("client_auth.crl %s: %w", f, err), "client_auth", "crl", j)
		}
	}
	for j, s := range vc.ClientAuth.SPKISHA256 {
		p, err := clientauth.ParsePin(s)
		if err != nil {
			return nil, at(fmt.Errorf("client_auth.spki_sha256: %w", err), "client_auth", "spki_sha256", j)
		}
		auth.Pins = append(auth.Pins, p)
		trust.Write(p[:])
	}
	var trustSum [32]byte
	trust.Sum(trustSum[:0])
	if prev != nil && prev.trust == trustSum {
		auth.Generation, auth.Cache = prev.auth.Generation, prev.auth.Cache
	} else {
		auth.Generation = clientauth.NewTrustGeneration()
	}

	secrets := [][]byte{ticketSecret}
	if f := vc.TLS.SessionTicketKeys; f != "" {
		var err error
		if secrets, err = readTicketKeys(cfg.Path(f)); err != nil {
			return nil, at(fmt.Errorf("tls.session_ticket_keys: %w", err), "tls", "session_ticket_keys")
		}
	}
	var keys [][32]byte
	for _, sec := range secrets {
		mac := hmac.New(sha256.New, sec)
		mac.Write([]byte("edgegate session ticket\x00"))
		mac.Write([]byte(vc.Name))
		mac.Write([]byte{0})
		mac.Write(trustSum[:])
		var k [32]byte
		copy(k[:], mac.Sum(nil))
		keys = append(keys, k)
	}

	minVersion := uint16(tls.VersionTLS12)
	if vc.TLS.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	m := &mtlsHost{auth: auth, trust: trustSum, certs: certs}
	tc := &tls.Config{
		GetCertificate: m.certificate,
		MinVersion:     minVersion,
		NextProtos:     vc.TLS.ALPN,
		// The handshake asks for a certificate but judges it itself, in
		// VerifyConnection, which also runs on resumption; Go's own
		// "certificate required" path is never taken.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: m.verifyConnection,
		CipherSuites:     vc.TLS.SuiteIDs,
		CurvePreferences: vc.TLS.CurveIDs,
	}
	tc.SetSessionTicketKeys(keys)
	m.tls = tc
	return m, nil
}

// loadKeyPair loads a certificate chain and its private key.
func loadKeyPair(cfg *config.Config, cf config.CertFiles) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(cfg.Path(cf.Cert), cfg.Path(cf.Key))
	// crypto/tls has no error value for this one, and its words ("public
	// key") leave an operator to guess which file is meant.
	if err != nil && strings.Contains(err.Error(), "private key does not match public key") {
		err = errors.New("private key does not match the certificate")
	}
	return c, err
}

// readTicketKeys reads a session ticket key file: one or more 32-byte keys,
// raw (as `openssl rand 32` writes them); the first encrypts new tickets,
// all decrypt.
func readTicketKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || len(b)%32 != 0 {
		return nil, fmt.Errorf("%s: want one or more 32-byte keys, got %d bytes", path, len(b))
	}
	var keys [][]byte
	for len(b) > 0 {
		keys = append(keys, b[:32])
		b = b[32:]
	}
	return keys, nil
}
