package bench

import (
	"context"
	"slices"
	"strings"
)

// column is one column of a scenario's table.
type column struct {
	key    string // Row.Metrics key
	header string
	format string  // fmt verb for the median
	scale  float64 // multiplies the value for display; 0 means 1
}

// scenario is one of the jobs the harness measures.
type scenario struct {
	name  string
	about string
	// primary is the metric ratios are taken on; higherBetter says which
	// way is better.
	primary      string
	higherBetter bool
	columns      []column
	run          func(ctx context.Context, h *harness, sc *scenario) []Row
}

var (
	colRate      = column{mRate, "ops/s", "%.0f", 1}
	colCPU       = column{mCPUPerKOp, "CPU ms / 1k ops", "%.1f", 1}
	colPerCore   = column{mPerCoreSec, "ops per core-second", "%.0f", 1}
	colShare     = column{mCoreShare, "core used", "%.0f%%", 100}
	colP50       = column{mP50, "p50 ms", "%.2f", 1}
	colP99       = column{mP99, "p99 ms", "%.2f", 1}
	colCPUAtRate = column{mCPUAtRate, "CPU µs / op at the p50 run's fixed rate", "%.0f", 1}
	colAddedP50  = column{mAddedP50, "+p50 ms vs direct", "%.2f", 1}
	colAddedP99  = column{mAddedP99, "+p99 ms vs direct", "%.2f", 1}
	colLegit     = column{mLegitRate, "legit ops/s during flood", "%.0f", 1}
	colLegitNone = column{mLegitAlone, "legit ops/s, no flood", "%.0f", 1}
	colLegitBal  = column{mLegitBallast, "legit ops/s, flood at a neighbour port", "%.0f", 1}
	colLegitPct  = column{mLegitPct, "legit during flood ÷ baseline", "%.0f%%", 1}
	colResumed   = column{mResumed, "resumed", "%.0f%%", 1}
	colSilent    = column{mSilent, "dropped silently", "%.0f%%", 1}
	colMiBs      = column{mMiBs, "MiB/s (both ways)", "%.0f", 1}
	colCPUPerGiB = column{mCPUPerGiB, "CPU s / GiB", "%.2f", 1}
	colLoadBusy  = column{mLoadBusy, "load CPU busy", "%.0f%%", 100}
	colKiB       = column{mKiBPerConn, "KiB / conn (Pss)", "%.1f", 1}
	colFD        = column{mFDPerConn, "fds / conn", "%.2f", 1}
	colConns     = column{mConns, "idle conns", "%.0f", 1}
	colCacheHit  = column{mCacheHit, "chain cache hits", "%.1f%%", 1}
	colLegitHit  = column{mLegitCacheHit, "legit chain cache hits during flood", "%.1f%%", 1}
	colNs        = column{mNsPerPkt, "ns / packet", "%.1f", 1}
	colTrivialNs = column{mTrivialNs, "trivial program ns / packet", "%.1f", 1}
	colXTrivial  = column{mXTrivial, "× trivial", "%.2f", 1}
)

