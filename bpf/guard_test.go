package bpf

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/edgegate/edgegate/bpf/netnstest"
)

// needBPF skips or fails the test without root or BPF (netnstest.NeedBPF).
func needBPF(t testing.TB) { t.Helper(); netnstest.NeedBPF(t) }

// testPinPath returns a fresh pin directory on bpffs, removed at cleanup.
func testPinPath(t testing.TB) string {
	t.Helper()
	if err := ensureBPFFS(filepath.Join(bpffsRoot, "edgegate-test")); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Join(bpffsRoot, "edgegate-test"), strings.ReplaceAll(t.Name(), "/", "_"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// openTestGuard loads the guard without attaching it.
func openTestGuard(t testing.TB, cfg Config) *Guard {
	t.Helper()
	needBPF(t)
	if cfg.PinPath == "" {
		cfg.PinPath = testPinPath(t)
	}
	if cfg.FlowTableSize == 0 {
		cfg.FlowTableSize = 1024
	}
	g, err := Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// clientHello returns the first flight of a crypto/tls client with Go's
// default (post-quantum) key shares: a real ClientHello of well over 1 KiB.
func clientHello(t testing.TB) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: "example.com"})
		tc.Handshake()
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<16)
	n, err := s.Read(buf)
	if err != nil {
		t.Fatalf("read ClientHello: %v", err)
	}
	if n < 1000 || buf[0] != 0x16 {
		t.Fatalf("unexpected ClientHello (%d bytes, first %#x)", n, buf[0])
	}
	return buf[:n]
}

// Return codes of the two entry points.
const (
	xdpDrop = 1
	xdpPass = 2
	tcxNext = 0xffffffff // TCX_NEXT (-1): pass, let later programs run
	tcxDrop = 2
)

// runProgram is one entry point under test.
type runProgram struct {
	name       string
	prog       func(g *Guard) *ebpf.Program
	pass, drop uint32
}

var entryPoints = []runProgram{
	{"xdp", func(g *Guard) *ebpf.Program { return g.objs.GuardXdp }, xdpPass, xdpDrop},
	{"tc", func(g *Guard) *ebpf.Program { return g.objs.GuardTc }, tcxNext, tcxDrop},
}

// judge runs one packet and returns the verdict whose counter moved,
// failing unless exactly one counter moved by exactly one and the return
// code matches that verdict. drop_not_tls passes the packet rewritten into
// a RST, which judge checks (checkReset), unless the segment is a SYN or a
// fragment other than the last: those are dropped.
func judge(t testing.TB, g *Guard, ep runProgram, frame []byte) string {
	t.Helper()
	v, err := tryJudge(t, g, ep, frame)
	if err != nil {
		t.Fatalf("run %s: %v", ep.name, err)
	}
	return v
}

// tryJudge is judge, but returns BPF_PROG_TEST_RUN's error instead of
// failing: the kernel's test harness refuses some frames (an IP EtherType
// with less than an IP header, for skb programs) before the program runs.
func tryJudge(t testing.TB, g *Guard, ep runProgram, frame []byte) (string, error) {
	t.Helper()
	before, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+64)}
	ret, err := ep.prog(g).Run(opts)
	if err != nil {
		return "", err
	}
	after, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var moved []string
	for _, name := range Verdicts {
		switch d := after[name] - before[name]; d {
		case 0:
		case 1:
			moved = append(moved, name)
		default:
			t.Fatalf("counter %s moved by %d for one packet", name, d)
		}
	}
	if len(moved) != 1 {
		t.Fatalf("%d counters moved for one packet: %v", len(moved), moved)
	}
	want := ep.pass
	if strings.HasPrefix(moved[0], "drop_") && !(moved[0] == "drop_not_tls" && resettable(frame)) {
		want = ep.drop
	}
	if ret != want {
		t.Fatalf("%s returned %#x for verdict %s, want %#x", ep.name, ret, moved[0], want)
	}
	if moved[0] == "drop_not_tls" && ret == ep.pass {
		if err := checkReset(frame, opts.DataOut); err != nil {
			t.Fatalf("%s: drop_not_tls: the packet passed is not the segment's RST: %v\nin:  % x\nout: % x",
				ep.name, err, frame, opts.DataOut)
		}
	}
	return moved[0], nil
}

