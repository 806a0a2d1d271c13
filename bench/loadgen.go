package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// op performs one operation of a scenario (one connection, one handshake,
// one refusal) and returns nil when it ended the way the scenario expects.
// Each load-generator worker owns one op, so an op may keep per-worker state
// such as a TLS session cache.
type op func(ctx context.Context) error

// loopResult is what one run of the load generator measured.
type loopResult struct {
	ok, failed int64
	elapsed    time.Duration
	latencies  []time.Duration // of the successful operations
	firstErr   error
	dropped    int64 // open loop: arrivals that found the queue full
}

func (r loopResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// percentile returns the p-quantile (0..1) of the sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

// errRecorder keeps the first error an operation returned, for the report.
type errRecorder struct {
	once sync.Once
	err  error
}

func (e *errRecorder) record(err error) {
	e.once.Do(func() { e.err = err })
}

// closedLoop runs conc workers, each starting its next operation as soon as
// the previous one ends, for dur. Operations that end after dur are not
// counted. window is called with true right before the measured window
// opens and with false right as it closes, so the caller can sample the
// system's CPU time at exactly those moments.
func closedLoop(ctx context.Context, conc int, dur time.Duration, ops []op, window func(open bool)) loopResult {
	var (
		stop     atomic.Bool
		ok, fail atomic.Int64
		errs     errRecorder
		wg       sync.WaitGroup
		lats     = make([][]time.Duration, conc)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if window != nil {
		window(true)
	}
	start := time.Now()
	end := start.Add(dur)
	windowClosed := make(chan struct{})
	timer := time.AfterFunc(dur, func() {
		stop.Store(true)
		if window != nil {
			window(false)
		}
		close(windowClosed)
	})
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil {
				t0 := time.Now()
				err := ops[i](ctx)
				t1 := time.Now()
				if t1.After(end) {
					return
				}
				if err != nil {
					fail.Add(1)
					errs.record(err)
					continue
				}
				ok.Add(1)
				lats[i] = append(lats[i], t1.Sub(t0))
			}
		}()
	}
	// Workers stuck in an operation past the deadline hold the result back
	// only as long as their own operation timeout.
	wg.Wait()
	if timer.Stop() {
		// The context ended the run before the timer fired; close the
		// window now.
		if window != nil {
			window(false)
		}
	} else {
		// The timer fired: wait until its window sample is taken.
		<-windowClosed
	}
	elapsed := min(time.Since(start), dur)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	return loopResult{ok: ok.Load(), failed: fail.Load(), elapsed: elapsed, latencies: all, firstErr: errs.err}
}

// openLoop starts operations at a fixed rate for dur, whether or not earlier
// ones have finished, and measures each operation's latency from the moment
// it was due, so a slow system is charged for the queue it causes (no
// coordinated omission). At most len(ops) operations run at once; arrivals
// beyond a generous queue are dropped and counted.
//
// window, if set, is called as closedLoop's is: the window opens before the
// first arrival and closes when the last operation has ended, so the
// system's CPU time covers all the work those arrivals caused.
func openLoop(ctx context.Context, rate float64, dur time.Duration, ops []op, window func(open bool)) loopResult {
	var (
		ok, fail, dropped atomic.Int64
		errs              errRecorder
		wg                sync.WaitGroup
		mu                sync.Mutex
		all               []time.Duration
	)
	due := make(chan time.Time, 4096)
	for i := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for t := range due {
				err := ops[i](ctx)
				if err != nil {
					fail.Add(1)
					errs.record(err)
					continue
				}
				ok.Add(1)
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	interval := time.Duration(float64(time.Second) / rate)
	if window != nil {
		window(true)
	}
	start := time.Now()
	n := int64(dur / interval)
	for i := int64(0); i < n && ctx.Err() == nil; i++ {
		t := start.Add(time.Duration(i) * interval)
		if d := time.Until(t); d > 0 {
			time.Sleep(d)
		}
		select {
		case due <- t:
		default:
			dropped.Add(1)
		}
	}
	scheduled := time.Since(start)
	close(due)
	wg.Wait()
	if window != nil {
		window(false)
	}
	slices.Sort(all)
	return loopResult{ok: ok.Load(), failed: fail.Load(), elapsed: scheduled, latencies: all, firstErr: errs.err, dropped: dropped.Load()}
}
