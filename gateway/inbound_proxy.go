package gateway

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	proxyproto "github.com/pires/go-proxyproto"
)

// bufferedConn is a conn whose first bytes are read through a bufio.Reader
// (after a PROXY header was read from it).
type bufferedConn struct {
	*net.TCPConn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// errUntrustedProxy and errBadProxyHeader are the two ways inbound PROXY
// handling refuses a connection.
var (
	errUntrustedProxy = errors.New("PROXY header expected from a trusted proxy only")
	errBadProxyHeader = errors.New("bad or missing PROXY header")
)

// readInboundProxy reads the PROXY header that a trusted load balancer puts
// before the client's bytes. It returns the client's and the original
// destination's addresses, and a conn to read the rest of the stream from.
func readInboundProxy(c *net.TCPConn, lc *config.Listener, timeout time.Duration) (src, dst netip.AddrPort, rest net.Conn, err error) {
	peer := addrPort(c.RemoteAddr())
	trusted := false
	for _, p := range lc.Trusted {
		if p.Contains(peer.Addr()) {
			trusted = true
			break
		}
	}
	if !trusted {
		return peer, addrPort(c.LocalAddr()), c, errUntrustedProxy
	}
	br := bufio.NewReaderSize(c, 512)
	c.SetReadDeadline(time.Now().Add(timeout))
	h, err := proxyproto.Read(br)
	c.SetReadDeadline(time.Time{})
	rest = &bufferedConn{TCPConn: c, r: br}
	if err != nil {
		return peer, addrPort(c.LocalAddr()), rest, errBadProxyHeader
	}
	if h.Command.IsLocal() {
		// A balancer's health check: it speaks for itself.
		return peer, addrPort(c.LocalAddr()), rest, nil
	}
	s, d := addrPort(h.SourceAddr), addrPort(h.DestinationAddr)
	if !s.IsValid() {
		return peer, addrPort(c.LocalAddr()), rest, errBadProxyHeader
	}
	return s, d, rest, nil
}

// addrPort converts a TCP address to netip form, unmapping v4-in-v6.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