// resettable says whether guard.c turns a TCP segment it refuses into a
// RST: not a SYN, which has no connection to end, nor a fragment that
// others follow.
func resettable(b []byte) bool {
	f, err := parseFrame(b)
	return err == nil && f.flags&tcpSYN == 0 && !f.moreFragments
}

// resetState empties the maps a table row may have written.
func resetState(t testing.TB, g *Guard) {
	t.Helper()
	n := int(g.objs.FlowSlots.MaxEntries())
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := g.objs.FlowSlots.BatchUpdate(keys, make([]uint64, n), nil); err != nil {
		t.Fatal(err)
	}
	clear(g.hints)
	for _, m := range []*ebpf.Map{g.objs.Blocklist} {
		key := make([]byte, m.KeySize())
		var keys [][]byte
		it := m.Iterate()
		val := make([]byte, m.ValueSize())
		for it.Next(key, val) {
			keys = append(keys, append([]byte(nil), key...))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Fatal(err)
			}
		}
	}
	if err := g.clearSourceRate(); err != nil {
		t.Fatal(err)
	}
	if err := g.objs.Config.Set(guardGuardConfig{}); err != nil {
		t.Fatal(err)
	}
}

// step is one packet of a table row and the verdict it must get.
type step struct {
	p    pkt
	want string
}

func steps(want string, ps ...pkt) []step {
	out := make([]step, len(ps))
	for i, p := range ps {
		out[i] = step{p, want}
	}
	return out
}

func seq(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(p pkt, want string) []step { return []step{{p, want}} }

// Ports and addresses of the table.
const (
	guarded    = 443
	allowOnly  = 8443
	notGuarded = 8080
	proxyPort  = 8444
)

var (
	client4  = netip.MustParseAddr("198.18.0.2")
	server4  = netip.MustParseAddr("198.18.0.1")
	client6  = netip.MustParseAddr("2001:2::2")
	server6  = netip.MustParseAddr("2001:2::1")
	outside4 = netip.MustParseAddr("198.19.7.7")
	outside6 = netip.MustParseAddr("2001:2:1::7")
	allowed  = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:2::/64")}
)

var (
	httpGet    = []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	sshBanner  = []byte("SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n")
	proxyV1    = []byte("PROXY TCP4 198.18.0.2 198.18.0.1 40000 443\r\n")
	proxyV2    = []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	tcpOptsSyn = []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7} // MSS, SACK-perm, TS, NOP, WS
	tcpOptsTS  = []byte{1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1}                               // NOP NOP TS
)

func newFlow(src, dst netip.Addr, sport uint16) flow {
	return flow{src: src, dst: dst, sport: sport, dport: guarded, isn: 1000 + uint32(sport)*7919}
}

