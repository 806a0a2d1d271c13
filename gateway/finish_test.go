package gateway

import (
	"crypto/tls"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
)

// TestRefusalLogRateLimit: a flood of refusals writes a burst of lines, then
// a few a second, and the next line written says how many were left out.
func TestRefusalLogRateLimit(t *testing.T) {
	r := rateLimit{perSecond: 10, burst: 50}
	now := time.Unix(1000, 0)
	written := 0
	for range 1000 {
		if ok, _ := r.allow(now); ok {
			written++
		}
	}
	if written != 50 {
		t.Fatalf("%d lines for 1,000 refusals at one instant, want the burst of 50", written)
	}
	// A second later there is room for 10 more; the first says 950 were dropped.
	ok, suppressed := r.allow(now.Add(time.Second))
	if !ok || suppressed != 950 {
		t.Fatalf("after a second: allowed %v, suppressed %d; want true, 950", ok, suppressed)
	}
	for range 9 {
		if ok, _ := r.allow(now.Add(time.Second)); !ok {
			t.Fatal("fewer than 10 lines a second")
		}
	}
	if ok, _ := r.allow(now.Add(time.Second)); ok {
		t.Fatal("more than 10 lines a second")
	}
}

// BenchmarkFinish is the end of a proxied mtls connection's life: its log
// line (JSON, as `edgegate run` writes it, into io.Discard) and its counts.
func BenchmarkFinish(b *testing.B) {
	p := newPKI(b)
	log, err := NewLogger(io.Discard, config.Log{Level: "info", Format: "json"})
	if err != nil {
		b.Fatal(err)
	}
	s := startServerLogging(b, b.TempDir(), mtlsConfig(p, "127.0.0.1:0", "127.0.0.1:1", ""), log)
	ss := &session{start: time.Now(), listener: "127.0.0.1:0", client: netip.MustParseAddrPort("192.0.2.7:51234"),
		local: netip.MustParseAddrPort("127.0.0.1:443"), sni: "app.example.test", vhost: s.state.Load().vhosts["app"],
		outcome: OutcomeProxied, toUp: 5, toClient: 4,
		tls: tlsFacts{version: tls.VersionTLS13, cipher: tls.TLS_AES_128_GCM_SHA256, leaf: p.clients["valid"].Leaf}}
	b.ReportAllocs()
	for b.Loop() {
		s.finish(ss)
	}
}
