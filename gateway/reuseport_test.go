package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/eventually"
)

// TestReusePortFleet runs two gateways on one fixed port, as two processes
// of a fleet on one host would: both start (reuse_port), the kernel
// spreads new connections over both, and when one shuts down the other
// serves every connection on its own.
func TestReusePortFleet(t *testing.T) {
	up := newEchoUpstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := yamlf(`
listen: [{address: %q, reuse_port: true}]
vhosts:
  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v2}}
`, addr, up.address())
	a, b := startServer(t, cfg), startServer(t, cfg)
	if a.addr(t, addr) != addr || b.addr(t, addr) != addr {
		t.Fatalf("bound %s and %s, want both on %s", a.addr(t, addr), b.addr(t, addr), addr)
	}
	hello := readHello(t, "go-pq.bin")

	// Each connection comes from a new source port, so the kernel's hash
	// spreads them; 200 all landing on one of two sockets would take odds
	// of 2^-199.
	const spread = 200
	for i := range spread {
		if err := passthroughEcho(addr, hello); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	waitTotal(t, []*Server{a, b}, addr, spread)
	onA, onB := a.count(addr, "go", OutcomeProxied), b.count(addr, "go", OutcomeProxied)
	if onA == 0 || onB == 0 {
		t.Fatalf("connections per gateway: A %v, B %v; want both to serve some", onA, onB)
	}
	t.Logf("%d connections: %v on A, %v on B", spread, onA, onB)

	// A leaves the group (nothing in flight); B takes every connection.
	a.Close()
	const after = 50
	for i := range after {
		if err := passthroughEcho(addr, hello); err != nil {
			t.Fatalf("connection %d after A shut down: %v", i, err)
		}
	}
	b.waitCount(t, addr, "go", OutcomeProxied, onB+after)
	if got := a.count(addr, "go", OutcomeProxied); got != onA {
		t.Errorf("A counted %v connections after it shut down, had %v", got, onA)
	}
}

// waitTotal waits until the proxied connections counted over servers add
// up to want (counters move just after the client sees the close).
func waitTotal(t *testing.T, servers []*Server, addr string, want float64) {
	t.Helper()
	eventually.Within(t, 10*time.Second, func() error {
		var sum float64
		for _, s := range servers {
			sum += s.count(addr, "go", OutcomeProxied)
		}
		if sum > want {
			t.Fatalf("the gateways counted %v connections, want %v", sum, want)
		}
		if sum != want {
			return fmt.Errorf("the gateways counted %v connections, want %v", sum, want)
		}
		return nil
	})
}

// TestHandOverListener hands a gateway's listening socket to a second
// gateway, as an upgrade does between processes, while clients keep
// connecting, then shuts the first one down: the socket never closes, so
// no client is refused, reset or dropped, and the second one serves on.
func TestHandOverListener(t *testing.T) {
	up := newEchoUpstream(t)
	cfg := yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v2}}
`, up.address())
	a := startServer(t, cfg)
	addr := a.addr(t, "127.0.0.1:0")
	hello := readHello(t, "go-pq.bin")
	ld := &churn{stop: make(chan struct{})}
	defer func() {
		select {
		case <-ld.stop:
		default:
			close(ld.stop)
		}
		ld.wg.Wait()
	}()
	ld.run(4, func() error { return passthroughEcho(addr, hello) })
	ld.waitOK(t, 100)

	files, err := a.ListenerFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files["127.0.0.1:0"] == nil {
		t.Fatalf("listener files %v, want the one listener", files)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "edgegate.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	c, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewServer(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.SetListenFunc(func(lc config.Listener) (net.Listener, error) {
		f := files[lc.Address]
		defer f.Close()
		return net.FileListener(f)
	})
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if got := b.addr(t, "127.0.0.1:0"); got != addr {
		t.Fatalf("B serves %s, want the handed-over %s", got, addr)
	}
	ld.waitOK(t, 100)
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatalf("A's drain: %v", err)
	}
	ld.waitOK(t, 100)
	close(ld.stop)
	ld.wg.Wait()
	if len(ld.failures) > 0 {
		t.Fatalf("%d of %d connections failed; first: %v", len(ld.failures), ld.ok.Load()+int64(len(ld.failures)), ld.failures[0])
	}
	if b.count("127.0.0.1:0", "go", OutcomeProxied) == 0 {
		t.Error("B counted no connections")
	}
}