// scenarios lists the scenarios in the order of issue 5, with issue 12's
// mtls-hostile and mtls-bulk after the other mtls ones.
var scenarios = []*scenario{
	{
		name:         "passthrough-connect",
		about:        "new connection, captured ClientHello, upstream's fixed reply, close",
		primary:      mPerCoreSec,
		higherBetter: true,
		columns:      []column{colPerCore, colRate, colCPU, colShare, colP50, colP99, colCPUAtRate, colAddedP50, colAddedP99},
		run:          runPassthroughConnect,
	},
	{
		name:         "passthrough-bulk",
		about:        "one long passthrough stream each way",
		primary:      mCPUPerGiB,
		higherBetter: false,
		columns:      []column{colMiBs, colCPUPerGiB, colShare, colLoadBusy},
		run:          runPassthroughBulk,
	},
	{
		name:         "mtls-full",
		about:        "TLS 1.3 full handshake with a client certificate, one request, close",
		primary:      mPerCoreSec,
		higherBetter: true,
		columns:      []column{colPerCore, colRate, colCPU, colShare, colCacheHit, colP50, colP99, colCPUAtRate, colAddedP50, colAddedP99},
		run:          runMTLSFull,
	},
	{
		name:         "mtls-resumed",
		about:        "the same with TLS 1.3 session resumption",
		primary:      mPerCoreSec,
		higherBetter: true,
		columns:      []column{colPerCore, colRate, colCPU, colShare, colResumed, colCacheHit, colP50, colP99, colCPUAtRate, colAddedP50, colAddedP99},
		run:          runMTLSResumed,
	},
	{
		name:         "mtls-reject",
		about:        "clients without a certificate, and legitimate clients during that flood",
		primary:      mCPUPerKOp,
		higherBetter: false,
		columns:      []column{colRate, colCPU, colShare, colLegit},
		run:          runMTLSReject,
	},
	{
		name:         "mtls-hostile",
		about:        "a client presenting a chain never seen before on every handshake (the Cloudflare-shaped leaf, or one from a forged CA with the same name, plus a fresh throwaway certificate), and the legitimate client during that flood; CPU ms / 1k ops is µs per handshake",
		primary:      mCPUPerKOp,
		higherBetter: false,
		columns:      []column{colRate, colCPU, colShare, colCacheHit, colLegit, colLegitHit},
		run:          runMTLSHostile,
	},
	{
		name:         "mtls-bulk",
		about:        "one long terminated stream each way (client ↔ system with TLS 1.3 ↔ cleartext upstream)",
		primary:      mCPUPerGiB,
		higherBetter: false,
		columns:      []column{colMiBs, colCPUPerGiB, colShare, colLoadBusy},
		run:          runMTLSBulk,
	},
	{
		name:         "not-tls-flood",
		about:        "3,000 plain-text connections/s to the TLS port, and legitimate clients during that flood and, in the same repetition, without it; CPU ms / 1k ops is edgegate's CPU per 1,000 flood connections",
		primary:      mCPUPerKOp,
		higherBetter: false,
		columns:      []column{colRate, colCPU, colShare, colSilent, colLegit, colLegitNone, colLegitBal, colLegitPct},
		run:          runNotTLSFlood,
	},
	{
		name:         "idle-connections",
		about:        "idle connections held open at several counts: memory and descriptors per connection at the largest, memory fitted against the count",
		primary:      mKiBPerConn,
		higherBetter: false,
		columns:      []column{colConns, colKiB, colFD},
		run:          runIdleConnections,
	},
	{
		name:         "bpf-program",
		about:        "nanoseconds per packet for each verdict of the eBPF guard (XDP and TC entry points) against a trivial program of the same type and the reference program (the same header parsing and one hash lookup)",
		primary:      mNsPerPkt,
		higherBetter: false,
		columns:      []column{colNs, colTrivialNs, colXTrivial},
		run:          runBPFProgram,
	},
}

func findScenario(name string) *scenario {
	for _, s := range scenarios {
		if s.name == name {
			return s
		}
	}
	return nil
}

func scenarioNames() []string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.name)
	}
	return n
}

// eachSystem runs body against every selected system of systems, each
// started fresh for the job f, and returns one row per system; systems that
// are missing or fail to start get a row saying so.
func (h *harness) eachSystem(ctx context.Context, sc *scenario, variant string, systems []string, f flavor, body func(r *running, row *Row)) []Row {
	var rows []Row
	for _, s := range AllSystems {
		if !slices.Contains(systems, s) || !h.selected(s) || ctx.Err() != nil {
			continue
		}
		row := Row{Scenario: sc.name, Variant: variant, System: s}
		if why, ok := h.missing[s]; ok {
			row.Status, row.Note = statusMissing, why
			rows = append(rows, row)
			continue
		}
		tag := sc.name
		if variant != "" {
			// Variants name chains and key shares in words; file
			// names get them without spaces or commas.
			tag += "-" + strings.NewReplacer(" ", "-", ",", "").Replace(variant)
		}
		r, err := h.start(ctx, s, f, tag)
		if err != nil {
			row.Status, row.Note = statusFailed, err.Error()
			h.progress("  %s: %s", s, row.Note)
			rows = append(rows, row)
			continue
		}
		body(r, &row)
		r.stop()
		if r.profile != "" {
			profileTop(ctx, r.profile)
		}
		rows = append(rows, row)
	}
	return rows
}

// addLatencyOverDirect fills the added-latency metrics of every row from the
// direct row of the same variant.
func addLatencyOverDirect(rows []Row) {
	var direct *Row
	for i := range rows {
		if rows[i].System == sysDirect && rows[i].Metrics != nil {
			direct = &rows[i]
		}
	}
	if direct == nil {
		return
	}
	for i := range rows {
		r := &rows[i]
		if r.System == sysDirect || r.Metrics == nil {
			continue
		}
		for _, k := range [][2]string{{mP50, mAddedP50}, {mP99, mAddedP99}} {
			s, ok := r.Metrics[k[0]]
			d, okD := direct.Metrics[k[0]]
			if ok && okD {
				// A difference of medians; the spreads stay in the
				// p50/p99 columns.
				r.Metrics[k[1]] = Stat{Median: s.Median - d.Median, Min: s.Median - d.Median, Max: s.Median - d.Median, N: 1}
			}
		}
	}
}
