package gateway

import (
	"net"

	"github.com/edgegate/edgegate/gateway/proxyheader"
	"github.com/edgegate/edgegate/gateway/relay"
)

// passthrough forwards a connection's untouched TLS stream to the vhost's
// upstream: the PROXY header, the ClientHello bytes already read, then both
// directions spliced until they end. A source outside allow_from is closed
// first, without a byte and without dialling the upstream. It reports
// whether the connection was parked in the relay's loops (see forward).
func (s *Server) passthrough(ss *session, st *state, c *net.TCPConn, prefix []byte) bool {
	hdr, reset, ok := passthroughHeader(ss, nil)
	if !ok {
		relay.CloseSilently(c, reset)
		return false
	}
	return s.forward(ss, st, c, c, hdr, prefix)
}

// passthroughHeader is the step both passthrough paths (this one and the
// accept loop's, passthroughRaw) take once a connection is routed:
// allow_from, checked before any dial, then the PROXY header for the
// upstream, appended to b. When the connection may not go on, it sets the
// session's outcome and reports false, with reset saying how to close the
// client.
func passthroughHeader(ss *session, b []byte) (hdr []byte, reset, ok bool) {
	v := ss.vhost
	if !v.admits(ss.client.Addr()) {
		ss.outcome, ss.reason = OutcomeNotAllowed, "source_not_allowed"
		return nil, v.resetOnReject, false
	}
	hdr, err := proxyheader.AppendPassthrough(b, v.upstream.ProxyProtocol, ss.client, ss.local, ss.sni, ss.uniqueID(v.upstream))
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		return nil, false, false
	}
	return hdr, false, true
}
