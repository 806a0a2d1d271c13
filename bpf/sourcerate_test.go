package bpf

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// hourly is a rate slow enough that no bucket refills while a test runs:
// whether a SYN passes depends on the SYNs before it, not on the clock.
const hourly = 1.0 / 3600

// monotonicNs is the clock of bpf_ktime_get_coarse_ns, read from
// userspace at full resolution.
func monotonicNs(t testing.TB) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// rateKey is a source's key in the rate table: the v4-mapped address, or
// an IPv6 address's /64.
func rateKey(a netip.Addr) guardAddrKey {
	b := a.As16()
	if a.Is6() && !a.Is4In6() {
		clear(b[8:])
	}
	return guardAddrKey{Addr: b}
}

// TestSourceRate runs SYNs through both entry points with a limit of
// three SYNs per source (and no refill during the test): the fourth from a
// source is dropped as drop_source_rate, IPv6 sources share a bucket per
// /64, never_limit sources and segments other than SYNs are not limited,
// and a limit turned off or changed by Update lets the limited source in
// again.
func TestSourceRate(t *testing.T) {
	exempt4 := netip.MustParseAddr("198.18.0.9")
	g := openTestGuard(t, Config{Ports: []uint16{guarded}, SourceRate: SourceRate{
		PerSecond: hourly, Burst: 3, NeverLimit: []netip.Prefix{netip.PrefixFrom(exempt4, 32), netip.MustParsePrefix("2001:2:0:9::/64")},
	}})
	sameNet6 := netip.MustParseAddr("2001:2::99")     // client6's /64
	otherNet6 := netip.MustParseAddr("2001:2:0:1::2") // another /64
	exempt6 := netip.MustParseAddr("2001:2:0:9::5")
	for _, ep := range entryPoints {
		t.Run(ep.name, func(t *testing.T) {
			if err := g.clearSourceRate(); err != nil {
				t.Fatal(err)
			}
			expect := func(src netip.Addr, sport uint16, want string) {
				t.Helper()
				dst := server4
				if src.Is6() {
					dst = server6
				}
				f := flow{src: src, dst: dst, sport: sport, dport: guarded, isn: 7}
				if v := judge(t, g, ep, f.syn().bytes()); v != want {
					t.Fatalf("SYN from %s: %s, want %s", src, v, want)
				}
			}
			for i := range 3 {
				expect(client4, uint16(41000+i), "pass_syn")
			}
			expect(client4, 41003, "drop_source_rate")
			expect(client4, 41004, "drop_source_rate")
			// Only SYNs are charged and dropped: the rest of a stream the
			// limit let through goes on.
			f := newFlow(client4, server4, 41000)
			if v := judge(t, g, ep, f.ack().bytes()); v == "drop_source_rate" {
				t.Fatalf("an ACK from a limited source: %s", v)
			}
			// A SYN with data (TFO) is a SYN.
			if v := judge(t, g, ep, newFlow(client4, server4, 41005).synData([]byte{0x16}).bytes()); v != "drop_source_rate" {
				t.Fatalf("a TFO SYN from a limited source: %s, want drop_source_rate", v)
			}
			// IPv6: the /64 is the source.
			expect(client6, 41010, "pass_syn")
			expect(sameNet6, 41011, "pass_syn")
			expect(client6, 41012, "pass_syn")
			expect(sameNet6, 41013, "drop_source_rate")
			expect(otherNet6, 41014, "pass_syn")
			// never_limit.
			for i := range 10 {
				expect(exempt4, uint16(41020+i), "pass_syn")
				expect(exempt6, uint16(41040+i), "pass_syn")
			}
			var tat uint64
			if err := g.objs.SourceRate.Lookup(rateKey(exempt4), &tat); err == nil {
				t.Fatal("a never_limit source has a bucket")
			}
			if err := g.objs.SourceRate.Lookup(rateKey(client6), &tat); err != nil {
				t.Fatalf("client6's /64 has no bucket: %v", err)
			}
		})
	}

	// The bucket is a time: move the limited source's back to now, as an
	// hour passing would, and it has one SYN again (burst 3, and the
	// clock past the bucket gives a whole burst back).
	xdp := entryPoints[0]
	// The kernel reads the coarse clock, which lags by up to a tick
	// (CONFIG_HZ=100: 10ms): a tick back is now or earlier for it.
	tick := uint64(10 * time.Millisecond)
	if err := g.objs.SourceRate.Put(rateKey(client4), monotonicNs(t)-tick); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if v := judge(t, g, xdp, synFrom(client4, guarded)); v != "pass_syn" {
			t.Fatalf("SYN %d after the bucket emptied: %s, want pass_syn", i, v)
		}
	}
	if v := judge(t, g, xdp, synFrom(client4, guarded)); v != "drop_source_rate" {
		t.Fatalf("fourth SYN after the bucket emptied: %s, want drop_source_rate", v)
	}
	// The kernel's bucket advanced by one interval per SYN it let through.
	before := monotonicNs(t)
	if err := g.objs.SourceRate.Delete(rateKey(client4)); err != nil {
		t.Fatal(err)
	}
	judge(t, g, xdp, synFrom(client4, guarded))
	after := monotonicNs(t)
	var tat uint64
	if err := g.objs.SourceRate.Lookup(rateKey(client4), &tat); err != nil {
		t.Fatal(err)
	}
	interval := uint64(3600 * time.Second)
	if tat < before+interval-tick || tat > after+interval {
		t.Fatalf("bucket after one SYN at [%d, %d]: %d, want now + %d", before, after, tat, interval)
	}

	// Off: every source passes, whatever its bucket.
	if err := g.Update(Settings{Ports: []uint16{guarded}}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if v := judge(t, g, xdp, synFrom(client4, guarded)); v != "pass_syn" {
			t.Fatalf("rate limit off: %s, want pass_syn", v)
		}
	}
	// On again with another rate: sources start afresh, and the exemptions
	// are the new settings'.
	if err := g.Update(Settings{Ports: []uint16{guarded}, SourceRate: SourceRate{PerSecond: hourly, Burst: 1}}); err != nil {
		t.Fatal(err)
	}
	if n, err := g.SourceRateEntries(); err != nil || n != 0 {
		t.Fatalf("rate table after a new rate: %d entries (%v), want 0", n, err)
	}
	for _, want := range []string{"pass_syn", "drop_source_rate"} {
		if v := judge(t, g, xdp, synFrom(client4, guarded)); v != want {
			t.Fatalf("burst 1: %s, want %s", v, want)
		}
	}
	for _, want := range []string{"pass_syn", "drop_source_rate"} {
		if v := judge(t, g, xdp, synFrom(exempt4, guarded)); v != want {
			t.Fatalf("former never_limit source, burst 1: %s, want %s", v, want)
		}
	}
	var ex uint8
	if err := g.objs.NeverLimit.Lookup(lpmKey(netip.PrefixFrom(exempt4, 32)), &ex); err == nil {
		t.Fatal("an exemption the settings dropped is still in the kernel")
	}
}

