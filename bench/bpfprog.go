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
// program with BPF_PROG_TEST_RUN (prog.Benchmark) and a trivial program of
// the same type on the same packet in the same benchmark. The harness runs
// it as a Go benchmark and collects its figures, so both use one packet set.
const (
	bpfBenchmark = "BenchmarkVerdicts"
	bpfRuns      = "200000x"
)

// Metrics of bpf-program rows.
const (
	mTrivialNs = "trivial_ns_per_pkt"
	mXTrivial  = "x_trivial"
)

// bpfBenchLine matches one result line, e.g.
// BenchmarkVerdicts/xdp/drop_not_tls-2  100000  181.2 ns/op  33.00 baseline-ns/pkt  179.0 ns/pkt  5.424 x-baseline
var bpfBenchLine = regexp.MustCompile(`^` + bpfBenchmark + `/(\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseBPFBench collects, per "entry/verdict" path, the ns/pkt, the
// trivial program's ns/pkt and their ratio of every run in out.
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
			key := map[string]string{"ns/pkt": mNsPerPkt, "baseline-ns/pkt": mTrivialNs, "x-baseline": mXTrivial}[f[i+1]]
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
		for _, k := range []string{mNsPerPkt, mTrivialNs, mXTrivial} {
			if len(v[k]) > 0 {
				row.Metrics[k] = statOf(v[k])
			}
		}
		if x, ok := row.Metrics[mXTrivial]; ok && x.Median > 3 {
			row.Note = "over the 3× target"
		}
		h.progress("  %-40s %6.1f ns/packet, trivial %5.1f, ×%.2f", path,
			row.Metrics[mNsPerPkt].Median, row.Metrics[mTrivialNs].Median, row.Metrics[mXTrivial].Median)
		rows = append(rows, row)
	}
	return rows
}
