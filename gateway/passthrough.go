package gateway

import (
	"net"
)

// passthrough forwards a connection's untouched TLS stream to the vhost's
// upstream: dial, PROXY header, the ClientHello bytes already read, then
// both directions spliced until they end. An upstream that cannot be
// reached costs the client nothing but a silent close.
func (s *Server) passthrough(ss *session, st *state, c *net.TCPConn, prefix []byte) {
	v := ss.vhost
	up, err := dialUpstream(v.upstream, st.cfg.Timeouts.UpstreamDial.D())
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, err
		closeSilently(c, false)
		return
	}
	tlvs := passthroughTLVs(ss.hello.ServerName, ss.uniqueID(v.upstream))
	hdr, err := proxyHeader(v.upstream.ProxyProtocol, ss.client, ss.local, tlvs)
	if err == nil {
		// One write: header and hello reach the upstream in one segment.
		_, err = up.Write(append(hdr, prefix...))
	}
	if err != nil {
		ss.outcome, ss.err = OutcomeUpstreamError, err
		up.Close()
		closeSilently(c, false)
		return
	}
	ss.toUp = int64(len(prefix))
	toUp, toClient, idled := pipe(c, up, st.cfg.Timeouts.Idle.D())
	ss.toUp += toUp
	ss.toClient = toClient
	ss.outcome = OutcomeProxied
	if idled {
		ss.outcome = OutcomeIdleTimeout
	}
}
