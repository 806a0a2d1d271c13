package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/edgegate/edgegate/gateway/eventually"
)

// synFrom returns a SYN from src to the guarded test port.
func synFrom(src netip.Addr, port uint16) []byte {
	dst := server4
	if src.Is6() {
		dst = server6
	}
	return flow{src: src, dst: dst, sport: 40100, dport: port, isn: 7}.syn().bytes()
}

func TestBlockUnblock(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}})
	xdp := entryPoints[0]
	for _, a := range []netip.Addr{client4, client6} {
		if err := g.Block(a, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if b, err := g.Blocked(a); err != nil || !b {
			t.Fatalf("Blocked(%s) = %v, %v after Block", a, b, err)
		}
		if v := judge(t, g, xdp, synFrom(a, guarded)); v != "drop_blocked" {
			t.Fatalf("%s: verdict %s, want drop_blocked", a, v)
		}
		if err := g.Unblock(a); err != nil {
			t.Fatal(err)
		}
		if b, _ := g.Blocked(a); b {
			t.Fatalf("%s still blocked after Unblock", a)
		}
		if v := judge(t, g, xdp, synFrom(a, guarded)); v != "pass_syn" {
			t.Fatalf("%s: verdict %s after Unblock, want pass_syn", a, v)
		}
		if err := g.Unblock(a); err != nil {
			t.Fatalf("second Unblock: %v", err)
		}
	}
	// A v4-mapped address is the IPv4 source.
	if err := g.Block(netip.MustParseAddr("::ffff:198.18.0.2"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if v := judge(t, g, xdp, synFrom(client4, guarded)); v != "drop_blocked" {
		t.Fatalf("v4-mapped block: verdict %s, want drop_blocked", v)
	}
	// A block in the past is no block.
	if err := g.Block(client4, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if b, _ := g.Blocked(client4); b {
		t.Fatal("blocked with an expiry in the past")
	}
}

func TestBlockExpires(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}})
	if err := g.Block(client6, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if v := judge(t, g, entryPoints[1], synFrom(client6, guarded)); v != "drop_blocked" {
		t.Fatalf("verdict %s, want drop_blocked", v)
	}
	eventually.Within(t, 10*time.Second, func() error {
		if b, err := g.Blocked(client6); err != nil || b {
			return fmt.Errorf("block did not expire (blocked %v, %v)", b, err)
		}
		return nil
	})
	if v := judge(t, g, entryPoints[1], synFrom(client6, guarded)); v != "pass_syn" {
		t.Fatalf("verdict %s after expiry, want pass_syn", v)
	}
}

func TestBlocklistSurvivesReopen(t *testing.T) {
	needBPF(t)
	pin := testPinPath(t)
	cfg := Config{Ports: []uint16{guarded}, PinPath: pin, FlowTableSize: 1024}
	g1, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := g1.Block(client4, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	f := newFlow(client6, server6, 40200)
	if v := judge(t, g1, entryPoints[0], f.syn().bytes()); v != "pass_syn" {
		t.Fatalf("verdict %s, want pass_syn", v)
	}
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}

	g2, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if b, err := g2.Blocked(client4); err != nil || !b {
		t.Fatalf("block lost across Close+Open: %v, %v", b, err)
	}
	if v := judge(t, g2, entryPoints[0], synFrom(client4, guarded)); v != "drop_blocked" {
		t.Fatalf("verdict %s after reopen, want drop_blocked", v)
	}
	// The flow entry survived too: its next segment is still judged.
	if v := judge(t, g2, entryPoints[0], f.data(0, httpGet).bytes()); v != "drop_not_tls" {
		t.Fatalf("verdict %s for a flow from before the reopen, want drop_not_tls", v)
	}
}

// TestBlockHints checks the hints in front of the blocklist: a source that
// shares a blocked source's hint is looked up and passes, an expired hint
// is put back to 0 by the program, an unblocked source passes under a
// hint still set, and a blocklist pinned without hints (by an older
// edgegate) gets them when the guard opens, so its blocks hold.
func TestBlockHints(t *testing.T) {
	needBPF(t)
	pin := testPinPath(t)
	open := func() *Guard {
		g, err := Open(Config{Ports: []uint16{guarded}, PinPath: pin, FlowTableSize: 1024}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := open()
	defer func() { g.Close() }()
	xdp := entryPoints[0]
	blocked := netip.MustParseAddr("198.19.0.1")
	// Another source with the same hint, and one with another.
	var sharing, other netip.Addr
	for i := 0; !sharing.IsValid() || !other.IsValid(); i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if blockHintIndex(addrKey(a)) == blockHintIndex(addrKey(blocked)) {
			sharing = a
		} else if !other.IsValid() {
			other = a
		}
	}
	hint := func(a netip.Addr) uint64 { return atomic.LoadUint64(g.blockHint(addrKey(a))) }

	if err := g.Block(blocked, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	set := hint(blocked)
	if set == 0 {
		t.Fatal("Block left the hint at 0")
	}
	for src, want := range map[netip.Addr]string{blocked: "drop_blocked", sharing: "pass_syn", other: "pass_syn"} {
		if v := judge(t, g, xdp, synFrom(src, guarded)); v != want {
			t.Fatalf("%s: verdict %s, want %s", src, v, want)
		}
	}
	if hint(blocked) != set || hint(other) != 0 {
		t.Fatalf("hints changed by packets: %#x (was %#x), other %#x", hint(blocked), set, hint(other))
	}

	// Unblocked, under a hint that has not expired: looked up, passes.
	if err := g.Unblock(blocked); err != nil {
		t.Fatal(err)
	}
	if v := judge(t, g, xdp, synFrom(blocked, guarded)); v != "pass_syn" {
		t.Fatalf("unblocked source: verdict %s, want pass_syn", v)
	}
	if hint(blocked) != set {
		t.Fatal("the program reset a hint that had not expired")
	}

	// The hint's time has passed (it is set back as time would have run
	// out): the next packet under it resets it.
	now, err := monotonicNow()
	if err != nil {
		t.Fatal(err)
	}
	atomic.StoreUint64(g.blockHint(addrKey(blocked)), uint64(now-int64(time.Second)))
	if v := judge(t, g, xdp, synFrom(sharing, guarded)); v != "pass_syn" {
		t.Fatalf("source under an expired hint: verdict %s, want pass_syn", v)
	}
	if h := hint(blocked); h != 0 {
		t.Fatalf("expired hint left at %#x, want 0", h)
	}

	// A block without its hint, as an older edgegate pinned it: the next
	// guard to open gives it one.
	if err := g.Block(blocked, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	clear(g.hints)
	if v := judge(t, g, xdp, synFrom(blocked, guarded)); v != "pass_syn" {
		t.Fatalf("block without a hint: verdict %s, want pass_syn (the hint is what the program reads first)", v)
	}
	g.Close()
	g = open()
	if v := judge(t, g, xdp, synFrom(blocked, guarded)); v != "drop_blocked" {
		t.Fatalf("pinned block after reopening: verdict %s, want drop_blocked", v)
	}
}

func TestFlowTableResizeReplacesPin(t *testing.T) {
	needBPF(t)
	pin := testPinPath(t)
	g1, err := Open(Config{PinPath: pin, FlowTableSize: 1024}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := g1.Block(client4, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	g1.Close()
	g2, err := Open(Config{PinPath: pin, FlowTableSize: 2048}, testLogger(t))
	if err != nil {
		t.Fatalf("reopen with another flow table size: %v", err)
	}
	defer g2.Close()
	if got := g2.objs.FlowSlots.MaxEntries(); got != 2048 {
		t.Fatalf("flow table has %d slots, want 2048", got)
	}
	if b, _ := g2.Blocked(client4); !b {
		t.Fatal("blocklist lost when only the flow table changed size")
	}
}

// TestUpdate changes a running guard's settings as a reload does: guarded
// ports, which of them take a PROXY header, the allow-list and fragments
// all follow, what the new settings drop is gone from the maps, and an
// update the kernel refuses leaves every map as it was.
func TestUpdate(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}, AllowOnly: allowed})
	xdp := entryPoints[0]
	if v := judge(t, g, xdp, synFrom(outside4, guarded)); v != "drop_not_allowed" {
		t.Fatalf("verdict %s, want drop_not_allowed", v)
	}
	if v := judge(t, g, xdp, synFrom(client6, guarded)); v != "pass_syn" {
		t.Fatalf("verdict %s, want pass_syn", v)
	}
	proxyHeaderOn := func(port uint16) string {
		f := newFlow(client4, server4, 40300+port%100)
		f.dport = port
		judge(t, g, xdp, f.syn().bytes())
		return judge(t, g, xdp, f.data(0, proxyV2).bytes())
	}

	// A listener added, one switched to accept_proxy_protocol, allow_only
	// dropped.
	if err := g.Update(Settings{Ports: []uint16{notGuarded, proxyPort}, ProxyProtocolPorts: []uint16{proxyPort}}); err != nil {
		t.Fatal(err)
	}
	if v := judge(t, g, xdp, synFrom(outside4, guarded)); v != "pass_not_guarded" {
		t.Fatalf("verdict %s after unguarding, want pass_not_guarded", v)
	}
	if v := judge(t, g, xdp, synFrom(outside6, notGuarded)); v != "pass_syn" {
		t.Fatalf("verdict %s on the newly guarded port without allow_only, want pass_syn", v)
	}
	if v := proxyHeaderOn(proxyPort); v != "pass_proxy_port" {
		t.Fatalf("PROXY header on a port switched to accept it: %s, want pass_proxy_port", v)
	}
	if n := mapLen(t, g.objs.Allow); n != 0 {
		t.Fatalf("allow-list holds %d prefixes after allow_only was dropped, want 0", n)
	}

	// Switched back off: the exemption goes, the allow-list comes back.
	if err := g.Update(Settings{Ports: []uint16{proxyPort}, AllowOnly: allowed, DropFragments: true}); err != nil {
		t.Fatal(err)
	}
	if v := proxyHeaderOn(proxyPort); v != "drop_not_tls" {
		t.Fatalf("PROXY header on a port switched back to TLS only: %s, want drop_not_tls", v)
	}
	if v := judge(t, g, xdp, synFrom(outside6, proxyPort)); v != "drop_not_allowed" {
		t.Fatalf("verdict %s with allow_only back, want drop_not_allowed", v)
	}
	var cfg guardGuardConfig
	if err := g.objs.Config.Get(&cfg); err != nil || cfg.Flags&configDropFragments == 0 {
		t.Fatalf("config %+v, %v: want drop fragments set", cfg, err)
	}
	if n := guardedPorts(t, g); n != 1 {
		t.Fatalf("port map guards %d ports, want 1", n)
	}

	// More allow-list prefixes than the map holds: refused, and nothing
	// changed.
	var many []netip.Prefix
	for i := range 20000 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	if err := g.Update(Settings{Ports: []uint16{guarded, notGuarded}, AllowOnly: many}); err == nil {
		t.Fatal("an update over the allow-list's capacity was accepted")
	}
	if n := guardedPorts(t, g); n != 1 {
		t.Fatalf("after a refused update the port map guards %d ports, want the 1 from before", n)
	}
	if n := mapLen(t, g.objs.Allow); n != len(allowed) {
		t.Fatalf("after a refused update the allow-list holds %d prefixes, want %d", n, len(allowed))
	}
	if v := judge(t, g, xdp, synFrom(outside6, proxyPort)); v != "drop_not_allowed" {
		t.Fatalf("verdict %s after a refused update, want drop_not_allowed as before", v)
	}
}

// guardedPorts counts the ports the ports map guards.
func guardedPorts(t *testing.T, g *Guard) int {
	t.Helper()
	keys := make([]uint32, g.objs.Ports.MaxEntries())
	vals := make([]guardPortPolicy, len(keys))
	var cursor ebpf.MapBatchCursor
	got, err := g.objs.Ports.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vals[:got] {
		if v.Flags&portGuarded != 0 {
			n++
		}
	}
	return n
}

// mapLen counts a map's entries.
func mapLen(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	n := 0
	it := m.Iterate()
	var k, v []byte
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOffendersBlockInKernel(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}})
	o := NewOffenders(3, time.Minute, time.Hour, nil, 64, g.Block)
	for range 2 {
		o.Offence(client6)
	}
	if v := judge(t, g, entryPoints[0], synFrom(client6, guarded)); v != "pass_syn" {
		t.Fatalf("verdict %s before the threshold, want pass_syn", v)
	}
	if !o.Offence(client6) {
		t.Fatal("third offence did not block")
	}
	if v := judge(t, g, entryPoints[0], synFrom(client6, guarded)); v != "drop_blocked" {
		t.Fatalf("verdict %s after the threshold, want drop_blocked", v)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Config{Mode: "xdp-fast"}, nil); err == nil || !strings.Contains(err.Error(), "xdp-fast") {
		t.Fatalf("unknown mode: %v", err)
	}
	needBPF(t)
	_, err := Open(Config{Interfaces: []string{"edgegate-none0"}, PinPath: testPinPath(t)}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "edgegate-none0") {
		t.Fatalf("missing interface: %v", err)
	}
}

func TestProxyProtocolPorts(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded, proxyPort}, ProxyProtocolPorts: []uint16{proxyPort}})
	xdp := entryPoints[0]
	f := newFlow(client4, server4, 40300)
	f.dport = proxyPort
	if v := judge(t, g, xdp, f.data(0, proxyV2).bytes()); v != "pass_proxy_port" {
		t.Fatalf("PROXY header on a proxy-protocol port: %s, want pass_proxy_port", v)
	}
	f.dport = guarded
	judge(t, g, xdp, f.syn().bytes())
	if v := judge(t, g, xdp, f.data(0, proxyV2).bytes()); v != "drop_not_tls" {
		t.Fatalf("PROXY header on a plain TLS port: %s, want drop_not_tls", v)
	}
}