// tlsTable is the table of rows both entry points must judge identically.
func tlsTable(t testing.TB) []struct {
	name  string
	setup func(t testing.TB, g *Guard)
	steps []step
} {
	hello := clientHello(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 64)
	for i := range random {
		random[i] = byte(rnd.UintN(256))
	}
	random[0] = 0x17

	f4 := newFlow(client4, server4, 40001)
	f6 := newFlow(client6, server6, 40002)
	wrap := newFlow(client4, server4, 40003)
	wrap.isn = 0xfffffffc
	vlan := newFlow(client4, server4, 40004)
	vlan.vlans = []uint16{0x8100}
	qinq := newFlow(client6, server6, 40005)
	qinq.vlans = []uint16{0x88a8, 0x8100}
	opts := newFlow(client4, server4, 40006)
	opts.ipOpts = []byte{0x94, 0x04, 0, 0, 1, 1, 1, 0} // router alert, NOP NOP NOP EOL
	opts.tcpOpts = tcpOptsTS
	ext := newFlow(client6, server6, 40007)
	ext.ext = []extHdr{
		{protoHopOpts, []byte{1, 4, 0, 0, 0, 0}}, // PadN
		{protoDstOpts, []byte{1, 4, 0, 0, 0, 0}}, // PadN
		{protoRouting, []byte{4, 0, 0, 0, 0, 0}}, // segments left 0
		{protoFragment, nil},                     // atomic fragment (offset 0)
		{protoDstOpts, []byte{1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	long := newFlow(client6, server6, 40008)
	for range IPV6ExtMaxForTest + 1 {
		long.ext = append(long.ext, extHdr{protoDstOpts, []byte{1, 4, 0, 0, 0, 0}})
	}
	triple := newFlow(client4, server4, 40009)
	triple.vlans = []uint16{0x88a8, 0x8100, 0x8100}

	withFlags := func(p pkt, flags uint8) pkt { p.flags = flags; return p }
	// other is another connection framed like f.
	other := func(f flow) flow { f.sport += 1000; f.isn += 7777; return f }
	withPort := func(p pkt, port uint16) pkt { p.dport = port; return p }
	withSrc := func(p pkt, src netip.Addr) pkt { p.src = src; return p }
	withProto := func(p pkt, proto uint8) pkt { p.proto = proto; return p }
	hdr := func(b ...byte) []byte { return b }

	return []struct {
		name  string
		setup func(t testing.TB, g *Guard)
		steps []step
	}{
		{name: "ipv4 hello in one segment", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.ack(), "pass_no_payload"),
			one(f4.data(0, hello[:1200]), "pass_tls"),
			one(f4.data(1200, hello[1200:]), "pass_untracked"),
		)},
		{name: "ipv6 hello in one segment", steps: seq(
			one(f6.syn(), "pass_syn"),
			one(f6.data(0, hello[:1200]), "pass_tls"),
			one(f6.data(1200, hello[1200:]), "pass_untracked"),
		)},
		{name: "first segment 1 byte", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hello[:1]), "pass_tls"),
			one(f4.data(1, hello[1:1200]), "pass_tls"),
			one(f4.data(1200, hello[1200:]), "pass_untracked"),
		)},
		{name: "first segment 5 bytes", steps: seq(
			one(f6.syn(), "pass_syn"),
			one(f6.data(0, hello[:5]), "pass_tls"),
			one(f6.data(5, hello[5:1200]), "pass_tls"),
			one(f6.data(1200, hello[1200:]), "pass_untracked"),
		)},
		{name: "first segment 9 bytes", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hello[:9]), "pass_tls"),
			one(f4.data(9, hello[9:1200]), "pass_untracked"),
		)},
		{name: "one byte per segment", steps: func() []step {
			s := one(f4.syn(), "pass_syn")
			for i := range 9 {
				s = append(s, step{f4.data(i, hello[i:i+1]), "pass_tls"})
			}
			return append(s, step{f4.data(9, hello[9:100]), "pass_untracked"})
		}()},
		{name: "ethernet padding is not payload", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(func() pkt { p := f4.data(0, hello[:1]); p.pad = 5; return p }(), "pass_tls"),
			one(f4.data(1, hello[1:9]), "pass_tls"),
		)},
		{name: "sequence wraps around zero", steps: seq(
			one(wrap.syn(), "pass_syn"),
			one(wrap.data(0, hello[:2]), "pass_tls"),
			one(wrap.data(2, hello[2:7]), "pass_tls"),
			one(wrap.data(7, hello[7:500]), "pass_tls"),
		)},
		{name: "http GET reset, retransmission reset, the stream stays refused until a new SYN", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, httpGet), "drop_not_tls"),
			one(f4.data(0, httpGet), "drop_not_tls"),
			one(f4.data(0, hello[:1200]), "drop_not_tls"),
			one(f4.data(len(httpGet), httpGet), "drop_refused"),
			one(f4.ack(), "drop_refused"),
			one(withFlags(f4.data(len(httpGet), nil), tcpFIN|tcpACK), "drop_refused"),
			one(withFlags(f4.data(len(httpGet), nil), tcpRST), "drop_refused"),
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hello[:1200]), "pass_tls"),
		)},
		{name: "ssh banner", steps: seq(one(f6.syn(), "pass_syn"), one(f6.data(0, sshBanner), "drop_not_tls"))},
		{name: "proxy v1", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, proxyV1), "drop_not_tls"))},
		{name: "proxy v2", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, proxyV2), "drop_not_tls"))},
		{name: "random bytes", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, random), "drop_not_tls"))},
		{name: "good prefix then bad handshake type", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hdr(0x16, 0x03, 0x01, 0x02, 0x00)), "pass_tls"),
			one(f4.data(5, hdr(0x02, 0, 0, 0x50)), "drop_not_tls"),
			one(f4.data(5, hdr(0x02, 0, 0, 0x50)), "drop_not_tls"),
			one(f4.data(5, hdr(0x01, 0, 0, 0x50)), "drop_not_tls"),
			one(f4.data(0, hdr(0x16, 0x03, 0x01, 0x02, 0x00)), "drop_refused"),
		)},
		{name: "version 3.5", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, hdr(0x16, 0x03, 0x05, 0, 0x10, 1, 0, 0, 0x0c)), "drop_not_tls"))},
		{name: "version 3.0 (RFC 5246 E.1)", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, hdr(0x16, 0x03, 0x00, 0, 0x10, 1, 0, 0, 0x0c)), "pass_tls"))},
		{name: "version 3.0 one byte at a time", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hdr(0x16)), "pass_tls"),
			one(f4.data(1, hdr(0x03)), "pass_tls"),
			one(f4.data(2, hdr(0x00)), "pass_tls"),
			one(f4.data(3, hdr(0, 0x10, 1, 0, 0, 0x0c)), "pass_tls"),
		)},
		{name: "version 2.0 record", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, hdr(0x16, 0x02, 0x00, 0, 0x10, 1, 0, 0, 0x0c)), "drop_not_tls"))},
		{name: "record length 2^14 passes", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, hdr(0x16, 0x03, 0x03, 0x40, 0x00, 1, 0, 0x3f, 0xfc)), "pass_tls"))},
		{name: "record length 2^14+1 across segments", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hdr(0x16, 0x03, 0x03, 0x40)), "pass_tls"),
			one(f4.data(4, hdr(0x01, 1, 0, 0, 0)), "drop_not_tls"),
		)},
		{name: "record length high byte 0x41", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, hdr(0x16, 0x03, 0x03, 0x41, 0)), "drop_not_tls"))},
		{name: "application data record", steps: seq(one(f4.syn(), "pass_syn"), one(f4.data(0, hdr(0x17, 0x03, 0x03, 0, 0x20)), "drop_not_tls"))},
		{name: "tfo hello in syn", steps: seq(
			one(f4.synData(hello[:1000]), "pass_tls"),
			one(f4.data(1000, hello[1000:]), "pass_untracked"),
		)},
		{name: "tfo 3 bytes in syn", steps: seq(
			one(f4.synData(hello[:3]), "pass_tls"),
			one(f4.data(3, hello[3:1000]), "pass_tls"),
		)},
		{name: "tfo http in syn, retransmitted syn without data", steps: seq(
			one(f4.synData(httpGet), "drop_not_tls"),
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, httpGet), "drop_not_tls"),
		)},
		{name: "out of order: later segment first", steps: seq(
			one(f6.syn(), "pass_syn"),
			one(f6.data(5, hello[5:1000]), "pass_other_seq"),
			one(f6.data(0, hello[:5]), "pass_tls"),
			one(f6.data(5, hello[5:1000]), "pass_tls"),
		)},
		{name: "out of order: garbage in the future passes (kernel holds it behind the hole)", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(100, httpGet), "pass_other_seq"),
			one(f4.data(0, httpGet), "drop_not_tls"),
		)},
		{name: "retransmission covering checked bytes", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hello[:1]), "pass_tls"),
			one(f4.data(0, hello[:600]), "pass_tls"),
			one(f4.data(600, hello[600:]), "pass_untracked"),
		)},
		{name: "overlap rewriting unchecked bytes is judged", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hello[:1]), "pass_tls"),
			one(f4.data(0, append([]byte{0x16}, httpGet...)), "drop_not_tls"),
		)},
		{name: "old retransmission before the checked point", steps: seq(
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, hello[:5]), "pass_tls"),
			one(f4.data(0, hello[:4]), "pass_other_seq"),
		)},
		{name: "no syn seen", steps: one(f4.data(0, httpGet), "pass_untracked")},
		{name: "vlan", steps: seq(
			one(vlan.syn(), "pass_syn"),
			one(vlan.data(0, hello[:1000]), "pass_tls"),
			one(other(vlan).syn(), "pass_syn"),
			one(other(vlan).data(0, httpGet), "drop_not_tls"),
		)},
		{name: "qinq", steps: seq(
			one(qinq.syn(), "pass_syn"),
			one(qinq.data(0, hello[:1000]), "pass_tls"),
			one(other(qinq).syn(), "pass_syn"),
			one(other(qinq).data(0, sshBanner), "drop_not_tls"),
		)},
		{name: "three vlan tags are not parsed", steps: one(triple.data(0, httpGet), "pass_not_guarded")},
		{name: "ipv4 options and tcp options", steps: seq(
			one(func() pkt { p := opts.syn(); p.tcpOpts = tcpOptsSyn; return p }(), "pass_syn"),
			one(opts.data(0, hello[:5]), "pass_tls"),
			one(opts.data(5, hello[5:1000]), "pass_tls"),
			one(func() pkt { p := other(opts).syn(); p.tcpOpts = tcpOptsSyn; return p }(), "pass_syn"),
			one(other(opts).data(0, httpGet), "drop_not_tls"),
		)},
		{name: "ipv6 extension headers", steps: seq(
			one(ext.syn(), "pass_syn"),
			one(ext.data(0, hello[:1000]), "pass_tls"),
			one(other(ext).syn(), "pass_syn"),
			one(other(ext).data(0, proxyV1), "drop_not_tls"),
		)},
		{name: "ipv6 extension chain beyond the bound", steps: one(long.syn(), "drop_malformed")},
		{name: "bad flags", steps: seq(
			one(withFlags(f4.syn(), tcpSYN|tcpFIN), "drop_bad_flags"),
			one(withFlags(f4.syn(), tcpSYN|tcpRST), "drop_bad_flags"),
			one(withFlags(f4.syn(), tcpSYN|tcpRST|tcpACK), "drop_bad_flags"),
			one(withFlags(f4.ack(), 0), "drop_bad_flags"),
			one(withFlags(f4.ack(), tcpFIN), "drop_bad_flags"),
			one(withFlags(f4.ack(), tcpFIN|tcpPSH|tcpURG), "drop_bad_flags"),
			one(withFlags(f6.ack(), tcpPSH), "drop_bad_flags"),
			one(withFlags(f6.data(0, httpGet), tcpPSH), "drop_bad_flags"),
		)},
		{name: "legitimate flag combinations", steps: seq(
			one(withFlags(f4.syn(), tcpSYN|tcpECE|tcpCWR), "pass_syn"),
			one(withFlags(f4.ack(), tcpRST), "pass_no_payload"),
			one(withFlags(f4.ack(), tcpRST|tcpACK), "pass_no_payload"),
			one(withFlags(f4.ack(), tcpFIN|tcpACK), "pass_no_payload"),
			one(withFlags(f4.ack(), tcpFIN|tcpRST|tcpACK), "pass_no_payload"),
			one(withFlags(f4.ack(), tcpACK|tcpURG|tcpPSH), "pass_no_payload"),
			one(withFlags(f6.syn(), tcpSYN|tcpACK), "pass_untracked"),
			one(withFlags(f4.data(0, hello[:1000]), tcpFIN|tcpACK|tcpPSH), "pass_tls"),
		)},
		{name: "udp and sctp to a guarded port", steps: seq(
			one(withProto(f4.data(0, []byte("quic?")), protoUDP), "drop_non_tcp"),
			one(withProto(f6.data(0, []byte("quic?")), protoUDP), "drop_non_tcp"),
			one(withProto(f4.data(0, nil), protoSCTP), "drop_non_tcp"),
		)},
		{name: "not guarded", steps: seq(
			one(withPort(f4.data(0, httpGet), notGuarded), "pass_not_guarded"),
			one(withPort(withProto(f6.data(0, httpGet), protoUDP), notGuarded), "pass_not_guarded"),
			one(withProto(pkt{src: client4, dst: server4, l4: []byte{8, 0, 0, 0, 0, 1, 0, 1}}, protoICMP), "pass_not_guarded"),
			one(pkt{etherType: 0x0806}, "pass_not_guarded"),
		)},
		{name: "fragments pass by default", steps: seq(
			one(pkt{src: client4, dst: server4, fragOff: 185, l4: httpGet}, "pass_fragment"),
			one(pkt{src: client6, dst: server6, ext: []extHdr{{protoFragment, nil}}, fragOff: 185, l4: httpGet}, "pass_fragment"),
			one(func() pkt { p := f4.data(0, httpGet); p.moreFrags = true; return p }(), "pass_untracked"),
		)},
		{name: "fragments dropped when configured", setup: func(t testing.TB, g *Guard) {
			if err := g.objs.Config.Set(guardGuardConfig{Flags: configDropFragments}); err != nil {
				t.Fatal(err)
			}
		}, steps: seq(
			one(pkt{src: client4, dst: server4, fragOff: 1, moreFrags: true, l4: httpGet}, "drop_fragment"),
			one(pkt{src: client6, dst: server6, ext: []extHdr{{protoHopOpts, nil}, {protoFragment, nil}}, fragOff: 3, l4: httpGet}, "drop_fragment"),
			one(f4.syn(), "pass_syn"),
			one(func() pkt { p := f4.data(0, httpGet); p.moreFrags = true; return p }(), "drop_not_tls"),
		)},
		{name: "malformed", steps: seq(
			one(func() pkt { p := f4.syn(); p.truncate = 10; return p }(), "drop_malformed"),
			one(func() pkt { p := f4.syn(); p.doff = 4; return p }(), "drop_malformed"),
			one(func() pkt { p := f4.syn(); p.doff = 15; return p }(), "drop_malformed"),
			one(func() pkt { p := f6.syn(); p.totLenDelta = 1; return p }(), "drop_malformed"),
			one(func() pkt { p := f4.syn(); p.totLenDelta = 1; return p }(), "drop_malformed"),
			one(func() pkt { p := f4.syn(); p.totLenDelta = -15; return p }(), "drop_malformed"),
			one(pkt{src: client4, dst: server4, l4: []byte{1, 2}}, "drop_malformed"),
			one(pkt{src: client4, dst: server4, l4: []byte{0x9c, 0x40, 0x01, 0xbb, 0, 0}}, "drop_malformed"),
		)},
		{name: "truncated tcp to an unguarded port passes", steps: one(
			pkt{src: client4, dst: server4, l4: []byte{0x9c, 0x40, 0x1f, 0x90, 0, 0}}, "pass_not_guarded")},
		{name: "malformed tcp to an unguarded port passes", steps: one(func() pkt {
			p := withPort(f4.syn(), notGuarded)
			p.doff = 2
			return p
		}(), "pass_not_guarded")},
		{name: "proxy protocol port: first bytes not checked, other rules apply", setup: func(t testing.TB, g *Guard) {
			if err := g.objs.Ports.Put(uint32(proxyPort), guardPortPolicy{Flags: portGuarded | portProxyHeader}); err != nil {
				t.Fatal(err)
			}
		}, steps: seq(
			one(withPort(f4.syn(), proxyPort), "pass_proxy_port"),
			one(withPort(f4.data(0, proxyV1), proxyPort), "pass_proxy_port"),
			one(withPort(f6.data(0, proxyV2), proxyPort), "pass_proxy_port"),
			one(withPort(withFlags(f4.syn(), tcpSYN|tcpFIN), proxyPort), "drop_bad_flags"),
			one(withPort(withProto(f4.data(0, nil), protoUDP), proxyPort), "drop_non_tcp"),
			one(f4.syn(), "pass_syn"),
			one(f4.data(0, proxyV1), "drop_not_tls"),
		)},
		{name: "blocked", setup: func(t testing.TB, g *Guard) {
			for _, a := range []netip.Addr{client4, client6} {
				if err := g.Block(a, time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
		}, steps: seq(
			one(f4.syn(), "drop_blocked"),
			one(f4.data(0, hello[:1000]), "drop_blocked"),
			one(f6.syn(), "drop_blocked"),
			one(withProto(f4.data(0, nil), protoUDP), "drop_blocked"),
			one(withPort(f4.syn(), notGuarded), "pass_not_guarded"),
			one(withSrc(f4.syn(), outside4), "pass_syn"),
		)},
		{name: "expired block passes", setup: func(t testing.TB, g *Guard) {
			now, err := monotonicNow()
			if err != nil {
				t.Fatal(err)
			}
			// A second ago: the kernel's coarse clock can lag a tick.
			expired := uint64(now - int64(time.Second))
			g.raiseBlockHint(addrKey(client6), expired)
			if err := g.objs.Blocklist.Put(addrKey(client6), expired); err != nil {
				t.Fatal(err)
			}
		}, steps: one(f6.syn(), "pass_syn")},
		{name: "allow-only port", setup: func(t testing.TB, g *Guard) {
			if err := g.objs.Ports.Put(uint32(allowOnly), guardPortPolicy{Flags: portGuarded | portAllowOnly}); err != nil {
				t.Fatal(err)
			}
			for _, p := range allowed {
				if err := g.objs.Allow.Put(lpmKey(p), uint8(1)); err != nil {
					t.Fatal(err)
				}
			}
		}, steps: seq(
			one(withPort(f4.syn(), allowOnly), "pass_syn"),
			one(withPort(f6.syn(), allowOnly), "pass_syn"),
			one(withSrc(withPort(f4.syn(), allowOnly), outside4), "drop_not_allowed"),
			one(withSrc(withPort(f6.syn(), allowOnly), outside6), "drop_not_allowed"),
			one(withSrc(withPort(withProto(f6.data(0, nil), protoUDP), allowOnly), outside6), "drop_not_allowed"),
			one(withSrc(f4.syn(), outside4), "pass_syn"),
		)},
	}
}

