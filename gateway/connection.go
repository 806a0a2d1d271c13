package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/relay"
	"github.com/edgegate/edgegate/gateway/upstream"
	"github.com/edgegate/edgegate/sni"
)

// session is what edgegate knows about one client connection as it moves
// along the path; it becomes the connection's log line and metrics.
type session struct {
	conn     net.Conn    // the accepted connection once it is a net.Conn (nil on the raw path), under Server.mu
	pair     *relay.Pair // set (under Server.mu) once parked in the relay
	start    time.Time
	listener string
	client   netip.AddrPort // the client, after any trusted inbound PROXY header
	peer     netip.Addr     // the TCP peer (the balancer, behind one)
	viaProxy bool           // client came from an inbound PROXY header
	local    netip.AddrPort // the address the client connected to
	sni      string         // the routing form of the SNI ("" for none)
	rawSNI   string         // the SNI as sent, for the log when sni is ""
	vhost    *vhost
	server   *upstream.Server // the upstream server, once connected
	outcome  Outcome
	reason   string // detail for refusals (e.g. the client certificate problem)
	toUp     int64  // bytes client -> upstream
	toClient int64  // bytes upstream -> client
	err      error
	cut      atomic.Bool // closed by Shutdown at the drain deadline
	id       string      // set when an upstream asks for unique IDs
	tls      tlsFacts    // mtls: what the handshake established, for the log line
}

// uniqueID returns the connection's ID for a PROXY v2 header when the
// upstream asks for one (nil otherwise): 16 random bytes, hex, so nginx and
// HAProxy can log it as text. It also goes into the log line as conn_id.
func (ss *session) uniqueID(u config.Upstream) []byte {
	if !u.UniqueID {
		return nil
	}
	if ss.id == "" {
		var b [16]byte
		rand.Read(b[:])
		ss.id = hex.EncodeToString(b[:])
	}
	return []byte(ss.id)
}

// serveConn carries one accepted connection along the path: inbound PROXY
// header (if the listener takes one), ClientHello, route, then passthrough
// or termination. Whatever happens, it ends with end: one log line and one
// count. A passthrough connection handed to the relay's loops is ended by
// them when it closes, after this goroutine has gone.
//
// pre holds bytes already read from c by the raw path (an incomplete hello),
// read again before c.
func (s *Server) serveConn(c *net.TCPConn, l *listener, ss *session, pre []byte) {
	if !s.route(c, l, ss, pre) {
		s.end(ss)
	}
}

// end is the last step of every connection that was admitted: its log line
// and counts, and the release of its place in the limits and in Shutdown's
// table.
func (s *Server) end(ss *session) {
	s.metrics.active.Dec()
	ss.server.Release()
	s.finish(ss)
	s.admission.release(ss.peer)
	s.untrack(ss)
}

// route is serveConn's path; it reports whether the connection was parked
// in the relay, which will end it.
func (s *Server) route(c *net.TCPConn, l *listener, ss *session, pre []byte) (parked bool) {
	st := s.state.Load()
	lc := l.cfg.Load()

	var in net.Conn = c
	if len(pre) > 0 {
		in = &replayConn{TCPConn: c, pre: pre}
	} else if lc.AcceptProxyProtocol {
		src, dst, rest, err := readInboundProxy(c, lc, st.cfg.Timeouts.ClientHello.D())
		if err != nil {
			ss.outcome = OutcomeUntrustedProxy
			if errors.Is(err, errBadProxyHeader) {
				ss.outcome = OutcomeBadProxyHeader
			}
			relay.CloseSilently(c, false)
			return false
		}
		ss.client, ss.local, in = src, dst, rest
		ss.viaProxy = true
	}

	helloStart := time.Now()
	hello, prefix, err := sni.Read(in, sni.Options{MaxSize: st.cfg.Limits.MaxHelloSize, Timeout: st.cfg.Timeouts.ClientHello.D()})
	if bc, ok := in.(*bufferedConn); ok && err == nil {
		// Bytes the PROXY reader buffered beyond the hello belong to the stream.
		if n := bc.r.Buffered(); n > 0 {
			extra, _ := bc.r.Peek(n)
			prefix = append(prefix, extra...)
		}
	}
	helloWait := time.Since(helloStart).Seconds()
	if rc, ok := in.(*replayConn); ok && err == nil {
		prefix = append(prefix, rc.pre...) // read already, beyond the hello
	}
	if err != nil {
		s.metrics.unrouted.hello.Observe(helloWait)
		ss.outcome, ss.err = helloOutcome(err), err
		relay.CloseSilently(c, false)
		return false
	}
	v := s.lookup(ss, st, hello, helloWait)
	if v == nil {
		relay.CloseSilently(c, st.routes.unmatchedReset)
		return false
	}
	return s.dispatch(ss, st, c, prefix)
}

// dispatch takes a routed connection to its vhost's mode; it reports
// whether the connection was parked in the relay.
func (s *Server) dispatch(ss *session, st *state, c *net.TCPConn, prefix []byte) (parked bool) {
	if ss.vhost.mode == modePassthrough {
		return s.passthrough(ss, st, c, prefix)
	}
	return s.terminate(ss, st, c, prefix)
}

// lookup records what the hello says (and how long it took to come, in
// seconds) and finds its vhost; nil (with the session's outcome set) when
// none serves it.
func (s *Server) lookup(ss *session, st *state, hello *sni.Hello, helloWait float64) *vhost {
	ss.sni, ss.rawSNI = hello.ServerName, hello.RawServerName
	s.metrics.observeHello(hello)
	v := st.routes.lookup(hello.ServerName)
	s.metrics.of(v).hello.Observe(helloWait)
	if v == nil {
		ss.outcome = OutcomeUnknownSNI
		if hello.ServerName == "" {
			ss.outcome = OutcomeNoSNI
		}
		return nil
	}
	ss.vhost = v
	return v
}

// replayConn is a connection whose first bytes were read already (by the
// raw path); Read returns them before reading the socket.
type replayConn struct {
	*net.TCPConn
	pre []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// helloOutcome names the way a ClientHello read failed.
func helloOutcome(err error) Outcome {
	switch {
	case errors.Is(err, sni.ErrNotTLS):
		return OutcomeNotTLS
	case errors.Is(err, sni.ErrTimeout):
		return OutcomeHelloTimeout
	case errors.Is(err, sni.ErrClosed):
		return OutcomeClosedEarly
	case errors.Is(err, sni.ErrTooLarge):
		return OutcomeHelloTooLarge
	default:
		return OutcomeBadHello
	}
}
