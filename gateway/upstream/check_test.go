package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/eventually"
)

// listenAt listens on addr ("127.0.0.1:0" for any port) and hands each
// connection's first bytes (what it sent before closing) to got.
func listenAt(t *testing.T, addr string, got chan<- []byte) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c)
				if got != nil {
					got <- b
				}
			}()
		}
	}()
	return ln
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func checkedUpstream(hc config.HealthCheck, addrs ...string) config.Upstream {
	u := config.Upstream{Balance: "round_robin", ProxyProtocol: "v2", HealthCheck: &hc}
	for _, a := range addrs {
		u.Servers = append(u.Servers, config.UpstreamServer{Address: a, Weight: 1})
	}
	return u
}

var fastCheck = config.HealthCheck{
	Interval: config.Duration(20 * time.Millisecond), Timeout: config.Duration(20 * time.Millisecond), Fall: 2, Rise: 2,
}

func waitUp(t *testing.T, s *Server, up bool) {
	t.Helper()
	eventually.Within(t, 10*time.Second, func() error {
		if s.Up() != up {
			return fmt.Errorf("%s up = %t, want %t", s.Address(), s.Up(), up)
		}
		return nil
	})
}

// TestActiveCheck: a server that stops listening is marked down by the
// checks (metric 0, no longer chosen) and up again when it listens again.
func TestActiveCheck(t *testing.T) {
	alive := listenAt(t, "127.0.0.1:0", nil)
	flaky := listenAt(t, "127.0.0.1:0", nil)
	flakyAddr := flaky.Addr().String()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	set := NewSet(nil)
	p := set.Add("app", checkedUpstream(fastCheck, alive.Addr().String(), flakyAddr))
	set.Start(nil, m, nil)
	t.Cleanup(set.Close)

	flaky.Close()
	waitUp(t, p.servers[1], false)
	if got := testutil.ToFloat64(m.up.WithLabelValues("app", flakyAddr)); got != 0 {
		t.Errorf("edgegate_upstream_server_up{server=%s} = %v while down; want 0", flakyAddr, got)
	}
	if got := testutil.ToFloat64(m.checkFailures.WithLabelValues("app", flakyAddr)); got < 2 {
		t.Errorf("check failures = %v; want at least fall = 2", got)
	}
	for range 10 {
		c, s, err := p.Dial(netip.MustParseAddr("192.0.2.1"), time.Second, tcpDial)
		if err != nil || s != p.servers[0] {
			t.Fatalf("dial with one server down went to %v (%v); want the one up", s, err)
		}
		c.Close()
		s.Release()
	}
	if got := testutil.ToFloat64(m.dialFailures.WithLabelValues("app", flakyAddr)); got != 0 {
		t.Errorf("%v dials went to the server marked down", got)
	}

	listenAt(t, flakyAddr, nil)
	waitUp(t, p.servers[1], true)
	if got := testutil.ToFloat64(m.up.WithLabelValues("app", flakyAddr)); got != 1 {
		t.Errorf("edgegate_upstream_server_up = %v after it came back; want 1", got)
	}
}

