package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Stat summarises one metric over the repetitions of a row.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Spread is the range of the repetitions as a fraction of the median.
func (s Stat) Spread() float64 {
	if s.Median == 0 {
		return 0
	}
	return (s.Max - s.Min) / s.Median
}

func statOf(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Metric keys of Row.Metrics.
const (
	mRate      = "rate"           // operations per second, closed loop
	mCPUPerKOp = "cpu_ms_per_kop" // system CPU ms per 1,000 operations
	mCoreShare = "core_share"     // fraction of its one core the system used
	// mPerCoreSec is operations per second of the system's CPU time: the
	// rate the system would reach on a whole core. It is what ratios
	// compare, because on two cores the load generator often caps the
	// measured rate before the system's core is full.
	mPerCoreSec = "ops_per_core_s"
	mP50        = "p50_ms" // open-loop latency
	mP99        = "p99_ms"
	// mCPUAtRate is the system's CPU µs per operation during the
	// open-loop latency run: every system gets the same offered rate
	// there, below every system's capacity, so it compares the cost per
	// operation at one partial load, where the closed loop compares each
	// system at whatever load the load generator reaches against it.
	mCPUAtRate = "cpu_us_per_op_at_rate"
	mAddedP50  = "added_p50_ms" // over direct in the same run
	mAddedP99  = "added_p99_ms"
	mLegitRate = "legit_rate" // legitimate operations per second during a flood
	// The legitimate clients' baselines, measured in each repetition
	// against the same system: mLegitAlone with no flood at all,
	// mLegitBallast with the same flood sent elsewhere (ballast: it keeps
	// the load generator as busy). mLegitPct is the rate during the flood
	// as a percentage of the fair baseline (ballast where there is one,
	// else alone), mLegitPctAlone of the rate alone: medians of the
	// repetitions' ratios.
	mLegitAlone    = "legit_alone_rate"
	mLegitBallast  = "legit_ballast_rate"
	mLegitPct      = "legit_pct_of_baseline"
	mLegitPctAlone = "legit_pct_of_alone"
	// Where the CPU went in each window of the legitimate clients: the
	// system's share of its core, and the load generator's core busy
	// (interrupts and softirqs included).
	mSysShareFlood   = "system_share_legit_flood"
	mSysShareAlone   = "system_share_legit_alone"
	mSysShareBallast = "system_share_legit_ballast"
	mLoadBusyFlood   = "load_cpu_busy_legit_flood"
	mLoadBusyAlone   = "load_cpu_busy_legit_alone"
	mLoadBusyBallast = "load_cpu_busy_legit_ballast"
	mResumed         = "resumed" // fraction of handshakes that resumed
	mMiBs            = "mib_s"   // bulk throughput, both directions together
	mCPUPerGiB       = "cpu_s_per_gib"
	mKiBPerConn      = "kib_per_conn" // Pss per idle connection
	mFDPerConn       = "fds_per_conn"
	mConns           = "conns"
	// mOthersSys and mOthersLoad are the shares of the system's and the
	// load generator's cores that other processes took during the
	// repetitions: a busy machine, not a property of the system.
	mOthersSys  = "others_on_system_cpu"
	mOthersLoad = "others_on_load_cpu"
	// mLoadBusy is the load generator's CPU busy (every process, and
	// interrupts and softirqs) in a stream's repetitions: at 100% the
	// load generator, not the system, bounds the throughput.
	mLoadBusy = "load_cpu_busy"
	mNsPerPkt = "ns_per_pkt"
	// mCacheHit is the share (percent) of edgegate's chain lookups that
	// its verified-chain cache answered over the row; mLegitCacheHit the
	// share of the legitimate client's handshakes it answered during a
	// hostile flood.
	mCacheHit      = "chain_cache_hit_pct"
	mLegitCacheHit = "legit_chain_cache_hit_pct"
)

// Row statuses.
const (
	statusOK        = "ok"           // saturated or cost measured
	statusBaseline  = "baseline"     // direct: nothing to charge CPU to
	statusNoResult  = "not a result" // neither saturated nor measured
	statusFailed    = "failed"       // ran but did not do the job
	statusMissing   = "missing"      // not installed or not built
	statusNotApplic = "n/a"
)

// Row is one system in one scenario (and variant).
type Row struct {
	Scenario   string          `json:"scenario"`
	Variant    string          `json:"variant,omitempty"`
	System     string          `json:"system"`
	Status     string          `json:"status"`
	Note       string          `json:"note,omitempty"`
	Metrics    map[string]Stat `json:"metrics,omitempty"`
	OK         int64           `json:"ok_ops"` // in the measured repetitions
	Failed     int64           `json:"failed_ops"`
	FirstError string          `json:"first_error,omitempty"`
	// Syscalls, with --syscalls, are the system calls per connection
	// counted under strace after the measured repetitions.
	Syscalls *Syscalls `json:"syscalls,omitempty"`
	// Fit is idle-connections' memory against connections, fitted and
	// projected.
	Fit *IdleFit `json:"idle_fit,omitempty"`
}

// minTicks is how much system CPU time (in clock ticks, 10 ms each) a row
// needs before its cost per operation counts as measured: at 50 ticks the
// tick granularity is 2%.
const minTicks = 50

// saturated is the core share above which the system, not the load
// generator, limited the rate.
const saturated = 0.9

// measureCfg says how to load a system in one row.
type measureCfg struct {
	label string
	conc  int
	ops   func(i int) op
	// latencyRate, when set, adds an open-loop run at that rate per
	// repetition for p50/p99.
	latencyRate float64
	// legit, when set, adds to each repetition a second run of the same
	// load with legitConc legitimate clients beside it, whose rate is
	// reported as legit_rate. The CPU figures come from the first run.
	legit     func(i int) op
	legitConc int
	// legitAlone, with legit, adds to each repetition a run of the
	// legitimate clients alone: the no-flood baseline of legit_rate.
	// ballast, when set, adds one more, with the main load's rate of
	// ballast operations beside them: a baseline with the load generator
	// as busy as during the flood.
	legitAlone bool
	ballast    func(i int) op
	// legitWindow, when set, is called with true right before each run
	// with legitimate clients and with false once it has ended.
	legitWindow func(open bool)
	// floodRate, when set, replaces the closed loop by an open loop at
	// that many operations per second, with conc workers: every system
	// gets the same offered load, however fast it turns it away.
	floodRate float64
	// flood, when set with floodRate, runs each open loop of the main
	// load for dur in another process (see floodInChild), or of the
	// ballast when toBallast; ops then only gives the first operation,
	// the sanity check.
	flood func(ctx context.Context, toBallast bool, dur time.Duration, window func(open bool)) loopResult
	// beforeReps, when set, runs after the warm-up, right before the
	// repetitions, to reset counters the ops keep.
	beforeReps func()
}

func makeOps(n int, f func(i int) op) []op {
	ops := make([]op, n)
	for i := range ops {
		ops[i] = f(i)
	}
	return ops
}

// measure runs a sanity operation, a warm-up and the repetitions against r
// and fills row from them.
func (h *harness) measure(ctx context.Context, r *running, row *Row, m measureCfg) {
	check := m.ops(-1)
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := check(cctx)
	cancel()
	if err != nil {
		row.Status = statusFailed
		row.Note = "first operation failed: " + err.Error()
		h.progress("  %s: %s", m.label, row.Note)
		return
	}
	var ops []op
	if m.flood == nil {
		ops = makeOps(m.conc, m.ops)
	}
	if m.flood != nil {
		m.flood(ctx, false, h.opts.Warmup, nil)
	} else if m.floodRate > 0 {
		openLoop(ctx, m.floodRate, h.opts.Warmup, ops, nil)
	} else {
		closedLoop(ctx, m.conc, h.opts.Warmup, ops, nil)
	}

	if m.beforeReps != nil {
		m.beforeReps()
	}
	var oks int64
	var rates, cpus, shares, perCore, p50s, p99s, atRate, legits, othersSys, othersLoad []float64
	var during, alone, ballast legitRuns
	var legitPcts, legitPctsAlone []float64
	var totalTicks uint64
	var failed int64
	var firstErr error
	for rep := 1; rep <= h.opts.Reps && ctx.Err() == nil; rep++ {
		span := cpuSpan{pid: r.pid}
		window := span.window
		noise := startInterference(r.pid, !h.opts.NoPin)
		load := func(window func(bool)) loopResult {
			if m.flood != nil {
				return m.flood(ctx, false, h.opts.Duration, window)
			}
			if m.floodRate > 0 {
				return openLoop(ctx, m.floodRate, h.opts.Duration, ops, window)
			}
			return closedLoop(ctx, m.conc, h.opts.Duration, ops, window)
		}
		// The CPU window covers the main load alone, so its cost per
		// operation does not depend on how much legitimate work a
		// system let through.
		res := load(window)
		var legit loopResult
		if m.legit != nil {
			// Then the same load again with legitimate clients beside
			// it, for their goodput.
			if m.legitWindow != nil {
				m.legitWindow(true)
			}
			legit = during.run(ctx, h, r, m, load)
			if m.legitWindow != nil {
				m.legitWindow(false)
			}
			// And the baselines, in the same repetition.
			if m.legitAlone {
				alone.run(ctx, h, r, m, nil)
				if m.ballast != nil {
					ballast.run(ctx, h, r, m, func(func(bool)) loopResult {
						if m.flood != nil {
							return m.flood(ctx, true, h.opts.Duration, nil)
						}
						return openLoop(ctx, m.floodRate, h.opts.Duration, makeOps(m.conc, m.ballast), nil)
					})
				}
				base := alone
				if m.ballast != nil {
					base = ballast
				}
				if b := base.lastRate(); b > 0 {
					legitPcts = append(legitPcts, legit.rate()/b*100)
				}
				if b := alone.lastRate(); b > 0 {
					legitPctsAlone = append(legitPctsAlone, legit.rate()/b*100)
				}
			}
		}
		failed += res.failed + during.failed + alone.failed + ballast.failed
		oks += res.ok
		if firstErr == nil {
			firstErr = res.firstErr
			if firstErr == nil {
				firstErr = legit.firstErr
			}
		}
		oSys, oLoad := noise.others(r.pid)
		othersSys, othersLoad = append(othersSys, oSys), append(othersLoad, oLoad)
		rates = append(rates, res.rate())
		line := fmt.Sprintf("  %s rep %d/%d: %.0f ops/s", m.label, rep, h.opts.Reps, res.rate())
		if m.legit != nil {
			legits = append(legits, legit.rate())
			line += ", legit " + during.last()
			if len(alone.rates) > 0 {
				line += "; no flood " + alone.last()
			}
			if len(ballast.rates) > 0 {
				line += "; flood elsewhere " + ballast.last()
			}
		}
		if r.pid != 0 && span.t1 >= span.t0 {
			ticks := span.t1 - span.t0
			totalTicks += ticks
			sec := float64(ticks) / clockTicks
			share := sec / span.w1.Sub(span.w0).Seconds()
			shares = append(shares, share)
			if res.ok > 0 && ticks > 0 {
				cpus = append(cpus, sec*1000/float64(res.ok)*1000)
				perCore = append(perCore, float64(res.ok)/sec)
			}
			line += fmt.Sprintf(", system CPU %.0f%% of a core", share*100)
		}
		if res.failed > 0 {
			line += fmt.Sprintf(", %d failed", res.failed)
		}
		if oSys > busyMachine || oLoad > busyMachine {
			line += fmt.Sprintf(" [machine busy: others took %.0f%% of CPU %d, %.0f%% of CPU %d]", oSys*100, systemCPU, oLoad*100, loadCPU)
		}
		if m.latencyRate > 0 {
			latSpan := cpuSpan{pid: r.pid}
			lat := openLoop(ctx, m.latencyRate, h.opts.Duration, makeOps(min(128, m.conc*4), m.ops), latSpan.window)
			failed += lat.failed
			if lat.ok > 0 {
				p50s = append(p50s, ms(percentile(lat.latencies, 0.50)))
				p99s = append(p99s, ms(percentile(lat.latencies, 0.99)))
				line += fmt.Sprintf(", at %.0f/s p50 %.2f ms p99 %.2f ms", m.latencyRate, p50s[len(p50s)-1], p99s[len(p99s)-1])
				if latSpan.t1 > latSpan.t0 {
					us := float64(latSpan.t1-latSpan.t0) / clockTicks * 1e6 / float64(lat.ok)
					atRate = append(atRate, us)
					line += fmt.Sprintf(", %.0f µs CPU each", us)
				}
			}
			if lat.dropped > 0 {
				line += fmt.Sprintf(" (%d arrivals dropped)", lat.dropped)
			}
		}
		h.progress("%s", line)
	}
	row.Metrics = map[string]Stat{mRate: statOf(rates)}
	if len(cpus) > 0 {
		row.Metrics[mCPUPerKOp] = statOf(cpus)
		row.Metrics[mPerCoreSec] = statOf(perCore)
	}
	if len(shares) > 0 {
		row.Metrics[mCoreShare] = statOf(shares)
	}
	if len(p50s) > 0 {
		row.Metrics[mP50] = statOf(p50s)
		row.Metrics[mP99] = statOf(p99s)
	}
	if len(atRate) > 0 {
		row.Metrics[mCPUAtRate] = statOf(atRate)
	}
	if len(legits) > 0 {
		row.Metrics[mLegitRate] = statOf(legits)
	}
	during.put(row.Metrics, "", mSysShareFlood, mLoadBusyFlood)
	alone.put(row.Metrics, mLegitAlone, mSysShareAlone, mLoadBusyAlone)
	ballast.put(row.Metrics, mLegitBallast, mSysShareBallast, mLoadBusyBallast)
	if len(legitPcts) > 0 {
		row.Metrics[mLegitPct] = statOf(legitPcts)
		row.Metrics[mLegitPctAlone] = statOf(legitPctsAlone)
	}
	row.Metrics[mOthersSys], row.Metrics[mOthersLoad] = statOf(othersSys), statOf(othersLoad)
	row.Failed = failed
	row.OK = oks
	if firstErr != nil {
		row.FirstError = firstErr.Error()
	}
	row.Status = judge(r, row.Metrics, totalTicks)
	row.Note = busyNote(row.Metrics)
	if total := statOf(rates).Median * h.opts.Duration.Seconds() * float64(len(rates)); failed > 0 && float64(failed) > 0.01*total {
		row.Note = strings.TrimSpace(row.Note + fmt.Sprintf(" %d operations failed (more than 1%%)", failed))
	}
}

// legitRuns collects one kind of window of the legitimate clients over the
// repetitions: their rate, the system's share of its core and the load
// CPU's busy share.
type legitRuns struct {
	rates, sys, load []float64
	failed           int64
}

// run runs m's legitimate clients for one duration, with load (the main
// load, or ballast, or nothing when nil) beside them, and records it.
func (l *legitRuns) run(ctx context.Context, h *harness, r *running, m measureCfg, load func(func(bool)) loopResult) loopResult {
	cw := startCPUWindow(r.pid)
	var wg sync.WaitGroup
	var legit loopResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		legit = closedLoop(ctx, m.legitConc, h.opts.Duration, makeOps(m.legitConc, m.legit), nil)
	}()
	if load != nil {
		load(nil)
	}
	wg.Wait()
	sys, ld := cw.shares(r.pid)
	l.rates, l.sys, l.load = append(l.rates, legit.rate()), append(l.sys, sys), append(l.load, ld)
	l.failed += legit.failed
	return legit
}

