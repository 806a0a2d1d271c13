package gateway

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// TestInboundProxy puts edgegate behind an L4 balancer: a PROXY header from
// a trusted address is honoured (its client address is forwarded upstream),
// anything else on that listener is closed without a response.
func TestInboundProxy(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, nil)
	s := startServer(t, yamlf(`
listen:
  - address: "127.0.0.1:0"
    accept_proxy_protocol: true
    trusted_proxies: ["127.0.0.0/8"]
  - address: "[::1]:0"
    accept_proxy_protocol: true
    trusted_proxies: ["192.0.2.0/24"]
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	hello := readHello(t, "go-pq.bin")
	client := netip.MustParseAddrPort("203.0.113.7:40000")
	orig := netip.MustParseAddrPort("198.51.100.1:443")

	for _, version := range []byte{1, 2} {
		h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(orig))
		hdr, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		for _, oneByte := range []bool{false, true} {
			c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
			if err != nil {
				t.Fatal(err)
			}
			// The spec has a balancer send its header at once. Header and
			// hello in one segment: the bytes the PROXY reader buffers past
			// its header must still reach the upstream; or the hello in
			// 1-byte segments after it.
			if oneByte {
				c.Write(hdr)
				send(c, hello, true)
			} else {
				c.Write(append(append([]byte{}, hdr...), hello...))
			}
			c.(*net.TCPConn).CloseWrite()
			uc := up.next(t)
			if !bytes.Equal(uc.data, hello) {
				t.Fatalf("v%d: upstream got %d bytes, want the %d-byte hello", version, len(uc.data), len(hello))
			}
			src, dst, _ := uc.header.TCPAddrs()
			if src.AddrPort() != client || dst.AddrPort() != orig {
				t.Fatalf("v%d: forwarded header says %v -> %v; want the balancer's %v -> %v", version, src, dst, client, orig)
			}
			c.Close()
		}
	}
	s.waitCount(t, "127.0.0.1:0", "www", OutcomeProxied, 4)

	t.Run("no header from a trusted proxy", func(t *testing.T) {
		c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello)
		expectSilentClose(t, c)
		s.waitCount(t, "127.0.0.1:0", "", OutcomeBadProxyHeader, 1)
	})
	t.Run("untrusted source", func(t *testing.T) {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(orig))
		hdr, _ := h.Format()
		c, err := net.Dial("tcp", s.addr(t, "[::1]:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(append(hdr, hello...))
		expectSilentClose(t, c)
		s.waitCount(t, "[::1]:0", "", OutcomeUntrustedProxy, 1)
	})
	up.expectNone(t)
}
