package gateway

import "testing"

// TestGuardSourceRate runs the gateway with the guard attached (generic
// XDP on the server's veth end) and limits.rate of 1/h with a burst of 2:
// the client's third connection never completes, its SYN dropped in the
// kernel (drop_source_rate) before edgegate accepts anything, while a
// never_limit source connects as often as it likes; a reload without the
// limit lets the client in again.
func TestGuardSourceRate(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	p := newPKI(t)
	passUp := newTLSUpstream(t, p)
	appUp := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	base := guardYAML(p, "xdp-generic", testPinPath(t), "1m", passUp.address(), appUp.address())
	limited := "limits:\n  rate: {per_source: 1/h, burst: 2, never_limit: [\"2001:2::2\"]}\n" + base
	srv, err := startInNetns(t, n.server, loadYAML(t, limited), nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}

	for i := range 2 {
		if !reaches(n, nsServer4) {
			t.Fatalf("connection %d of a burst of 2 did not complete", i+1)
		}
	}
	dropped := packets(t, srv, "drop_source_rate")
	if reaches(n, nsServer4) {
		t.Fatal("a source over its rate completed a connection")
	}
	waitMetric(t, srv, dropped+1, "edgegate_bpf_packets_total", "verdict", "drop_source_rate")
	// The kernel stopped it: edgegate never accepted the connection, so
	// its own check at accept had nothing to refuse.
	if got := srv.count(":443", "", OutcomeSourceRate); got != 0 {
		t.Fatalf("closed_source_rate counted %v times; want the SYN dropped before accept", got)
	}

	// never_limit: the client's IPv6 address connects, again and again,
	// and is served.
	for i := range 4 {
		if !reaches(n, nsServer6) {
			t.Fatalf("never_limit source: connection %d did not complete", i+1)
		}
	}
	if err := dialPQ(n, nsServer6, p, false); err != nil {
		t.Fatalf("never_limit source: %v", err)
	}
	if v, ok := metric(t, srv, "edgegate_bpf_map_entries", "map", "never_limit"); !ok || v != 1 {
		t.Fatalf("edgegate_bpf_map_entries{map=never_limit} = %v (present %v), want 1", v, ok)
	}

	// Reloaded without limits.rate: the kernel lets the client in again.
	if err := srv.Reload(loadYAML(t, base)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := dialPQ(n, nsServer4, p, false); err != nil {
		t.Fatalf("after a reload without limits.rate: %v", err)
	}
}