func (l *legitRuns) lastRate() float64 {
	if len(l.rates) == 0 {
		return 0
	}
	return l.rates[len(l.rates)-1]
}

// last describes the latest window for the progress line.
func (l *legitRuns) last() string {
	i := len(l.rates) - 1
	return fmt.Sprintf("%.0f/s (system %.0f%%, load CPU %.0f%% busy)", l.rates[i], l.sys[i]*100, l.load[i]*100)
}

// put stores the medians under the given keys; an empty rate key skips
// the rate.
func (l *legitRuns) put(m map[string]Stat, rate, sys, load string) {
	if len(l.rates) == 0 {
		return
	}
	if rate != "" {
		m[rate] = statOf(l.rates)
	}
	m[sys], m[load] = statOf(l.sys), statOf(l.load)
}

// cpuWindow samples, over a window, the system's CPU time and the load
// generator's core's busy time.
type cpuWindow struct {
	sut, load uint64
	at        time.Time
}

func startCPUWindow(sutPID int) cpuWindow {
	w := cpuWindow{load: cpuAllBusy(loadCPU), at: time.Now()}
	if sutPID != 0 {
		w.sut = cpuTicks(sutPID)
	}
	return w
}

// shares returns the system's share of one core and the load CPU's busy
// share since the window started.
func (w cpuWindow) shares(sutPID int) (sys, load float64) {
	el := time.Since(w.at).Seconds() * clockTicks
	if el <= 0 {
		return 0, 0
	}
	if sutPID != 0 {
		sys = float64(cpuTicks(sutPID)-w.sut) / el
	}
	return sys, float64(cpuAllBusy(loadCPU)-w.load) / el
}

