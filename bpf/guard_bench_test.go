package bpf

// reference.c, the program BenchmarkVerdicts compares the guard with, is
// built for the tests only (reference_bpfel_test.go).
//go:generate go tool bpf2go -cc clang-19 -target bpfel reference reference.c -- -mcpu=v3 -Wall -Werror

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// trivialProgram returns a program of the given type that only returns
// ret: the floor a guard path is compared against.
func trivialProgram(b *testing.B, typ ebpf.ProgramType, ret int32) *ebpf.Program {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         typ,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// openReference loads reference.c: per entry point, a program that
// parses the same headers as the guard and does one hash lookup keyed by
// the flow (see reference.c).
func openReference(b *testing.B) map[string]*ebpf.Program {
	b.Helper()
	var objs referenceObjects
	if err := loadReferenceObjects(&objs, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	return map[string]*ebpf.Program{"xdp": objs.ReferenceXdp, "tc": objs.ReferenceTc}
}

// BenchmarkVerdicts measures nanoseconds per packet for each verdict path
// of both entry points with BPF_PROG_TEST_RUN, and the ratios to a trivial
// program of the same type (baseline) and to the reference program
// (reference.c: the same parsing and one hash lookup), each run on the
// same packet in the same benchmark.
func BenchmarkVerdicts(b *testing.B) {
	g := openTestGuard(b, Config{Ports: []uint16{guarded}})
	hello := clientHello(b)
	f4 := newFlow(client4, server4, 42001)
	f6 := newFlow(client6, server6, 42002)
	f6.vlans = []uint16{0x88a8, 0x8100}
	f6.ext = []extHdr{{protoHopOpts, []byte{1, 4, 0, 0, 0, 0}}, {protoDstOpts, []byte{1, 4, 0, 0, 0, 0}}}
	blockedFlow := newFlow(outside4, server4, 42003)
	if err := g.Block(outside4, time.Now().Add(time.Hour)); err != nil {
		b.Fatal(err)
	}
	withFlags := func(p pkt, flags uint8) pkt { p.flags = flags; return p }
	udp := f4.data(0, []byte("quic"))
	udp.proto = protoUDP
	unguarded := f4.syn()
	unguarded.dport = notGuarded

	paths := []struct {
		name    string
		setup   []pkt // sent once, to put a flow in the state the path needs
		p       pkt
		verdict string
	}{
		{name: "pass_not_guarded", p: unguarded, verdict: "pass_not_guarded"},
		{name: "pass_syn", p: f4.syn(), verdict: "pass_syn"},
		{name: "pass_tls_tfo_9_bytes_checked", p: f4.synData(hello[:1000]), verdict: "pass_tls"},
		{name: "pass_untracked", p: f4.data(1000, hello[1000:]), verdict: "pass_untracked"},
		{name: "pass_other_seq", setup: []pkt{f4.syn()}, p: f4.data(500, hello[500:1000]), verdict: "pass_other_seq"},
		{name: "drop_not_tls", setup: []pkt{f4.syn()}, p: f4.data(0, httpGet), verdict: "drop_not_tls"},
		{name: "drop_not_tls_ipv6_qinq_ext", setup: []pkt{f6.syn()}, p: f6.data(0, httpGet), verdict: "drop_not_tls"},
		{name: "drop_blocked", p: blockedFlow.syn(), verdict: "drop_blocked"},
		{name: "drop_bad_flags", p: withFlags(f4.syn(), tcpSYN|tcpFIN), verdict: "drop_bad_flags"},
		{name: "drop_non_tcp", p: udp, verdict: "drop_non_tcp"},
	}
	baselines := map[string]*ebpf.Program{
		"xdp": trivialProgram(b, ebpf.XDP, xdpPass),
		"tc":  trivialProgram(b, ebpf.SchedCLS, -1),
	}
	references := openReference(b)
	for _, ep := range entryPoints {
		for _, path := range paths {
			b.Run(ep.name+"/"+path.name, func(b *testing.B) {
				resetState(b, g)
				if err := g.Block(outside4, time.Now().Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
				for _, p := range path.setup {
					judge(b, g, ep, p.bytes())
				}
				frame := path.p.bytes()
				if v := judge(b, g, ep, frame); v != path.verdict {
					b.Fatalf("benchmark packet gets %s, want %s", v, path.verdict)
				}
				_, base, err := baselines[ep.name].Benchmark(frame, b.N, nil)
				if err != nil {
					b.Fatal(err)
				}
				_, ref, err := references[ep.name].Benchmark(frame, b.N, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				_, d, err := ep.prog(g).Benchmark(frame, b.N, b.ResetTimer)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
				b.ReportMetric(float64(base.Nanoseconds()), "baseline-ns/pkt")
				if base > 0 {
					b.ReportMetric(float64(d)/float64(base), "x-baseline")
				}
				b.ReportMetric(float64(ref.Nanoseconds()), "reference-ns/pkt")
				if ref > 0 {
					b.ReportMetric(float64(d)/float64(ref), "x-reference")
				}
			})
		}
	}
}
