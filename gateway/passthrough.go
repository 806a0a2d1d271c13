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
	v := ss.vhost
	if !v.admits(ss.client.Addr()) {
		ss.outcome, ss.reason = OutcomeNotAllowed, "source_not_allowed"
		relay.CloseSilently(c, v.resetOnReject)
		return false
	}
	tlvs := proxyheader.PassthroughTLVs(ss.sni, ss.uniqueID(v.upstream))
	hdr, err := proxyheader.Encode(v.upstream.ProxyProtocol, ss.client, ss.local, tlvs)
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		relay.CloseSilently(c, false)
		return false
	}
	return s.forward(ss, st, c, c, hdr, prefix)
}
