package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/edgegate/edgegate/gateway/clientauth"
	"github.com/edgegate/edgegate/gateway/proxyheader"
	"github.com/edgegate/edgegate/gateway/relay"
)

// terminate runs an mtls vhost's path: source check, TLS handshake with a
// verified client certificate, then the cleartext to the upstream after a
// PROXY header with the TLS facts. Every refusal ends the connection without
// a byte from edgegate after the failure is known, and the upstream is
// never dialled for it. It reports whether the connection was parked in
// the relay's loops (see forward).
func (s *Server) terminate(ss *session, st *state, c clientConn, prefix []byte) (parked bool) {
	v := ss.vhost
	m := v.mtls
	if !v.admits(ss.client.Addr()) {
		s.refuse(ss, c, OutcomeNotAllowed, "source_not_allowed", nil)
		return false
	}

	hc := &heldConn{Socket: relay.NewSocket(c), prefix: prefix, holding: true}
	// m.tls is the vhost's, shared: its hooks (mtlsHost.certificate and
	// verifyConnection) reach this connection through hc and the
	// handshake's error, so no per-connection Config is made.
	tc := tls.Server(hc, m.tls)
	// The handshake's time limit is a deadline on the socket, which the
	// poller keeps: a context with a deadline would cost a timer and an
	// AfterFunc registration (a dozen allocations) on every handshake.
	start := time.Now()
	c.SetDeadline(start.Add(v.timeouts.Handshake.D()))
	err := tc.Handshake()
	s.metrics.of(v).handshake.Observe(time.Since(start).Seconds())
	c.SetDeadline(time.Time{})
	if err != nil {
		hc.discard()
		if r, ok := errors.AsType[*certRefused](err); ok {
			// The refused certificate goes into the log line (the
			// SPKI to pin, say).
			ss.tls.set(r.cs)
			s.refuse(ss, c, OutcomeClientCert, string(r.reason), err)
		} else {
			s.refuse(ss, c, OutcomeHandshake, handshakeReason(err), err)
		}
		return false
	}
	if err := hc.release(); err != nil {
		ss.outcome, ss.err = OutcomeHandshake, err
		closeSilently(c, false)
		return false
	}

	cs := tc.ConnectionState()
	ss.tls.set(cs)
	tlvs, err := proxyheader.TLSTLVs(ss.sni, cs, hc.served, ss.uniqueID(v.upstream))
	var hdr []byte
	if err == nil {
		hdr, err = proxyheader.Encode(v.upstream.ProxyProtocol, ss.client, ss.local, tlvs)
	}
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		closeSilently(c, false)
		return false
	}
	return s.forward(ss, st, tc, c, hdr, nil)
}

// certRefused is the handshake's error when mtlsHost.verifyConnection
// refuses the client's certificate: why, and the state it judged.
type certRefused struct {
	reason clientauth.Reason
	cs     tls.ConnectionState
	err    error
}

func (e *certRefused) Error() string { return e.err.Error() }
func (e *certRefused) Unwrap() error { return e.err }

// verifyConnection judges the client's certificate chain with the vhost's
// verifier, on full and resumed handshakes alike.
func (m *mtlsHost) verifyConnection(cs tls.ConnectionState) error {
	r, err := m.auth.Verify(cs.PeerCertificates, time.Now())
	if err != nil {
		return &certRefused{reason: r, cs: cs, err: err}
	}
	return nil
}

// certificate chooses the certificate to serve the way crypto/tls would
// from Config.Certificates (the first one the client supports, else the
// last), and records it in the connection's heldConn.
func (m *mtlsHost) certificate(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	for i := range m.certs {
		c := &m.certs[i]
		if chi.SupportsCertificate(c) == nil || i == len(m.certs)-1 {
			if hc, ok := chi.Conn.(*heldConn); ok {
				hc.served = c.Leaf
			}
			return c, nil
		}
	}
	return nil, errors.New("no certificate")
}

// tlsFacts is what an mtls handshake established, for the connection's log
// line.
type tlsFacts struct {
	version, cipher uint16 // 0 until the handshake got as far as the client's certificate
	resumed         bool
	leaf            *x509.Certificate // the client's certificate, verified or not; nil for none
}

func (f *tlsFacts) set(cs tls.ConnectionState) {
	f.version, f.cipher, f.resumed, f.leaf = cs.Version, cs.CipherSuite, cs.DidResume, nil
	if len(cs.PeerCertificates) > 0 {
		f.leaf = cs.PeerCertificates[0]
	}
}

// refuse ends an mtls connection without a response, counting the reason.
func (s *Server) refuse(ss *session, c clientConn, o Outcome, reason string, err error) {
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

// heldConn is the client conn under an mtls connection's crypto/tls.Conn. Reads replay the
// ClientHello bytes already read, then continue on the socket. Writes are
// held back and only sent when the handshake next waits for the client (its
// flight must reach the client) or when it succeeds. Whatever crypto/tls
// writes just before it gives up (an alert: bad certificate, protocol
// version, decrypt error) is therefore dropped, and a refused client
// receives nothing after the failure is known. Once the connection is
// parked, its Socket neither waits to read nor to write (see relay.Socket).
type heldConn struct {
	*relay.Socket
	prefix  []byte
	held    []byte
	holding bool
	// served is the certificate the handshake presented, for the PROXY
	// header (SSL_SIG_ALG and SSL_KEY_ALG describe it); set by
	// mtlsHost.certificate.
	served *x509.Certificate
}

func (c *heldConn) Read(p []byte) (int, error) {
	if len(c.held) > 0 {
		if _, err := c.Socket.Write(c.held); err != nil {
			return 0, err
		}
		// Let go rather than reuse: a handshake writes one or two
		// flights, and an idle connection should not keep the room
		// for the server's certificate chain.
		c.held = nil
	}
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil // the hello's bytes, kept by the slice otherwise
		}
		return n, nil
	}
	return c.Socket.Read(p)
}

func (c *heldConn) Write(p []byte) (int, error) {
	if c.holding {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	return c.Socket.Write(p)
}

// release sends what the successful handshake wrote last and stops holding.
func (c *heldConn) release() error {
	c.holding = false
	held := c.held
	c.held = nil
	if len(held) > 0 {
		_, err := c.Socket.Write(held)
		return err
	}
	return nil
}

// discard drops what a failed handshake wrote.
func (c *heldConn) discard() { c.held = nil }
