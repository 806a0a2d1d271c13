package bench

import (
	"fmt"
	"strings"
)

// target is one of the goals of issues 5, 11 and 12, checked against a run: edgegate's
// figure for metric over the reference's (the best peer, or a named
// system) must be at least min (higher is better) or at most max. Against
// againstSelf, the metric is already a percentage of a baseline the same
// row measured, and the ratio is that percentage over 100.
type target struct {
	scenario, variant string
	metric            string
	against           string // "peers" or a system name
	min, max          float64
	text              string
}

var targets = []target{
	// Issue 12: on the Cloudflare-shaped chain.
	{"mtls-full", "cloudflare chain", mPerCoreSec, "peers", 3, 0, "mtls full handshakes ≥ 3× the best of nginx and HAProxy"},
	{"mtls-full", "cloudflare chain", mPerCoreSec, sysGoTLS, 1.3, 0, "mtls full handshakes ≥ 1.3× the bare crypto/tls server"},
	{"mtls-bulk", "*", mMiBs, "peers", 1, 0, "mtls bulk throughput ≥ the best peer"},
	{"mtls-bulk", "*", mCPUPerGiB, "peers", 0, 1, "mtls bulk CPU per GiB ≤ the best peer's"},
	// Issue 5, on the ECDSA test chain it was set on.
	{"mtls-full", "ECDSA test chain", mPerCoreSec, "peers", 2.5, 0, "mtls full handshakes ≥ 2.5× the best of nginx and HAProxy"},
	{"mtls-full", "ECDSA test chain", mPerCoreSec, sysGoTLS, 0.85, 0, "mtls full handshakes ≥ 85% of the bare crypto/tls server"},
	{"mtls-resumed", "*", mPerCoreSec, "peers", 1, 0, "mtls resumed handshakes ≥ the best peer"},
	{"passthrough-connect", "*", mPerCoreSec, "peers", 1, 0, "passthrough connections ≥ the best peer"},
	{"passthrough-connect", "*", mRate, sysDirect, 0.9, 0, "passthrough connections/s ≥ 90% of direct (same load generator)"},
	{"passthrough-bulk", "", mMiBs, sysDirect, 0.95, 0, "passthrough throughput ≥ 95% of direct"},
	{"idle-connections", "*", mKiBPerConn, sysHAProxy, 0, 1, "memory per idle connection ≤ HAProxy's"},
	{"idle-connections", "*", mFDPerConn, sysHAProxy, 0, 1, "descriptors per idle connection ≤ HAProxy's"},
	// Issue 11: behind the guard, a flood of plain-text connections
	// leaves legitimate clients their rate.
	{"not-tls-flood", "netns, eBPF guard", mLegitPct, againstSelf, 0.95, 0, "legit connections/s during the flood ≥ 95% of the no-flood figure (the same flood at a neighbour port)"},
}

// againstSelf is a target's reference when its metric is a percentage of
// a baseline in the same row (legit_pct_of_alone: the same clients
// without the flood, in the same repetitions).
const againstSelf = "no flood"

// targetResult is a target evaluated on one variant.
type targetResult struct {
	Target  string  `json:"target"`
	Variant string  `json:"variant,omitempty"`
	Ratio   float64 `json:"ratio"`
	Against string  `json:"against"`
	Met     bool    `json:"met"`
}

func (r *Report) checkTargets() []targetResult {
	var out []targetResult
	for _, g := range r.groups() {
		for _, t := range targets {
			if t.scenario != g.sc.name || (t.variant != "*" && t.variant != g.variant) {
				continue
			}
			var eg, ref *Row
			for i := range g.rows {
				row := &g.rows[i]
				// A percentage of the row's own baseline does not need
				// edgegate's CPU time: behind the guard the flood leaves
				// it too little to measure ("not a result").
				if row.System == sysEdgegate && (row.Status == statusOK || t.against == againstSelf && row.Status == statusNoResult) {
					eg = row
				}
				if t.against != "peers" && row.System == t.against && (row.Status == statusOK || row.Status == statusBaseline) {
					ref = row
				}
			}
			if t.against == "peers" {
				if p, ok := g.bestPeerOn(t.metric); ok {
					ref = &p
				}
			}
			if t.against == againstSelf {
				ref = eg
			}
			if eg == nil || ref == nil {
				continue
			}
			e, okE := eg.Metrics[t.metric]
			p, okP := ref.Metrics[t.metric]
			against := ref.System
			if t.against == againstSelf {
				p, okP, against = Stat{Median: 100}, true, againstSelf
			}
			if !okE || !okP || p.Median == 0 {
				continue
			}
			q := e.Median / p.Median
			met := (t.min > 0 && q >= t.min) || (t.max > 0 && q <= t.max)
			out = append(out, targetResult{Target: t.text, Variant: g.variant, Ratio: q, Against: against, Met: met})
		}
	}
	// The guard's verdicts against the trivial and the reference program.
	for _, row := range r.Rows {
		out = append(out, bpfTargets(row)...)
	}
	return out
}

// bpfTargets judges one bpf-program row, a verdict path such as
// "guard xdp/pass_syn": a SYN (pass_syn) costs at most maxSynXTrivial times
// the trivial program, and every verdict at most maxXReference times the
// reference program, which parses the same headers and does one hash lookup.
func bpfTargets(row Row) []targetResult {
	if row.Scenario != "bpf-program" || row.Status != statusOK {
		return nil
	}
	path := strings.TrimPrefix(row.System, "guard ")
	var out []targetResult
	if x, ok := row.Metrics[mXTrivial]; ok && strings.HasSuffix(path, "/pass_syn") {
		out = append(out, targetResult{Target: fmt.Sprintf("guard SYN within %g× the trivial program", float64(maxSynXTrivial)),
			Variant: path, Ratio: x.Median, Against: "trivial program", Met: x.Median <= maxSynXTrivial})
	}
	if x, ok := row.Metrics[mXReference]; ok {
		out = append(out, targetResult{Target: fmt.Sprintf("guard verdict within %g× the reference program", maxXReference),
			Variant: path, Ratio: x.Median, Against: "reference program", Met: x.Median <= maxXReference})
	}
	return out
}

func (t targetResult) String() string {
	mark := "no"
	if t.Met {
		mark = "yes"
	}
	v := ""
	if t.Variant != "" {
		v = " (" + t.Variant + ")"
	}
	return fmt.Sprintf("| %s%s | %.2f | %s | %s |", t.Target, v, t.Ratio, t.Against, mark)
}