// IPV6ExtMaxForTest mirrors IPV6_EXT_MAX in guard.c.
const IPV6ExtMaxForTest = 8

func TestVerdicts(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}})
	table := tlsTable(t)
	for _, ep := range entryPoints {
		for _, row := range table {
			t.Run(ep.name+"/"+row.name, func(t *testing.T) {
				resetState(t, g)
				if row.setup != nil {
					row.setup(t, g)
				}
				for i, s := range row.steps {
					if got := judge(t, g, ep, s.p.bytes()); got != s.want {
						t.Fatalf("step %d: verdict %s, want %s", i, got, s.want)
					}
				}
			})
		}
	}
}

func TestVerdictNamesMatchProgram(t *testing.T) {
	if int(guardVerdictVERDICT_MAX) != len(Verdicts) {
		t.Fatalf("guard.c has %d verdicts, Verdicts lists %d", guardVerdictVERDICT_MAX, len(Verdicts))
	}
	spec, err := loadGuard()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[guardMapCounters].MaxEntries; got != uint32(len(Verdicts)) {
		t.Fatalf("counters map has %d entries, want %d", got, len(Verdicts))
	}
	// Names too, index by index: Verdicts[i] names counter i.
	var enum *btf.Enum
	if err := spec.Types.TypeByName("verdict", &enum); err != nil {
		t.Fatal(err)
	}
	for _, v := range enum.Values {
		if v.Name == "VERDICT_MAX" {
			continue
		}
		want := strings.ToLower(strings.TrimPrefix(v.Name, "VERDICT_"))
		got := "nothing"
		if v.Value < uint64(len(Verdicts)) {
			got = Verdicts[v.Value]
		}
		if got != want {
			t.Errorf("guard.c has %s = %d, Verdicts has %s there, want %s", v.Name, v.Value, got, want)
		}
	}
}

