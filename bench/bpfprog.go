package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The guard's per-verdict benchmark lives with the guard (package bpf,
// BenchmarkVerdicts): it runs each verdict's packet through the real
// program with BPF_PROG_TEST_RUN (prog.Benchmark), and in the same
// benchmark on the same packet a trivial program of the same type and the
// reference program (bpf/reference.c: the same header parsing and one hash
// lookup keyed by the flow). The harness runs it as a Go benchmark and
// collects its figures, so both use one packet set.
const (
	bpfBenchmark = "BenchmarkVerdicts"
	bpfRuns      = "2000000x"
)

// Metrics of bpf-program rows.
const (
	mTrivialNs   = "trivial_ns_per_pkt"
	mXTrivial    = "x_trivial"
	mReferenceNs = "reference_ns_per_pkt"
	mXReference  = "x_reference"
)

// The targets for the guard: a SYN costs at most 3× the trivial
// program, and every verdict at most 1.5× the reference program.
const (
	maxSynXTrivial = 3
	maxXReference  = 1.5
)

// The reference program's columns follow the trivial program's in the
// bpf-program table.
func init() {
	if sc := findScenario("bpf-program"); sc != nil {
		sc.columns = append(sc.columns,
			column{mReferenceNs, "reference program ns / packet", "%.1f", 1},
			column{mXReference, "× reference", "%.2f", 1})
	}
}

// bpfBenchLine matches one result line, e.g.
// BenchmarkVerdicts/xdp/drop_not_tls-2  100000  181.2 ns/op  33.00 baseline-ns/pkt  179.0 ns/pkt  36.00 reference-ns/pkt  5.424 x-baseline  4.972 x-reference
var bpfBenchLine = regexp.MustCompile(`^` + bpfBenchmark + `/(\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseBPFBench collects, per "entry/verdict" path, the ns/pkt, the
// trivial and reference programs' ns/pkt and the ratios to them of every
// run in out.
func parseBPFBench(out []byte) (order []string, values map[string]map[string][]float64) {
	values = map[string]map[string][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := bpfBenchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		path := m[1]
		if values[path] == nil {
			values[path] = map[string][]float64{}
			order = append(order, path)
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			key := map[string]string{"ns/pkt": mNsPerPkt, "baseline-ns/pkt": mTrivialNs, "x-baseline": mXTrivial,
				"reference-ns/pkt": mReferenceNs, "x-reference": mXReference}[f[i+1]]
			if key != "" {
				values[path][key] = append(values[path][key], v)
			}
		}
	}
	return order, values
}

func runBPFProgram(ctx context.Context, h *harness, sc *scenario) []Row {
	fail := func(note string) []Row {
		h.progress("  %s", note)
		return []Row{{Scenario: sc.name, System: "guard", Status: statusFailed, Note: note}}
	}
	root, err := moduleRoot()
	if err != nil {
		return fail(err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := []string{"test", "-run", "^$", "-bench", "^" + bpfBenchmark + "$", "-benchtime", bpfRuns,
		"-count", strconv.Itoa(h.opts.Reps), "./bpf/"}
	h.progress("  go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	order, values := parseBPFBench(out)
	if err != nil || len(order) == 0 {
		return fail(fmt.Sprintf("go test -bench %s ./bpf/ produced no figures (%v): %s", bpfBenchmark, err, firstLines(string(out), 4)))
	}
	var rows []Row
	for _, path := range order {
		v := values[path]
		// One table for all paths: the path goes in the system column.
		row := Row{Scenario: sc.name, System: "guard " + path, Status: statusOK, Metrics: map[string]Stat{}}
		for _, k := range []string{mNsPerPkt, mTrivialNs, mXTrivial, mReferenceNs, mXReference} {
			if len(v[k]) > 0 {
				row.Metrics[k] = statOf(v[k])
			}
		}
		row.Note = bpfTargetNote(row)
		h.progress("  %-40s %6.1f ns/packet, trivial %5.1f (×%.2f), reference %5.1f (×%.2f)", path,
			row.Metrics[mNsPerPkt].Median, row.Metrics[mTrivialNs].Median, row.Metrics[mXTrivial].Median,
			row.Metrics[mReferenceNs].Median, row.Metrics[mXReference].Median)
		rows = append(rows, row)
	}
	return rows
}

// bpfTargetNote names the targets a row's medians miss (see bpfTargets).
func bpfTargetNote(row Row) string {
	var missed []string
	for _, t := range bpfTargets(row) {
		if !t.Met {
			missed = append(missed, fmt.Sprintf("missed: %s (%.2f×)", t.Target, t.Ratio))
		}
	}
	return strings.Join(missed, "; ")
}
