package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// mtlsHost is an mtls vhost's server side, compiled: the tls.Config chosen
// from the SNI edgegate already read, who may connect, and how client
// certificates are judged.
type mtlsHost struct {
	tls   *tls.Config
	auth  *ClientAuth
	allow []netip.Prefix // empty: any source
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
func newMTLSHost(cfg *Config, i int, generation uint64) (*mtlsHost, error) {
	vc := &cfg.VHosts[i]
	at := func(err error, path ...any) error {
		return cfg.errAt(fmt.Sprintf("vhost %q: %v", vc.Name, err), append([]any{"vhosts", i}, path...)...)
	}
	var certs []tls.Certificate
	for j, cf := range vc.TLS.Certificates {
		c, err := tls.LoadX509KeyPair(cfg.Path(cf.Cert), cfg.Path(cf.Key))
		if err != nil {
			return nil, at(fmt.Errorf("tls.certificates: cert %s, key %s: %w", cf.Cert, cf.Key, err), "tls", "certificates", j)
		}
		certs = append(certs, c)
	}

	// trust identifies what this vhost trusts; it keys the chain cache and
	// the ticket keys, so a change of CA or pins invalidates both.
	trust := sha256.New()
	auth := &ClientAuth{Cache: NewChainCache(1024)}
	if vc.ClientAuth.CA == "cloudflare" {
		pool, ca := CloudflareCA()
		auth.Roots = pool
		trust.Write(ca.Raw)
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
	}
	for j, s := range vc.ClientAuth.SPKISHA256 {
		p, err := ParsePin(s)
		if err != nil {
			return nil, at(fmt.Errorf("client_auth.spki_sha256: %w", err), "client_auth", "spki_sha256", j)
		}
		auth.Pins = append(auth.Pins, p)
		trust.Write(p[:])
	}
	trustSum := trust.Sum(nil)
	auth.Generation = NewTrustGeneration()

	allow := vc.allowFrom

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
		mac.Write(trustSum)
		var k [32]byte
		copy(k[:], mac.Sum(nil))
		keys = append(keys, k)
	}

	minVersion := uint16(tls.VersionTLS12)
	if vc.TLS.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	tc := &tls.Config{
		Certificates: certs,
		MinVersion:   minVersion,
		NextProtos:   vc.TLS.ALPN,
		// The handshake asks for a certificate but judges it itself, in
		// VerifyConnection, which also runs on resumption; Go's own
		// "certificate required" path is never taken.
		ClientAuth: tls.RequestClientCert,
	}
	tc.SetSessionTicketKeys(keys)
	return &mtlsHost{tls: tc, auth: auth, allow: allow}, nil
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

// terminate runs an mtls vhost's path: source check, TLS handshake with a
// verified client certificate, then the cleartext to the upstream after a
// PROXY header with the TLS facts. Every refusal ends the connection without
// a byte from edgegate after the failure is known, and the upstream is
// never dialled for it.
func (s *Server) terminate(ss *session, st *state, c *net.TCPConn, prefix []byte) {
	v := ss.vhost
	m := v.mtls
	if len(m.allow) > 0 && !containsAddr(m.allow, ss.client.Addr()) {
		s.refuse(ss, c, OutcomeNotAllowed, "source_not_allowed", nil)
		return
	}

	hc := &heldConn{TCPConn: c, prefix: prefix, holding: true}
	cfg := m.tls.Clone()
	var reason RejectReason
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		r, err := m.auth.VerifyChain(cs.PeerCertificates, time.Now())
		if err != nil {
			reason = r
			return err
		}
		return nil
	}
	// The served certificate is recorded for the PROXY header (SSL_SIG_ALG
	// and SSL_KEY_ALG describe the frontend's certificate); the choice is
	// crypto/tls's own: the first certificate the client supports.
	var served *x509.Certificate
	cfg.Certificates = nil
	cfg.GetCertificate = func(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		for i := range m.tls.Certificates {
			c := &m.tls.Certificates[i]
			if chi.SupportsCertificate(c) == nil || i == len(m.tls.Certificates)-1 {
				served = c.Leaf
				return c, nil
			}
		}
		return nil, errors.New("no certificate")
	}
	tc := tls.Server(hc, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), st.cfg.Timeouts.Handshake.D())
	start := time.Now()
	err := tc.HandshakeContext(ctx)
	cancel()
	s.metrics.handshake.WithLabelValues(v.name).Observe(time.Since(start).Seconds())
	if err != nil {
		hc.discard()
		if reason != "" {
			s.refuse(ss, c, OutcomeClientCert, string(reason), err)
		} else {
			s.refuse(ss, c, OutcomeHandshake, handshakeReason(err), err)
		}
		return
	}
	if err := hc.release(); err != nil {
		ss.outcome, ss.err = OutcomeHandshake, err
		c.Close()
		return
	}

	up, err := dialUpstream(v.upstream, st.cfg.Timeouts.UpstreamDial.D())
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, err
		c.Close()
		return
	}
	cs := tc.ConnectionState()
	tlvs, err := tlsTLVs(ss.hello.ServerName, cs, served, ss.uniqueID(v.upstream))
	var hdr []byte
	if err == nil {
		hdr, err = proxyHeader(v.upstream.ProxyProtocol, ss.client, ss.local, tlvs)
	}
	if err == nil && len(hdr) > 0 {
		_, err = up.Write(hdr)
	}
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		up.Close()
		c.Close()
		return
	}
	toUp, toClient, idled := pipe(tc, up, st.cfg.Timeouts.Idle.D())
	ss.toUp, ss.toClient = toUp, toClient
	ss.outcome = OutcomeProxied
	if idled {
		ss.outcome = OutcomeIdleTimeout
	}
}

// refuse ends an mtls connection without a response, counting the reason.
func (s *Server) refuse(ss *session, c *net.TCPConn, o Outcome, reason string, err error) {
	ss.outcome, ss.reason, ss.err = o, reason, err
	s.metrics.rejections.WithLabelValues(ss.vhost.name, reason).Inc()
	closeSilently(c, ss.vhost.resetOnReject)
}

// handshakeReason names a handshake failure that was not a certificate
// verdict: the deadline, the client leaving, or a protocol mismatch (a TLS
// version or cipher the vhost refuses).
func handshakeReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "handshake_timeout"
	case errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrClosed):
		return "client_closed"
	}
	return "handshake_failed"
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// heldConn is the client conn during an mtls handshake. Reads replay the
// ClientHello bytes already read, then continue on the socket. Writes are
// held back and only sent when the handshake next waits for the client (its
// flight must reach the client) or when it succeeds. Whatever crypto/tls
// writes just before it gives up (an alert: bad certificate, protocol
// version, decrypt error) is therefore dropped, and a refused client
// receives nothing after the failure is known.
type heldConn struct {
	*net.TCPConn
	prefix  []byte
	held    []byte
	holding bool
}

func (c *heldConn) Read(p []byte) (int, error) {
	if len(c.held) > 0 {
		if _, err := c.TCPConn.Write(c.held); err != nil {
			return 0, err
		}
		c.held = c.held[:0]
	}
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

func (c *heldConn) Write(p []byte) (int, error) {
	if c.holding {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	return c.TCPConn.Write(p)
}

// release sends what the successful handshake wrote last and stops holding.
func (c *heldConn) release() error {
	c.holding = false
	if len(c.held) > 0 {
		_, err := c.TCPConn.Write(c.held)
		c.held = nil
		return err
	}
	return nil
}

// discard drops what a failed handshake wrote.
func (c *heldConn) discard() { c.held = nil }