// TestTFODropInsertsNoFlow checks that a SYN whose data (TCP Fast Open)
// is not a ClientHello is dropped without touching the flow table: its
// flow's slot stays empty, and a slot a plain SYN wrote before keeps its
// progress.
func TestTFODropInsertsNoFlow(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}})
	hello := clientHello(t)
	var hk guardFlowHashKey
	if err := g.objs.FlowHashKey.Lookup(uint32(0), &hk); err != nil {
		t.Fatal(err)
	}
	lookup := func(t *testing.T, f flow) (uint64, bool) {
		t.Helper()
		idx, id := slotOf(hk, g.objs.FlowSlots.MaxEntries(), f.src, f.dst, f.sport, f.dport)
		var v uint64
		if err := g.objs.FlowSlots.Lookup(idx, &v); err != nil {
			t.Fatal(err)
		}
		return v, v&slotIDMask == id
	}
	for _, ep := range entryPoints {
		for _, f := range []flow{newFlow(client4, server4, 40201), newFlow(client6, server6, 40202)} {
			t.Run(ep.name+"/"+f.src.String()+"/no entry", func(t *testing.T) {
				resetState(t, g)
				if v := judge(t, g, ep, f.synData(httpGet).bytes()); v != "drop_not_tls" {
					t.Fatalf("tfo syn with http: verdict %s, want drop_not_tls", v)
				}
				if st, ok := lookup(t, f); ok || st != 0 {
					t.Fatalf("dropped tfo syn wrote its slot: %#x", st)
				}
			})
			t.Run(ep.name+"/"+f.src.String()+"/entry kept", func(t *testing.T) {
				resetState(t, g)
				if v := judge(t, g, ep, f.syn().bytes()); v != "pass_syn" {
					t.Fatalf("syn: verdict %s, want pass_syn", v)
				}
				if v := judge(t, g, ep, f.data(0, hello[:3]).bytes()); v != "pass_tls" {
					t.Fatalf("first 3 bytes: verdict %s, want pass_tls", v)
				}
				before, ok := lookup(t, f)
				if !ok {
					t.Fatal("no slot after 3 checked bytes")
				}
				if v := judge(t, g, ep, f.synData(httpGet).bytes()); v != "drop_not_tls" {
					t.Fatalf("tfo syn with http: verdict %s, want drop_not_tls", v)
				}
				if after, ok := lookup(t, f); !ok || after != before {
					t.Fatalf("dropped tfo syn changed the slot from %#x to %#x (ours %v)", before, after, ok)
				}
				if v := judge(t, g, ep, f.data(3, hello[3:100]).bytes()); v != "pass_tls" {
					t.Fatalf("next bytes: verdict %s, want pass_tls", v)
				}
			})
		}
	}
}
