package gateway

import (
	"crypto/tls"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway/relay"
	"github.com/edgegate/edgegate/gateway/upstream"
)

// forward is the tail both modes share once a connection may go upstream:
// dial the vhost's upstream, send the PROXY header and the client's first
// bytes in one write (one segment), then relay both directions until they
// end. client is what the upstream's bytes are relayed with (the TCP
// connection itself, or the TLS connection over it); raw is the socket, for
// closing without a byte. An upstream that cannot be reached costs the
// client nothing but a silent close.
//
// The connection is parked in the relay's loops: this goroutine returns
// true at once, and the loop ends the connection when both directions have
// ended, so that an idle connection holds no goroutine and no buffer. A
// passthrough connection (client is the socket itself) is spliced; a
// terminated one (client is its crypto/tls.Conn) is decrypted and
// encrypted by the loop. Only a terminated connection whose upstream
// speaks TLS too is relayed by Pipe, on this goroutine.
func (s *Server) forward(ss *session, st *state, client net.Conn, raw clientConn, hdr, first []byte) (parked bool) {
	v := ss.vhost
	if tc, ok := client.(*tls.Conn); ok && s.parker != nil && v.upAddr.IsValid() && len(first) == 0 {
		return s.forwardDialing(ss, tc, raw, hdr)
	}
	dialStart := time.Now()
	up, srv, err := v.pool.Dial(ss.client.Addr(), v.timeouts.UpstreamDial.D(), relay.Dial)
	if err == nil {
		s.metrics.of(v).connect.Observe(time.Since(dialStart).Seconds())
	}
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, err
		closeSilently(raw, false)
		return false
	}
	ss.server = srv
	if up, hdr, err = v.upstreamTLS.Handshake(up, srv, hdr, v.timeouts.Handshake.D()); err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		closeSilently(raw, false)
		return false
	}
	if out := append(hdr, first...); len(out) > 0 {
		_, err = up.Write(out)
	}
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		up.Close()
		closeSilently(raw, false)
		return false
	}
	idle := v.timeouts.Idle.D()
	sent := len(first)
	ended := func(r relay.Result) {
		s.relayed(ss, sent, r)
		s.end(ss)
	}
	if s.parker != nil {
		if client == net.Conn(raw) {
			s.park(ss, relay.NewPair(client, up, idle, ended))
			return true
		}
		_, plain := up.(syscall.Conn)
		if tc, ok := client.(*tls.Conn); ok && plain {
			s.park(ss, relay.NewTLSPair(tc, tc.NetConn().(*heldConn).Socket, up, idle, ended))
			return true
		}
	}
	s.relayed(ss, len(first), relay.Pipe(client, up, idle))
	return false
}

// forwardDialing is forward for a terminated connection whose upstream is
// one server named by IP (v.upAddr): the connect is started without
// blocking and the pair parked at once, the relay's loop finishing the
// connect and writing hdr, as passthroughRaw does. The handshake's
// goroutine neither waits for the connect nor puts the upstream socket in
// Go's poller. A connect that fails closes the client without a byte.
func (s *Server) forwardDialing(ss *session, tc *tls.Conn, raw clientConn, hdr []byte) bool {
	v := ss.vhost
	w := v.pool.Walk(ss.client.Addr())
	srv := w.Next()
	if srv == nil {
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, fmt.Errorf("vhost %s: %w", v.name, upstream.ErrNoServer)
		closeSilently(raw, false)
		return false
	}
	dialStart := time.Now()
	up, err := relay.DialStart(v.upAddr)
	if err != nil {
		srv.Report(err)
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, err
		closeSilently(raw, false)
		return false
	}
	pr := relay.NewTLSDialPair(tc, tc.NetConn().(*heldConn).Socket, up, hdr, v.timeouts.UpstreamDial.D(), v.timeouts.Idle.D(), func(r relay.Result) {
		if r.DialErr != nil {
			ss.outcome, ss.err = OutcomeUpstreamUnreachable, r.DialErr
		} else {
			s.relayed(ss, 0, r)
		}
		s.end(ss)
	})
	pr.Dialed = func(err error) {
		srv.Report(err)
		if err == nil {
			ss.server = srv
			s.metrics.of(v).connect.Observe(time.Since(dialStart).Seconds())
		}
	}
	s.park(ss, pr)
	return true
}

// park hands a connection's pair to the relay's loops, which end the
// connection; a drain that already cut the session cuts the pair.
func (s *Server) park(ss *session, pr *relay.Pair) {
	s.mu.Lock()
	ss.pair = pr
	if ss.cut.Load() {
		pr.Cut()
	}
	s.mu.Unlock()
	s.parker.Park(pr)
}

// relayed records what the relay saw of a connection: bytes each way (sent,
// the client's bytes forward wrote itself, included) and the outcome.
func (s *Server) relayed(ss *session, sent int, r relay.Result) {
	ss.toUp = int64(sent) + r.ToUpstream
	ss.toClient = r.ToClient
	switch {
	case r.Idled:
		ss.outcome = OutcomeIdleTimeout
	case r.ToClient == 0 && r.UpstreamClosedFirst:
		// An upstream that hangs up without a word has usually refused
		// what it was sent: most often a PROXY header it does not expect.
		ss.outcome = OutcomeUpstreamClosed
	default:
		ss.outcome = OutcomeProxied
	}
}
