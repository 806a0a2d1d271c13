package bpf

// reference.c, the program BenchmarkVerdicts compares the guard with, and
// steady.c, which lets it time paths that change their packet or state,
// are built for the tests only (*_bpfel_test.go).
//go:generate go tool bpf2go -cc clang-19 -target bpfel reference reference.c -- -mcpu=v3 -Wall -Werror
//go:generate go tool bpf2go -cc clang-19 -target bpfel steady steady.c -- -mcpu=v3 -Wall -Werror

import (
	"errors"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// trivialProgram returns a program of the given type that only returns
// ret: the floor a guard path is compared against. It has the guard's
// attach type, so that steady.c can tail-call it as it does the guard.
func trivialProgram(b *testing.B, typ ebpf.ProgramType, attach ebpf.AttachType, ret int32) *ebpf.Program {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         typ,
		AttachType:   attach,
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

// steadyRunner holds steady.c, loaded by openSteady for the guard g: per entry point, a
// program that puts a packet and a flow slot back as they were, then
// tail-calls its target (see steady.c).
type steadyRunner struct {
	objs steadyObjects
}

func openSteady(b *testing.B, g *Guard) *steadyRunner {
	b.Helper()
	spec, err := loadSteady()
	if err != nil {
		b.Fatal(err)
	}
	spec.Maps["flow_slots"].MaxEntries = g.objs.FlowSlots.MaxEntries()
	s := &steadyRunner{}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"flow_slots": g.objs.FlowSlots}}
	if err := spec.LoadAndAssign(&s.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			b.Fatalf("%+v", ve)
		}
		b.Fatal(err)
	}
	b.Cleanup(func() { s.objs.Close() })
	return s
}

// time returns the nanoseconds per run of n runs that put frame and slot
// idx (as value) back and then run target.
func (s *steadyRunner) time(b *testing.B, ep runProgram, target *ebpf.Program, frame []byte, idx uint32, value uint64, n int) float64 {
	b.Helper()
	fr, err := parseFrame(frame)
	if err != nil {
		b.Fatal(err)
	}
	st := steadySteadyState{Len: uint32(len(frame)), ShortLen: uint32(fr.l4 + 20), Slot: idx, SlotValue: value}
	if len(frame) > len(st.Frame) {
		b.Fatalf("frame of %d bytes, steady.c holds %d", len(frame), len(st.Frame))
	}
	copy(st.Frame[:], frame)
	if err := s.objs.Steady.Put(uint32(0), st); err != nil {
		b.Fatal(err)
	}
	prog, targets := s.objs.SteadyXdp, s.objs.TargetXdp
	if ep.name == "tc" {
		prog, targets = s.objs.SteadyTc, s.objs.TargetTc
	}
	if err := targets.Put(uint32(0), target); err != nil {
		b.Fatal(err)
	}
	return timeRepeated(b, prog, frame, n)
}

