package gateway

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
)

// TestSourceRateLimit opens real connections from chosen loopback
// addresses to a gateway with limits.rate of 1/h and a burst of 3, so that
// no bucket refills while the test runs: a source's fourth connection is
// closed at accept with closed_source_rate (counted and logged), other
// sources and a never_limit source are served, and a reload with another
// rate lets the limited source in again.
func TestSourceRateLimit(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	go func() {
		for range up.got {
		}
	}()
	conf := `
listen: [{address: "127.0.0.1:0"}]
limits:
  rate: {per_source: %s, burst: 3, never_limit: [127.0.0.3/32]}
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`
	s, logs := startServerLogged(t, yamlf(conf, "1/h", up.address()))
	addr := s.addr(t, "127.0.0.1:0")
	hello := readHello(t, "go-pq.bin")

	for i := range 3 {
		if !proxied(t, dialFrom(t, "127.0.0.2", addr), hello) {
			t.Fatalf("connection %d of a burst of 3 was not served", i+1)
		}
	}
	expectSilentClose(t, dialFrom(t, "127.0.0.2", addr))
	s.waitCount(t, "127.0.0.1:0", "", OutcomeSourceRate, 1)
	found := false
	for _, rec := range logs.waitConnections(t, 4) {
		if rec["outcome"] == string(OutcomeSourceRate) && rec["client"] != nil {
			found = true
		}
	}
	if !found {
		t.Fatalf("no connection log line with outcome %s: %v", OutcomeSourceRate, logs.connections(t))
	}

	if !proxied(t, dialFrom(t, "127.0.0.4", addr), hello) {
		t.Fatal("another source was not served")
	}
	for i := range 6 {
		if !proxied(t, dialFrom(t, "127.0.0.3", addr), hello) {
			t.Fatalf("never_limit source: connection %d not served", i+1)
		}
	}
	if got := s.count("127.0.0.1:0", "", OutcomeSourceRate); got != 1 {
		t.Fatalf("closed_source_rate counted %v times, want 1", got)
	}

	// A reload with another rate: every source starts afresh.
	cfg, err := config.Parse(s.Config().File, []byte(yamlf(conf, "2/h", up.address())), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if !proxied(t, dialFrom(t, "127.0.0.2", addr), hello) {
		t.Fatal("the limited source was not served after a reload with a new rate")
	}
}

// TestSourceRateTableBounded opens connections from more loopback
// addresses than the rate table holds (made small for the test): the
// table stays at its size, the sources seen last are still limited, and
// the oldest, pushed out, start afresh.
func TestSourceRateTableBounded(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	go func() {
		for range up.got {
		}
	}()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
limits: {rate: {per_source: 1/h, burst: 1}}
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	const size, sources = 16, 48
	s.admission.rate.mu.Lock()
	s.admission.rate.size = size
	s.admission.rate.mu.Unlock()
	addr := s.addr(t, "127.0.0.1:0")
	hello := readHello(t, "go-pq.bin")
	src := func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }
	for i := range sources {
		if !proxied(t, dialFrom(t, src(i), addr), hello) {
			t.Fatalf("first connection from %s was not served", src(i))
		}
		if n := s.admission.rate.sources(); n > size {
			t.Fatalf("rate table holds %d sources, more than its %d", n, size)
		}
	}
	if n := s.admission.rate.sources(); n != size {
		t.Fatalf("rate table holds %d sources after %d, want %d", n, sources, size)
	}
	// The last source is still in the table: over its rate.
	expectSilentClose(t, dialFrom(t, src(sources-1), addr))
	s.waitCount(t, "127.0.0.1:0", "", OutcomeSourceRate, 1)
	// The first was pushed out: it starts afresh.
	if !proxied(t, dialFrom(t, src(0), addr), hello) {
		t.Fatal("a source pushed out of the table was not served")
	}
}

// TestRateSource: IPv4 sources are addresses (v4-mapped or not), IPv6
// sources are /64s.
func TestRateSource(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
	} {
		if got := rateSource(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("rateSource(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// Two addresses of one /64 share a bucket; another /64 has its own.
	var r sourceRate
	lim := &config.RateLimit{PerSource: 1.0 / 3600, Burst: 2}
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"2001:db8:1:2::1", true},
		{"2001:db8:1:2::2", true},
		{"2001:db8:1:2::3", false},
		{"2001:db8:1:3::1", true},
	} {
		if got := r.allow(netip.MustParseAddr(c.addr), lim); got != c.want {
			t.Errorf("allow(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
}
