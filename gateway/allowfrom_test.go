package gateway

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestPassthroughAllowFrom: on a passthrough vhost, a source outside
// allow_from is closed right after its ClientHello with no byte sent, no
// upstream connection made and the outcome closed_not_allowed, as on mtls
// vhosts; a source inside is proxied; on_reject: reset ends the refusal
// with a RST; a vhost without allow_from takes anyone.
func TestPassthroughAllowFrom(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - {name: guarded, hosts: [go.example.test], mode: passthrough, upstream: {address: %[1]q},
     allow_from: [127.0.0.2, 192.0.2.0/24]}
  - {name: reset, hosts: [openssl13.example.test], mode: passthrough, upstream: {address: %[1]q},
     allow_from: [127.0.0.2], on_reject: reset}
  - {name: open, hosts: [openssl12.example.test], mode: passthrough, upstream: {address: %[1]q}}
`, up.address()))
	addr := s.addr(t, "127.0.0.1:0")
	const listener = "127.0.0.1:0"

	t.Run("refused", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.3", addr)
		defer c.Close()
		if err := send(c, readHello(t, "go-pq.bin"), false); err != nil {
			t.Fatal(err)
		}
		expectSilentClose(t, c)
		s.waitCount(t, listener, "guarded", OutcomeNotAllowed, 1)
		up.expectNone(t)
	})
	t.Run("allowed", func(t *testing.T) {
		if !proxied(t, dialFrom(t, "127.0.0.2", addr), readHello(t, "go-pq.bin")) {
			t.Fatal("a source inside allow_from was not proxied")
		}
		uc := up.next(t)
		if uc.err != nil {
			t.Fatal(uc.err)
		}
		if src, _ := netip.ParseAddrPort(uc.header.SourceAddr.String()); src.Addr() != netip.MustParseAddr("127.0.0.2") {
			t.Fatalf("upstream got source %v, want 127.0.0.2", uc.header.SourceAddr)
		}
		s.waitCount(t, listener, "guarded", OutcomeProxied, 1)
	})
	t.Run("reset", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.3", addr)
		defer c.Close()
		if err := send(c, readHello(t, "openssl-tls13-sni.bin"), false); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 10)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read = %d, %v; want a connection reset", n, err)
		}
		s.waitCount(t, listener, "reset", OutcomeNotAllowed, 1)
		up.expectNone(t)
	})
	t.Run("no allow_from", func(t *testing.T) {
		if !proxied(t, dialFrom(t, "127.0.0.3", addr), readHello(t, "openssl-tls12-sni.bin")) {
			t.Fatal("a vhost without allow_from refused a source")
		}
		up.next(t)
		s.waitCount(t, listener, "open", OutcomeProxied, 1)
	})
}