func tcpDial(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

// TestPassiveCheck: failed dials of client connections count toward fall
// (with checks far apart, so the dials alone bring the server down), each
// failed dial moves on to the next server, and the connection succeeds.
func TestPassiveCheck(t *testing.T) {
	alive := listenAt(t, "127.0.0.1:0", nil)
	dead := deadAddr(t)
	hc := config.HealthCheck{Interval: config.Duration(time.Hour), Timeout: config.Duration(time.Second), Fall: 3, Rise: 1}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	set := NewSet(nil)
	// The first check runs at start; it fails once, the dials do the rest.
	p := set.Add("app", checkedUpstream(hc, dead, alive.Addr().String()))
	set.Start(nil, m, nil)
	t.Cleanup(set.Close)
	eventually.Within(t, 10*time.Second, func() error {
		if n := testutil.ToFloat64(m.checkFailures.WithLabelValues("app", dead)); n != 1 {
			return fmt.Errorf("first check failures %v", n)
		}
		return nil
	})
	for i := range 4 {
		c, s, err := p.Dial(netip.MustParseAddr("192.0.2.1"), time.Second, tcpDial)
		if err != nil || s.Address() != alive.Addr().String() {
			t.Fatalf("dial %d: %v, %v; want the live server", i, s, err)
		}
		c.Close()
		s.Release()
	}
	if p.servers[0].Up() {
		t.Fatal("dead server still up after a failed check and two failed dials (fall 3)")
	}
	// Round robin: dials 1 and 3 tried the dead server first, then it was down.
	if got := testutil.ToFloat64(m.dialFailures.WithLabelValues("app", dead)); got != 2 {
		t.Errorf("dial failures = %v; want 2", got)
	}
	if got := testutil.ToFloat64(m.connections.WithLabelValues("app", alive.Addr().String())); got != 4 {
		t.Errorf("connections to the live server = %v; want 4", got)
	}
	if got := testutil.ToFloat64(m.active.WithLabelValues("app", alive.Addr().String())); got != 0 {
		t.Errorf("active connections = %v after all were released; want 0", got)
	}
}

// TestNoServerUp: with every server down Dial fails with ErrNoServer
// without dialling.
func TestNoServerUp(t *testing.T) {
	set := NewSet(nil)
	p := set.Add("app", checkedUpstream(fastCheck, deadAddr(t), deadAddr(t)))
	set.Start(nil, nil, nil)
	t.Cleanup(set.Close)
	waitUp(t, p.servers[0], false)
	waitUp(t, p.servers[1], false)
	dialled := 0
	_, _, err := p.Dial(netip.MustParseAddr("192.0.2.1"), time.Second, func(a string, d time.Duration) (net.Conn, error) {
		dialled++
		return tcpDial(a, d)
	})
	if !errors.Is(err, ErrNoServer) || dialled != 0 {
		t.Fatalf("Dial with no server up: %v after %d dials; want ErrNoServer and none", err, dialled)
	}
}

// TestCheckSendProxy: with send_proxy each check sends a PROXY header that
// announces no client (v2 LOCAL, v1 UNKNOWN) and nothing else.
func TestCheckSendProxy(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    []byte
	}{{"v2", localHeaderV2}, {"v1", []byte("PROXY UNKNOWN\r\n")}, {"", nil}} {
		t.Run("proxy "+tc.version, func(t *testing.T) {
			got := make(chan []byte, 16)
			ln := listenAt(t, "127.0.0.1:0", got)
			hc := fastCheck
			hc.SendProxy = tc.version != ""
			u := checkedUpstream(hc, ln.Addr().String())
			u.ProxyProtocol = tc.version
			set := NewSet(nil)
			set.Add("app", u)
			set.Start(nil, nil, nil)
			defer set.Close()
			select {
			case b := <-got:
				if !bytes.Equal(b, tc.want) {
					t.Fatalf("check sent %q; want %q", b, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no check arrived")
			}
		})
	}
}

// checkers counts the health checker goroutines running.
func checkers() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "upstream.(*Pool).checkLoop(")
}

// waitCheckers waits until base+want checkers run: a goroutine just
// started may not show in a stack dump yet, and one that has signalled its
// end may still show for a moment. A checker that leaks stays, and fails
// the wait.
func waitCheckers(t *testing.T, base, want int) {
	t.Helper()
	eventually.Within(t, 10*time.Second, func() error {
		if n := checkers() - base; n != want {
			return fmt.Errorf("%d checkers run; want %d", n, want)
		}
		return nil
	})
}

// TestSetReload: a generation whose vhost keeps its servers keeps its pool
// (and what it knows: a server down stays down); a changed vhost gets a new
// pool; the replaced pools' checkers stop, and series of servers that left
// are removed.
func TestSetReload(t *testing.T) {
	// Earlier tests closed their sets, but a checker that has signalled its
	// end may still show in a stack dump for a moment: wait for none.
	const base = 0
	waitCheckers(t, base, 0)
	a := listenAt(t, "127.0.0.1:0", nil).Addr().String()
	b := listenAt(t, "127.0.0.1:0", nil).Addr().String()
	dead := deadAddr(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)

	gen1 := NewSet(nil)
	keep := gen1.Add("keep", checkedUpstream(fastCheck, a, dead))
	change := gen1.Add("change", checkedUpstream(fastCheck, a, b))
	gen1.Start(nil, m, nil)
	waitUp(t, keep.servers[1], false)
	waitCheckers(t, base, 4)

	gen2 := NewSet(gen1)
	keep2 := gen2.Add("keep", checkedUpstream(fastCheck, a, dead))
	change2 := gen2.Add("change", checkedUpstream(fastCheck, a))
	if keep2 != keep || change2 == change {
		t.Fatalf("kept pool reused: %t (want true); changed pool reused: %t (want false)", keep2 == keep, change2 == change)
	}
	if keep2.servers[1].Up() {
		t.Fatal("the kept pool forgot that its server is down")
	}
	gen2.Start(gen1, m, nil)
	waitCheckers(t, base, 3) // the old pool's two stopped in Start
	if n := testutil.CollectAndCount(m.up, "edgegate_upstream_server_up"); n != 3 {
		t.Errorf("%d up series after the reload; want 3 (change/%s removed)", n, b)
	}
	gen2.Close()
	waitCheckers(t, base, 0)
}
