package gateway

import (
	"net"

	"github.com/edgegate/edgegate/gateway/proxyheader"
	"github.com/edgegate/edgegate/gateway/relay"
)

// passthrough forwards a connection's untouched TLS stream to the vhost's
// upstream: the PROXY header, the ClientHello bytes already read, then both
// directions spliced until they end. It reports whether the connection was
// parked in the relay's loops (see forward).
func (s *Server) passthrough(ss *session, st *state, c *net.TCPConn, prefix []byte) bool {
	v := ss.vhost
	tlvs := proxyheader.PassthroughTLVs(ss.sni, ss.uniqueID(v.upstream))
	hdr, err := proxyheader.Encode(v.upstream.ProxyProtocol, ss.client, ss.local, tlvs)
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		relay.CloseSilently(c, false)
		return false
	}
	return s.forward(ss, st, c, c, hdr, prefix)
}
