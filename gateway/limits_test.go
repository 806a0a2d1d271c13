package gateway

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// dialFrom connects to addr from a chosen loopback source address.
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	return c
}

// proxied sends a hello that reaches the upstream and reads the reply,
// returning whether the connection was served.
func proxied(t testing.TB, c net.Conn, hello []byte) bool {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(hello); err != nil {
		return false
	}
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	return string(b) == "ok"
}

// TestPerSourceLimit holds per_source connections open from one address:
// the next from it is closed at once, other addresses and never_limit ones
// are served, and the held connections are unaffected.
func TestPerSourceLimit(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	go func() {
		for range up.got {
		}
	}()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {client_hello: 30s}
limits: {per_source: 3, max_connections: 8, never_limit: [127.0.0.3/32]}
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	addr := s.addr(t, "127.0.0.1:0")
	hello := readHello(t, "go-pq.bin")

	var held []net.Conn
	for range 3 {
		c := dialFrom(t, "127.0.0.2", addr)
		c.Write(hello[:10]) // a partial hello: the connection stays open
		held = append(held, c)
	}
	waitActive(t, s, 3)
	extra := dialFrom(t, "127.0.0.2", addr)
	expectSilentClose(t, extra)
	s.waitCount(t, "127.0.0.1:0", "", OutcomeSourceLimit, 1)

	if !proxied(t, dialFrom(t, "127.0.0.1", addr), hello) {
		t.Fatal("another source was not served")
	}
	// never_limit: 127.0.0.3 may exceed per_source (up to max_connections).
	var exempt []net.Conn
	for range 4 {
		c := dialFrom(t, "127.0.0.3", addr)
		c.Write(hello[:10])
		exempt = append(exempt, c)
	}
	waitActive(t, s, 7)
	if got := s.count("127.0.0.1:0", "", OutcomeSourceLimit); got != 1 {
		t.Fatalf("never_limit source was limited: %v", got)
	}
	// 7 open; one more fits, the ninth is over max_connections.
	c8 := dialFrom(t, "127.0.0.4", addr)
	c8.Write(hello[:10])
	waitActive(t, s, 8)
	expectSilentClose(t, dialFrom(t, "127.0.0.5", addr))
	s.waitCount(t, "127.0.0.1:0", "", OutcomeLimit, 1)

	// The held connections still work: finish one hello and it is proxied.
	held[0].Write(hello[10:])
	held[0].(*net.TCPConn).CloseWrite()
	held[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if b, _ := io.ReadAll(held[0]); string(b) != "ok" {
		t.Fatalf("held connection: got %q", b)
	}
	for _, c := range append(append(held, exempt...), c8) {
		c.Close()
	}
	waitActive(t, s, 0)
	if !proxied(t, dialFrom(t, "127.0.0.2", addr), hello) {
		t.Fatal("source still limited after its connections closed")
	}
}

// waitActive waits until edgegate_connections_active reads n.
func waitActive(t testing.TB, s *Server, n int) {
	t.Helper()
	eventually.Within(t, 15*time.Second, func() error {
		s.admission.mu.Lock()
		got := s.admission.total
		s.admission.mu.Unlock()
		if got != n {
			return fmt.Errorf("%d connections admitted, want %d", got, n)
		}
		return nil
	})
}

// TestSlowLorisFlood holds 2,000 connections that trickle a partial hello
// while legitimate clients connect: every legitimate client is served during
// the flood, and the flood is cut at the ClientHello deadline.
func TestSlowLorisFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test skipped in -short mode")
	}
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	go func() {
		for range up.got {
		}
	}()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {client_hello: 3s}
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	addr := s.addr(t, "127.0.0.1:0")
	hello := readHello(t, "go-pq.bin")
	const loris = 2000
	var wg sync.WaitGroup
	conns := make([]net.Conn, 0, loris)
	for range loris {
		c := dialFrom(t, "127.0.0.9", addr)
		c.Write(hello[:1])
		conns = append(conns, c)
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			// One more byte a second until the gateway gives up on us:
			// the pace is the attack, not a wait for anything.
			for i := 1; i < len(hello); i++ {
				time.Sleep(time.Second)
				if _, err := c.Write(hello[i : i+1]); err != nil {
					return
				}
			}
		}()
	}
	served := 0
	for range 50 {
		if proxied(t, dialFrom(t, "127.0.0.1", addr), hello) {
			served++
		}
	}
	if served != 50 {
		t.Fatalf("%d of 50 legitimate clients served during the flood", served)
	}
	wg.Wait()
	s.waitCount(t, "127.0.0.1:0", "", OutcomeHelloTimeout, loris)
}
