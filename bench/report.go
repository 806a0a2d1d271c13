package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of one harness run.
type Report struct {
	Command  string            `json:"command,omitempty"`
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Machine  Machine           `json:"machine"`
	Options  map[string]any    `json:"options"`
	Missing  map[string]string `json:"missing_systems,omitempty"`
	Rows     []Row             `json:"rows"`
	Ratios   []Ratio           `json:"ratios"`
	Targets  []targetResult    `json:"targets"`
}

// Ratio is edgegate's figure over the best peer's (nginx or HAProxy) on a
// scenario's primary metric, both measured in the same run.
type Ratio struct {
	Scenario     string  `json:"scenario"`
	Variant      string  `json:"variant,omitempty"`
	Metric       string  `json:"metric"`
	HigherBetter bool    `json:"higher_is_better"`
	Edgegate     float64 `json:"edgegate"`
	BestPeer     string  `json:"best_peer"`
	Peer         float64 `json:"peer"`
	Ratio        float64 `json:"ratio"`
}

func reportOptions(o Options) map[string]any {
	return map[string]any{
		"quick": o.Quick, "duration": o.Duration.String(), "warmup": o.Warmup.String(),
		"reps": o.Reps, "concurrency": o.Concurrency, "idle_conns": o.IdleConns,
		"pinned": !o.NoPin, "profile": o.Profile, "syscalls": o.Syscalls,
	}
}

// group is the rows of one scenario variant.
type group struct {
	sc      *scenario
	variant string
	rows    []Row
}

func (r *Report) groups() []group {
	var gs []group
	for _, row := range r.Rows {
		if n := len(gs); n > 0 && gs[n-1].sc.name == row.Scenario && gs[n-1].variant == row.Variant {
			gs[n-1].rows = append(gs[n-1].rows, row)
			continue
		}
		gs = append(gs, group{sc: findScenario(row.Scenario), variant: row.Variant, rows: []Row{row}})
	}
	return gs
}

// bestPeer returns the peer row with the best primary metric among rows
// that are results.
func (g group) bestPeer() (Row, bool) { return g.bestPeerOn(g.sc.primary) }

// bestPeerOn is bestPeer on any metric; lower is better for the metrics
// the scenario ranks lower-is-better, and for per-connection costs.
func (g group) bestPeerOn(metric string) (Row, bool) {
	higher := g.sc.higherBetter
	if metric != g.sc.primary {
		higher = !slices.Contains([]string{mCPUPerKOp, mCPUPerGiB, mKiBPerConn, mFDPerConn, mNsPerPkt}, metric)
	}
	var best Row
	found := false
	for _, row := range g.rows {
		v, ok := row.Metrics[metric]
		if !slices.Contains(peers, row.System) || row.Status != statusOK || !ok {
			continue
		}
		b := best.Metrics[metric].Median
		if !found || (higher && v.Median > b) || (!higher && v.Median < b) {
			best, found = row, true
		}
	}
	return best, found
}

func (r *Report) computeRatios() {
	r.Ratios = nil
	for _, g := range r.groups() {
		peer, ok := g.bestPeer()
		if !ok {
			continue
		}
		for _, row := range g.rows {
			v, has := row.Metrics[g.sc.primary]
			if row.System != sysEdgegate || row.Status != statusOK || !has {
				continue
			}
			p := peer.Metrics[g.sc.primary].Median
			if p == 0 {
				continue
			}
			r.Ratios = append(r.Ratios, Ratio{
				Scenario: g.sc.name, Variant: g.variant, Metric: g.sc.primary, HigherBetter: g.sc.higherBetter,
				Edgegate: v.Median, BestPeer: peer.System, Peer: p, Ratio: v.Median / p,
			})
		}
	}
}