// TestSourceRateTableBounded floods the guard with SYNs from more random
// sources than the rate table holds: the table stays at its fixed size
// (an LRU: the oldest sources make room) and still takes in new sources,
// which are limited as before.
func TestSourceRateTableBounded(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}, SourceRate: SourceRate{PerSecond: hourly, Burst: 1}})
	size := int(g.objs.SourceRate.MaxEntries())
	if size != SourceRateTableSize {
		t.Fatalf("rate table holds %d sources, SourceRateTableSize says %d", size, SourceRateTableSize)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	prog := g.objs.GuardXdp
	flood := size + size/4
	for i := range flood {
		var src netip.Addr
		if i%2 == 0 {
			src = netip.AddrFrom4([4]byte{byte(rng.IntN(223) + 1), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		} else {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for j := 2; j < 8; j++ {
				b[j] = byte(rng.Uint32())
			}
			src = netip.AddrFrom16(b)
		}
		ret, err := prog.Run(&ebpf.RunOptions{Data: synFrom(src, guarded)})
		if err != nil {
			t.Fatal(err)
		}
		if ret != xdpPass {
			t.Fatalf("SYN %d from the new source %s: returned %d, want pass", i, src, ret)
		}
	}
	n, err := g.SourceRateEntries()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sources in a table of %d after %d random ones", n, size, flood)
	// The kernel's LRU evicts in batches per CPU, so a full table can
	// hold somewhat fewer than max_entries.
	if n > size || n < size/2 {
		t.Fatalf("%d sources in the rate table after %d random ones; want at most (and near) %d", n, flood, size)
	}
	counters, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if counters["pass_syn"] != uint64(flood) || counters["drop_source_rate"] != 0 {
		t.Fatalf("flood of new sources: %v, want %d pass_syn and no drop_source_rate", counters, flood)
	}
	// A full table still tracks a new source.
	for _, want := range []string{"pass_syn", "drop_source_rate"} {
		if v := judge(t, g, entryPoints[0], synFrom(client4, guarded)); v != want {
			t.Fatalf("a new source after the flood: %s, want %s", v, want)
		}
	}
}