// BenchmarkVerdicts measures nanoseconds per packet for each verdict path
// of both entry points with BPF_PROG_TEST_RUN, and the ratios to a trivial
// program of the same type (baseline) and to the reference program
// (reference.c: the same parsing and one hash lookup), each run on the
// same packet in the same benchmark.
//
// BPF_PROG_TEST_RUN repeats a program on one buffer, so a path that
// rewrites its packet (the RST of drop_not_tls) or moves its stream out of
// the state it needs (the first data segment, whose check empties the
// slot) would time another path from its second run on. Those paths run
// behind steady.c, which puts the packet and the slot back before each
// run and then tail-calls the guard; the same with the trivial program
// instead of the guard times the putting back, which is taken off.
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
		flow    flow  // for steady paths: the stream whose slot is put back
		setup   []pkt // put the stream in the state the path needs
		p       pkt
		verdict string
		steady  bool // the path changes its packet or its stream's slot: see above
		rate    SourceRate
	}{
		{name: "pass_not_guarded", p: unguarded, verdict: "pass_not_guarded"},
		{name: "pass_syn", p: f4.syn(), verdict: "pass_syn"},
		{name: "pass_tls_tfo_9_bytes_checked", p: f4.synData(hello[:1000]), verdict: "pass_tls"},
		{name: "pass_tls_first_segment", flow: f4, setup: []pkt{f4.syn()}, p: f4.data(0, hello[:200]), verdict: "pass_tls", steady: true},
		{name: "pass_untracked", p: f4.data(1000, hello[1000:]), verdict: "pass_untracked"},
		{name: "pass_other_seq", setup: []pkt{f4.syn()}, p: f4.data(500, hello[500:1000]), verdict: "pass_other_seq"},
		{name: "drop_not_tls", flow: f4, setup: []pkt{f4.syn()}, p: f4.data(0, httpGet), verdict: "drop_not_tls", steady: true},
		{name: "drop_not_tls_ipv6_qinq_ext", flow: f6, setup: []pkt{f6.syn()}, p: f6.data(0, httpGet), verdict: "drop_not_tls", steady: true},
		{name: "drop_refused", setup: []pkt{f4.syn(), f4.data(0, httpGet)}, p: f4.data(len(httpGet), httpGet), verdict: "drop_refused"},
		{name: "drop_blocked", p: blockedFlow.syn(), verdict: "drop_blocked"},
		{name: "drop_bad_flags", p: withFlags(f4.syn(), tcpSYN|tcpFIN), verdict: "drop_bad_flags"},
		{name: "drop_non_tcp", p: udp, verdict: "drop_non_tcp"},
		// limits.rate on: a source under its rate (a bucket in the table,
		// one nanosecond a SYN, a second of burst: never over it while the
		// benchmark runs), one in never_limit, one over its rate.
		{name: "pass_syn_rate_on", setup: []pkt{f4.syn()}, p: f4.syn(), verdict: "pass_syn", rate: SourceRate{PerSecond: 1e9, Burst: 1e9}},
		{name: "pass_syn_rate_on_never_limit", p: f4.syn(), verdict: "pass_syn",
			rate: SourceRate{PerSecond: 1e9, Burst: 1e9, NeverLimit: []netip.Prefix{netip.PrefixFrom(client4, 32)}}},
		{name: "drop_source_rate", setup: []pkt{f4.syn()}, p: f4.syn(), verdict: "drop_source_rate", rate: SourceRate{PerSecond: 1.0 / 3600, Burst: 1}},
	}
	baselines := map[string]*ebpf.Program{
		"xdp": trivialProgram(b, ebpf.XDP, ebpf.AttachXDP, xdpPass),
		"tc":  trivialProgram(b, ebpf.SchedCLS, ebpf.AttachNone, -1),
	}
	references := openReference(b)
	steady := openSteady(b, g)
	var hashKey guardFlowHashKey
	if err := g.objs.FlowHashKey.Lookup(uint32(0), &hashKey); err != nil {
		b.Fatal(err)
	}
	for _, ep := range entryPoints {
		for _, path := range paths {
			b.Run(ep.name+"/"+path.name, func(b *testing.B) {
				resetState(b, g)
				if err := g.Update(Settings{Ports: []uint16{guarded}, SourceRate: path.rate}); err != nil {
					b.Fatal(err)
				}
				if err := g.Block(outside4, time.Now().Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
				for _, p := range path.setup {
					judge(b, g, ep, p.bytes())
				}
				frame := path.p.bytes()
				var idx uint32
				var slot uint64
				if path.steady {
					f := path.flow
					idx, _ = slotOf(hashKey, g.objs.FlowSlots.MaxEntries(), f.src, f.dst, f.sport, f.dport)
					if err := g.objs.FlowSlots.Lookup(idx, &slot); err != nil {
						b.Fatal(err)
					}
				}
				if v := judge(b, g, ep, frame); v != path.verdict {
					b.Fatalf("benchmark packet gets %s, want %s", v, path.verdict)
				}
				base := timeRepeated(b, baselines[ep.name], frame, b.N)
				ref := timeRepeated(b, references[ep.name], frame, b.N)
				var ns float64
				if path.steady {
					// One run behind steady.c must take the path.
					before, err := g.Counters()
					if err != nil {
						b.Fatal(err)
					}
					steady.time(b, ep, ep.prog(g), frame, idx, slot, 1)
					after, err := g.Counters()
					if err != nil {
						b.Fatal(err)
					}
					if after[path.verdict] != before[path.verdict]+1 {
						b.Fatalf("behind steady.c the packet does not get %s: %v -> %v", path.verdict, before, after)
					}
					restore := steady.time(b, ep, baselines[ep.name], frame, idx, slot, b.N)
					b.ResetTimer()
					ns = steady.time(b, ep, ep.prog(g), frame, idx, slot, b.N) - restore + base
				} else {
					b.ResetTimer()
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
// with BPF_PROG_TEST_RUN, as a fraction, timed from user space: the CPU
// time the calling thread spends in the call (CLOCK_THREAD_CPUTIME_ID, read
// before and after on the thread that makes it), which like the kernel's
// own figure leaves out the time other tasks ran. The kernel's figure is
// whole nanoseconds per run, rounded down, which moves a ratio to a 5 ns
// trivial program by up to 20%.
//
// A call also has a fixed cost, which at XDP is large and uneven: with more
// than one repetition the kernel installs the program in the XDP dispatcher
// and takes it out again (0.3 to 0.8 ms of patching the kernel's text). So
// the figure is a slope: the time of n runs less that of 2 runs (the
// median of fixedProbes calls), over n - 2. With n in the millions what is
// left of the fixed cost's unevenness is a few hundredths of a
// nanosecond. If a signal interrupts a call, cilium/ebpf starts it over and
// the clock is started over with it.
func timeRepeated(b *testing.B, prog *ebpf.Program, frame []byte, n int) float64 {
	b.Helper()
	if n <= fixedRepeat {
		return float64(cpuTimeOfRuns(b, prog, frame, n)) / float64(n)
	}
	var fixed [fixedProbes]int64
	for i := range fixed {
		fixed[i] = cpuTimeOfRuns(b, prog, frame, fixedRepeat)
	}
	slices.Sort(fixed[:])
	total := cpuTimeOfRuns(b, prog, frame, n)
	return float64(total-fixed[fixedProbes/2]) / float64(n-fixedRepeat)
}

// The fixed cost of a BPF_PROG_TEST_RUN call is that of a call with
// fixedRepeat runs (more than one, so that it includes the XDP dispatcher's
// patching), the median of fixedProbes calls.
const (
	fixedRepeat = 2
	fixedProbes = 3
)

// cpuTimeOfRuns returns the CPU time, in nanoseconds, that one
// BPF_PROG_TEST_RUN call of n runs of prog on frame takes on the calling
// thread.
func cpuTimeOfRuns(b *testing.B, prog *ebpf.Program, frame []byte, n int) int64 {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPUTime(b)
	if _, _, err := prog.Benchmark(frame, n, func() { start = threadCPUTime(b) }); err != nil {
		b.Fatal(err)
	}
	return threadCPUTime(b) - start
}

// threadCPUTime returns the CPU time the calling thread has used, in
// nanoseconds.
func threadCPUTime(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return ts.Nano()
}
