package bpf

// reference.c, the program BenchmarkVerdicts compares the guard with, is
// built for the tests only (reference_bpfel_test.go).
//go:generate go tool bpf2go -cc clang-19 -target bpfel reference reference.c -- -mcpu=v3 -Wall -Werror

import (
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
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
//
// BPF_PROG_TEST_RUN repeats a program on one buffer, so a path that
// rewrites its packet (the RST of drop_not_tls) or moves its flow out of
// the state it needs (the first data segment, whose check empties the
// slot) would time another path from its second run on. Those paths are
// timed one run per call, with their setup replayed before each call, in
// turns with the same flow's segment of the same length at another
// sequence number (pass_other_seq) timed the same way: a single run
// after a system call costs far more than a repeated one, so the row
// reports pass_other_seq's repeated cost plus the difference between the
// two single runs.
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
		setup   []pkt // put the flow in the state the path needs
		p       pkt
		verdict string
		once    bool // the path changes its packet or its flow's state: see above
	}{
		{name: "pass_not_guarded", p: unguarded, verdict: "pass_not_guarded"},
		{name: "pass_syn", p: f4.syn(), verdict: "pass_syn"},
		{name: "pass_tls_tfo_9_bytes_checked", p: f4.synData(hello[:1000]), verdict: "pass_tls"},
		{name: "pass_tls_first_segment", setup: []pkt{f4.syn()}, p: f4.data(0, hello[:1000]), verdict: "pass_tls", once: true},
		{name: "pass_untracked", p: f4.data(1000, hello[1000:]), verdict: "pass_untracked"},
		{name: "pass_other_seq", setup: []pkt{f4.syn()}, p: f4.data(500, hello[500:1000]), verdict: "pass_other_seq"},
		{name: "drop_not_tls", setup: []pkt{f4.syn()}, p: f4.data(0, httpGet), verdict: "drop_not_tls", once: true},
		{name: "drop_not_tls_ipv6_qinq_ext", setup: []pkt{f6.syn()}, p: f6.data(0, httpGet), verdict: "drop_not_tls", once: true},
		{name: "drop_refused", setup: []pkt{f4.syn(), f4.data(0, httpGet)}, p: f4.data(len(httpGet), httpGet), verdict: "drop_refused"},
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
				var setup [][]byte
				for _, p := range path.setup {
					setup = append(setup, p.bytes())
					judge(b, g, ep, setup[len(setup)-1])
				}
				var otherFrame []byte
				var warm float64
				if path.once {
					other := path.p
					other.seq += otherSeqGap
					otherFrame = other.bytes()
					if v := judge(b, g, ep, otherFrame); v != "pass_other_seq" {
						b.Fatalf("comparison packet gets %s, want pass_other_seq", v)
					}
					warm = timeRepeated(b, ep.prog(g), otherFrame, b.N)
				}
				frame := path.p.bytes()
				if v := judge(b, g, ep, frame); v != path.verdict {
					b.Fatalf("benchmark packet gets %s, want %s", v, path.verdict)
				}
				base := timeRepeated(b, baselines[ep.name], frame, b.N)
				ref := timeRepeated(b, references[ep.name], frame, b.N)
				b.ResetTimer()
				var ns float64
				if path.once {
					once, otherOnce := timeOnce(b, ep.prog(g), setup, frame, otherFrame, min(b.N, onceCalls))
					ns = warm + once - otherOnce
				} else {
					ns = timeRepeated(b, ep.prog(g), frame, b.N)
				}
				b.ReportMetric(ns, "ns/pkt")
				b.ReportMetric(base, "baseline-ns/pkt")
				b.ReportMetric(ns/base, "x-baseline")
				b.ReportMetric(ref, "reference-ns/pkt")
				b.ReportMetric(ns/ref, "x-reference")
			})
		}
	}
}

// timeRepeated returns the nanoseconds per run of n runs of prog on frame
// in one BPF_PROG_TEST_RUN call, as the kernel reports them: whole
// nanoseconds (rounded down), with the time the kernel gave to other tasks
// during the call left out.
func timeRepeated(b *testing.B, prog *ebpf.Program, frame []byte, n int) float64 {
	b.Helper()
	_, d, err := prog.Benchmark(frame, n, nil)
	if err != nil {
		b.Fatal(err)
	}
	return float64(d.Nanoseconds())
}

// otherSeqGap moves a segment far enough past its stream's first
// unchecked byte to make it pass_other_seq.
const otherSeqGap = 1 << 20

// onceCalls bounds the calls that time a one-run-per-call path: each
// takes a few system calls.
const onceCalls = 200000

// timeOnce returns the mean nanoseconds of one run of prog on frame and on
// other, each after the setup frames, over n turns. The goroutine stays on
// one CPU meanwhile: a flow's packets, setup included, reach one CPU
// behind RSS, and the flow's slot need not move between CPU caches.
func timeOnce(b *testing.B, prog *ebpf.Program, setup [][]byte, frame, other []byte, n int) (float64, float64) {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.Fatal(err)
	}
	for cpu := 0; cpu < len(all)*64; cpu++ {
		if all.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		b.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)

	run := func(f []byte) time.Duration {
		for _, p := range setup {
			if _, err := prog.Run(&ebpf.RunOptions{Data: p}); err != nil {
				b.Fatal(err)
			}
		}
		_, d, err := prog.Benchmark(f, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	var sum, otherSum time.Duration
	for range n {
		sum += run(frame)
		otherSum += run(other)
	}
	return float64(sum.Nanoseconds()) / float64(n), float64(otherSum.Nanoseconds()) / float64(n)
}
