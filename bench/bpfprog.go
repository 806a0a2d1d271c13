package bench

import (
	"context"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// bpfRepeat is how many times the kernel runs a program per measurement
// (BPF_PROG_TEST_RUN's repeat), enough to drown the syscall's own cost.
const bpfRepeat = 1_000_000

// synPacket is an Ethernet + IPv4 + TCP SYN to port 443, the packet every
// program sees most.
var synPacket = []byte{
	// Ethernet: dst, src, IPv4
	0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00,
	// IPv4: 20 bytes, TCP, 198.18.0.2 -> 198.18.0.1
	0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
	// TCP: 40000 -> 443, SYN, window 64240
	0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
}

// trivialXDP is the reference program: return XDP_PASS and nothing else.
func trivialXDP() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "bench_pass",
		Type:    ebpf.XDP,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
}

// benchProgram returns the median nanoseconds per run of prog on packet over
// reps measurements.
func benchProgram(prog *ebpf.Program, packet []byte, reps int) (Stat, error) {
	var ns []float64
	for range reps {
		_, d, err := prog.Benchmark(packet, bpfRepeat, nil)
		if err != nil {
			return Stat{}, fmt.Errorf("BPF_PROG_TEST_RUN: %w", err)
		}
		ns = append(ns, float64(d.Nanoseconds()))
	}
	return statOf(ns), nil
}

// runBPFProgram measures the trivial program, which needs only a kernel
// that allows BPF_PROG_TEST_RUN, and reports the guard's verdicts as
// missing until the harness loads the guard from package bpf.
func runBPFProgram(ctx context.Context, h *harness, sc *scenario) []Row {
	row := Row{Scenario: sc.name, Variant: "trivial XDP_PASS", System: "kernel"}
	prog, err := trivialXDP()
	if err != nil {
		row.Status, row.Note = statusFailed, "load trivial XDP program: "+err.Error()
		return []Row{row}
	}
	defer prog.Close()
	st, err := benchProgram(prog, synPacket, h.opts.Reps)
	if err != nil {
		row.Status, row.Note = statusFailed, err.Error()
		return []Row{row}
	}
	row.Status = statusBaseline
	row.Metrics = map[string]Stat{mNsPerPkt: st}
	h.progress("  trivial XDP_PASS: %.1f ns per packet", st.Median)
	return []Row{row, {
		Scenario: sc.name, Variant: "guard verdicts", System: sysEdgegate, Status: statusMissing,
		Note: "the harness does not load the eBPF guard from package bpf yet",
	}}
}