// busyMachine is the share of a core taken by other processes above which a
// repetition is flagged: its figures are disturbed.
const busyMachine = 0.10

func busyNote(m map[string]Stat) string {
	s, l := m[mOthersSys].Max, m[mOthersLoad].Max
	if s <= busyMachine && l <= busyMachine {
		return ""
	}
	return fmt.Sprintf("machine busy: other processes took up to %.0f%% of the system's CPU and %.0f%% of the load generator's", s*100, l*100)
}

// judge decides whether a row is a result: the system's core was
// saturated, or enough CPU time was seen to divide by the operations.
func judge(r *running, metrics map[string]Stat, ticks uint64) string {
	if r.direct {
		return statusBaseline
	}
	if metrics[mCoreShare].Median >= saturated || ticks >= minTicks {
		return statusOK
	}
	return statusNoResult
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuSpan is a process's CPU ticks and the wall clock when a load's
// measured window opens and closes; window is the loops' window callback.
// A span of process 0 (no process of its own, as direct) stays zero.
type cpuSpan struct {
	pid    int
	t0, t1 uint64
	w0, w1 time.Time
}

func (s *cpuSpan) window(open bool) {
	if s.pid == 0 {
		return
	}
	if open {
		s.t0, s.w0 = cpuTicks(s.pid), time.Now()
	} else {
		s.t1, s.w1 = cpuTicks(s.pid), time.Now()
	}
}
