package gateway

import (
	"net"

	"github.com/edgegate/edgegate/gateway/relay"
)

// forward is the tail both modes share once a connection may go upstream:
// dial the vhost's upstream, send the PROXY header and the client's first
// bytes in one write (one segment), then relay both directions until they
// end. client is what the upstream's bytes are relayed with (the TCP
// connection itself, or the TLS connection over it); raw is the socket, for
// closing without a byte. An upstream that cannot be reached costs the
// client nothing but a silent close.
func (s *Server) forward(ss *session, st *state, client net.Conn, raw *net.TCPConn, hdr, first []byte) {
	v := ss.vhost
	up, err := relay.Dial(v.upstream.Address, st.cfg.Timeouts.UpstreamDial.D())
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, err
		relay.CloseSilently(raw, false)
		return
	}
	if out := append(hdr, first...); len(out) > 0 {
		_, err = up.Write(out)
	}
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		up.Close()
		relay.CloseSilently(raw, false)
		return
	}
	r := relay.Pipe(client, up, st.cfg.Timeouts.Idle.D())
	ss.toUp = int64(len(first)) + r.ToUpstream
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
