package gateway

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestListenAddressInUse: an address another process listens on is
// refused at start with "address already in use" at the listener's line,
// as nginx and HAProxy refuse it, whether the other process is a plain
// listener or a second gateway; sharing is only with reuse_port (see
// TestReusePortFleet).
func TestListenAddressInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	for _, tc := range []struct {
		name string
		hold func(t *testing.T) string
	}{
		{name: "another process", hold: func(t *testing.T) string { return held.Addr().String() }},
		{name: "another gateway", hold: func(t *testing.T) string {
			startServer(t, yamlf(`
listen: [{address: %q}]
vhosts: [{name: a, hosts: [a.example.test], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`, freeAddr))
			return freeAddr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.hold(t)
			cfg := loadYAML(t, yamlf(`
listen:
  - address: "127.0.0.1:0"
  - address: %q
vhosts: [{name: a, hosts: [a.example.test], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`, addr))
			s, err := NewServer(cfg, testLog())
			if err != nil {
				t.Fatal(err)
			}
			err = s.Start()
			if err == nil {
				s.Close()
				t.Fatal("a second listener on an address in use started")
			}
			want := fmt.Sprintf("%s:3: listen address %q: bind: address already in use", cfg.File, addr)
			if err.Error() != want {
				t.Fatalf("Start: %v\nwant %s", err, want)
			}
			if n := len(s.Addrs()); n != 0 {
				t.Fatalf("%d listeners open after the failed start", n)
			}
		})
	}
}

// TestDeferAccept: a connection that has sent nothing is not accepted (the
// gateway counts and holds nothing for it), and it is served as soon as
// its hello arrives.
func TestDeferAccept(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts: [{name: a, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Nothing to wait for: a connection accepted would be counted active
	// at once; give it a moment to prove it is not.
	time.Sleep(300 * time.Millisecond)
	if n := testutil.ToFloat64(s.metrics.active); n != 0 {
		t.Fatalf("%v connections active before any byte arrived; want 0 (deferred accept)", n)
	}
	if _, err := c.Write(readHello(t, "go-pq.bin")); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 10*time.Second, func() error {
		if n := testutil.ToFloat64(s.metrics.active); n != 1 {
			return fmt.Errorf("%v connections active after the hello, want 1", n)
		}
		return nil
	})
}