// write writes report.md, results.json and chart.svg into dir.
func (r *Report) write(dir string) error {
	r.computeRatios()
	r.Targets = r.checkTargets()
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"results.json": append(j, '\n'),
		"report.md":    []byte(r.Markdown()),
		"chart.svg":    []byte(r.SVG()),
	}
	for _, g := range r.groups() {
		if svg := fitSVG(g); svg != "" {
			files[fitChartName(g)] = []byte(svg)
		}
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

func formatStat(c column, s Stat) string {
	scale := c.scale
	if scale == 0 {
		scale = 1
	}
	v := fmt.Sprintf(c.format, s.Median*scale)
	if s.N > 1 && s.Median != 0 {
		v += fmt.Sprintf(" ±%.0f%%", s.Spread()*50)
	}
	return v
}

// Markdown renders the report: machine, ratios, then one table per
// scenario variant with medians and the half-range of the repetitions.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# edgegate-bench results")
	w("")
	if r.Command != "" {
		w("Command: `%s`  ", r.Command)
	}
	w("Run: %s to %s (UTC)", r.Started.Format("2006-01-02 15:04:05"), r.Finished.Format("15:04:05"))
	w("")
	w("| machine | |")
	w("| --- | --- |")
	m := r.Machine
	for _, kv := range [][2]string{
		{"CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores)}, {"kernel", m.Kernel}, {"Go", m.Go},
		{"nginx", m.Nginx}, {"HAProxy", m.HAProxy}, {"OpenSSL", m.OpenSSL}, {"edgegate", m.Edgegate}, {"commit", m.Commit},
	} {
		w("| %s | %s |", kv[0], strings.ReplaceAll(kv[1], "|", "/"))
	}
	w("")
	w("Options: %s", formatOptions(r.Options))
	w("")
	if pinned, _ := r.Options["pinned"].(bool); pinned {
		w("Each system under test runs with one worker/thread pinned to CPU 0; the load generator and the")
		w("upstreams run pinned to CPU 1. Values are medians over the repetitions, ± half their range.")
	} else {
		w("Each system under test runs with one worker/thread, not pinned (--no-pin): it shares the cores")
		w("with the load generator and the upstreams, so rates and latencies depend on the scheduler; CPU per")
		w("operation stays comparable. Values are medians over the repetitions, ± half their range.")
	}
	w("CPU is the system's own CPU time (all its processes, from /proc) per 1,000 operations. A row is a")
	w("result when the system's core was saturated or its CPU time was measurable; `direct` is the client")
	w("talking to the upstream itself (no gateway) and `gotls` a bare crypto/tls server doing the mtls job.")
	w("")
	if len(r.Missing) > 0 {
		w("Missing systems:")
		for _, s := range AllSystems {
			if why, ok := r.Missing[s]; ok {
				w("- %s: %s", s, why)
			}
		}
		w("")
	}
	if len(r.Ratios) > 0 {
		w("## edgegate ÷ best peer (nginx, HAProxy), same run")
		w("")
		w("| scenario | variant | metric | edgegate | best peer | ratio |")
		w("| --- | --- | --- | --- | --- | --- |")
		for _, q := range r.Ratios {
			dir := "higher is better"
			if !q.HigherBetter {
				dir = "lower is better"
			}
			w("| %s | %s | %s (%s) | %.4g | %s %.4g | **%.2f** |", q.Scenario, q.Variant, q.Metric, dir, q.Edgegate, q.BestPeer, q.Peer, q.Ratio)
		}
		w("")
		w("![ratios against the best peer](chart.svg)")
		w("")
	}
	if len(r.Targets) > 0 {
		w("## Targets (issues 5, 11 and 12)")
		w("")
		w("| target | edgegate ÷ reference | reference | met |")
		w("| --- | --- | --- | --- |")
		for _, t := range r.Targets {
			w("%s", t.String())
		}
		w("")
	}
	for _, g := range r.groups() {
		title := g.sc.name
		if g.variant != "" {
			title += " / " + g.variant
		}
		w("## %s", title)
		w("")
		w("%s.", g.sc.about)
		w("")
		hdr := "| system | status |"
		sep := "| --- | --- |"
		for _, c := range g.sc.columns {
			hdr += " " + c.header + " |"
			sep += " --- |"
		}
		w("%s notes |", hdr)
		w("%s --- |", sep)
		for _, row := range g.rows {
			line := fmt.Sprintf("| %s | %s |", row.System, row.Status)
			for _, c := range g.sc.columns {
				if s, ok := row.Metrics[c.key]; ok {
					line += " " + formatStat(c, s) + " |"
				} else {
					line += " – |"
				}
			}
			note := row.Note
			if row.FirstError != "" {
				note = strings.TrimSpace(note + fmt.Sprintf(" (%d failed ops; first: %s)", row.Failed, row.FirstError))
			}
			w("%s %s |", line, strings.ReplaceAll(note, "|", "/"))
		}
		w("")
		if t := syscallTable(g); t != "" {
			w("%s", t)
		}
		if t := fitTable(g); t != "" {
			w("%s", t)
			w("![memory against idle connections](%s)", fitChartName(g))
			w("")
		}
	}
	return b.String()
}

func formatOptions(o map[string]any) string {
	var keys []string
	for k := range o {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, o[k]))
	}
	return strings.Join(parts, ", ")
}

// Summary is a short plain-text digest for the terminal: the ratios, the
// rows that are not results, and where the full report is.
func (r *Report) Summary() string {
	var b strings.Builder
	for _, q := range r.Ratios {
		v := q.Scenario
		if q.Variant != "" {
			v += "/" + q.Variant
		}
		fmt.Fprintf(&b, "%-45s edgegate %.4g vs %s %.4g %s: ratio %.2f\n", v, q.Edgegate, q.BestPeer, q.Peer, q.Metric, q.Ratio)
	}
	for _, row := range r.Rows {
		if row.Status == statusOK || row.Status == statusBaseline {
			continue
		}
		fmt.Fprintf(&b, "%s/%s %s: %s %s\n", row.Scenario, row.Variant, row.System, row.Status, row.Note)
	}
	for _, g := range r.groups() {
		for _, t := range []string{syscallTable(g), fitTable(g)} {
			if t != "" {
				fmt.Fprintf(&b, "\n%s / %s\n\n%s", g.sc.name, g.variant, t)
			}
		}
	}
	return b.String()
}
