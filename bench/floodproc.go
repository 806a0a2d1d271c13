package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"time"
)

// not-tls-flood's flood runs in a child process: the harness binary
// re-executed with EDGEGATE_BENCH_CHILD=flood, one process per open loop
// (the warm-up, each repetition's flood, the flood beside the legitimate
// clients, the ballast). Its thousands of connections then have their own
// Go runtime (scheduler, garbage collector, timers) and the kernel shares
// the load generator's core between it and the harness, whose legitimate
// clients the scenario measures, rather than one runtime sharing it
// between the flood's goroutines and theirs. The child inherits the
// harness's CPU affinity, so it runs on the load generator's core as the
// flood did before.
const (
	floodAddrEnv     = "EDGEGATE_BENCH_FLOOD_ADDR"
	floodDurationEnv = "EDGEGATE_BENCH_FLOOD_DURATION"
)

// floodStarted is the line a flood child writes on its standard output as
// its open loop starts; its result follows as one JSON object.
const floodStarted = "started"

// floodChildResult is what a flood child reports when its loop has ended.
type floodChildResult struct {
	OK        int64  `json:"ok"`
	Failed    int64  `json:"failed"`
	Dropped   int64  `json:"dropped"`
	ElapsedNs int64  `json:"elapsed_ns"`
	Total     int64  `json:"total"`
	Silent    int64  `json:"silent"`
	FirstErr  string `json:"first_err,omitempty"`
}

// runFloodChild is the child's side: floodRate plain-text connections per
// second to the address in the environment, for the duration there.
func runFloodChild() error {
	addr := os.Getenv(floodAddrEnv)
	dur, err := time.ParseDuration(os.Getenv(floodDurationEnv))
	if err != nil || addr == "" {
		return fmt.Errorf("flood child: %s=%q, %s=%q", floodAddrEnv, addr, floodDurationEnv, os.Getenv(floodDurationEnv))
	}
	var total, silent atomic.Int64
	ops := makeOps(floodWorkers, floodOp(addr, &total, &silent))
	res := openLoop(context.Background(), floodRate, dur, ops, func(open bool) {
		if open {
			fmt.Println(floodStarted)
		}
	})
	out := floodChildResult{OK: res.ok, Failed: res.failed, Dropped: res.dropped, ElapsedNs: int64(res.elapsed),
		Total: total.Load(), Silent: silent.Load()}
	if res.firstErr != nil {
		out.FirstErr = res.firstErr.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// floodInChild runs one open loop of the flood against addr for dur in a
// child process and returns what it measured, adding its connection
// counts to total and silent. window, if set, is called with true when the
// child's loop starts and with false once it has ended, as openLoop calls
// it.
func floodInChild(ctx context.Context, addr string, dur time.Duration, total, silent *atomic.Int64, window func(open bool)) loopResult {
	fail := func(err error) loopResult {
		return loopResult{failed: 1, firstErr: fmt.Errorf("flood child: %w", err)}
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), childEnv+"=flood", floodAddrEnv+"="+addr, floodDurationEnv+"="+dur.String())
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	if err != nil || line != floodStarted+"\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return fail(fmt.Errorf("no start line (%q, %v)", line, err))
	}
	if window != nil {
		window(true)
	}
	var out floodChildResult
	decErr := json.NewDecoder(rd).Decode(&out)
	waitErr := cmd.Wait()
	if window != nil {
		window(false)
	}
	if err := errors.Join(decErr, waitErr); err != nil {
		return fail(err)
	}
	total.Add(out.Total)
	silent.Add(out.Silent)
	res := loopResult{ok: out.OK, failed: out.Failed, dropped: out.Dropped, elapsed: time.Duration(out.ElapsedNs)}
	if out.FirstErr != "" {
		res.firstErr = errors.New(out.FirstErr)
	}
	return res
}
