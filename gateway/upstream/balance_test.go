package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
)

// testPool is a pool of servers a, b, c... with weights, by method.
func testPool(balance string, weights ...int) *Pool {
	u := config.Upstream{Balance: balance, ProxyProtocol: "v2"}
	for i, w := range weights {
		u.Servers = append(u.Servers, config.UpstreamServer{Address: fmt.Sprintf("10.0.0.%d:443", i+1), Weight: w})
	}
	return New("test", u)
}

// picks takes n first choices from p for clients from clientOf, releasing
// each connection at once (hold false) or keeping it open (hold true), and
// counts them by server.
func picks(p *Pool, n int, hold bool, clientOf func(int) netip.Addr) map[string]int {
	got := map[string]int{}
	for i := range n {
		w := p.Walk(clientOf(i))
		s := w.Next()
		if s == nil {
			continue
		}
		s.Report(nil)
		if !hold {
			s.Release()
		}
		got[s.Address()]++
	}
	return got
}

func oneClient(int) netip.Addr { return netip.MustParseAddr("192.0.2.1") }

// manyClients are distinct IPv4 and IPv6 addresses.
func manyClients(i int) netip.Addr {
	if i%2 == 0 {
		return netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
	}
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
}

// TestRoundRobinWeights: over whole cycles, each server is chosen exactly
// its weight's share, and a heavy server's turns are spread, not in a run.
func TestRoundRobinWeights(t *testing.T) {
	p := testPool("round_robin", 5, 1, 1)
	var seq []string
	for range 7 {
		w := p.Walk(oneClient(0))
		s := w.Next()
		s.Report(nil)
		s.Release()
		seq = append(seq, s.Address()[7:8])
	}
	// nginx's smooth weighted round robin gives a a b a c a a for 5,1,1.
	if got := fmt.Sprint(seq); got != "[1 1 2 1 3 1 1]" {
		t.Errorf("one cycle of weights 5,1,1 chose %v; want [1 1 2 1 3 1 1] (smooth)", got)
	}
	got := picks(p, 700, false, oneClient)
	want := map[string]int{"10.0.0.1:443": 500, "10.0.0.2:443": 100, "10.0.0.3:443": 100}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("700 connections over weights 5,1,1 went %v; want %v", got, want)
	}
}

// TestLeastConnWeights: with every connection ended at once, least_conn
// shares by weight like round robin; with connections held open, each
// server carries open connections in proportion to its weight.
func TestLeastConnWeights(t *testing.T) {
	got := picks(testPool("least_conn", 3, 1), 400, false, oneClient)
	if got["10.0.0.1:443"] != 300 || got["10.0.0.2:443"] != 100 {
		t.Errorf("idle least_conn over weights 3,1 went %v; want 300/100", got)
	}
	p := testPool("least_conn", 3, 1)
	got = picks(p, 400, true, oneClient)
	if got["10.0.0.1:443"] != 300 || got["10.0.0.2:443"] != 100 {
		t.Errorf("held least_conn over weights 3,1 went %v; want 300/100", got)
	}
	// Free 100 of the first server's connections: the next 100 go there.
	for range 100 {
		p.servers[0].Release()
	}
	got = picks(p, 100, true, oneClient)
	if got["10.0.0.1:443"] != 100 {
		t.Errorf("after 100 of its connections ended, the first server got %v of 100 new ones; want all", got)
	}
}

// TestSourceHash: one client always reaches the same server; many clients
// spread by weight; when a server goes down only its clients move (each to
// its second choice), and they come back when it returns.
func TestSourceHash(t *testing.T) {
	p := testPool("source_hash", 2, 1, 1)
	first := map[netip.Addr]string{}
	const n = 30000
	for i := range n {
		c := manyClients(i)
		for range 3 {
			w := p.Walk(c)
			s := w.Next()
			s.Report(nil)
			s.Release()
			if prev, ok := first[c]; ok && prev != s.Address() {
				t.Fatalf("client %s went to %s, then %s", c, prev, s.Address())
			}
			first[c] = s.Address()
		}
	}
	count := map[string]int{}
	for _, s := range first {
		count[s]++
	}
	// Expected 15000/7500/7500; the bounds are 10 standard deviations.
	for addr, want := range map[string]int{"10.0.0.1:443": n / 2, "10.0.0.2:443": n / 4, "10.0.0.3:443": n / 4} {
		if d := count[addr] - want; d < -900 || d > 900 {
			t.Errorf("source_hash over weights 2,1,1: %s has %d of %d clients; want about %d", addr, count[addr], n, want)
		}
	}

	p.servers[1].up.Store(false)
	moved := 0
	for c, before := range first {
		w := p.Walk(c)
		s := w.Next()
		s.Report(nil)
		s.Release()
		switch {
		case before == "10.0.0.2:443":
			moved++
		case s.Address() != before:
			t.Fatalf("client %s of %s moved to %s when 10.0.0.2 went down", c, before, s.Address())
		}
	}
	if moved != count["10.0.0.2:443"] {
		t.Fatalf("moved %d clients; want the %d of the server that went down", moved, count["10.0.0.2:443"])
	}
	p.servers[1].up.Store(true)
	for c, before := range first {
		w := p.Walk(c)
		if s := w.Next(); s.Address() != before {
			t.Fatalf("client %s went to %s after every server came back; it had %s", c, s.Address(), before)
		}
	}
}

// TestWalk: a failed dial is followed by another server, never the same
// one twice, never more than MaxTries in all, and never a down server; with
// no server up there is nothing to try.
func TestWalk(t *testing.T) {
	for _, balance := range []string{"round_robin", "least_conn", "source_hash"} {
		t.Run(balance, func(t *testing.T) {
			p := testPool(balance, 1, 1, 1, 1, 1)
			p.servers[2].up.Store(false)
			w := p.Walk(oneClient(0))
			seen := map[string]bool{}
			for s := w.Next(); s != nil; s = w.Next() {
				if seen[s.Address()] || s.Address() == "10.0.0.3:443" {
					t.Fatalf("walk gave %s again or down", s.Address())
				}
				seen[s.Address()] = true
				s.Report(errors.New("refused"))
			}
			if len(seen) != MaxTries {
				t.Fatalf("walk tried %d servers; want MaxTries = %d", len(seen), MaxTries)
			}
			for _, s := range p.servers {
				if s.Active() != 0 {
					t.Errorf("%s has %d active after failed dials; want 0", s.Address(), s.Active())
				}
			}
			for _, s := range p.servers {
				s.up.Store(false)
			}
			w = p.Walk(oneClient(0))
			if s := w.Next(); s != nil {
				t.Fatalf("walk with every server down gave %s", s.Address())
			}
		})
	}
}
