// Command edgegate-bench compares edgegate with nginx and HAProxy doing the
// same jobs on the same machine, and with two baselines (the client talking
// to the upstream directly, and a bare crypto/tls server).
//
//	edgegate-bench --quick                      # every scenario, a few seconds each
//	edgegate-bench --scenarios mtls-full --systems edgegate,nginx,gotls
//	edgegate-bench --quick --scenarios passthrough-connect --syscalls
//	edgegate-bench --scenarios idle-connections --idle-conns 1000,5000,9000
//
// It writes report.md, results.json, chart.svg, the generated configs and
// the systems' logs into --out (default bench/out/<timestamp>). Run it as
// root from the repository (it builds ./cmd/edgegate unless --edgegate is
// given).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/bench"
)

func main() {
	bench.RunChild()

	var (
		opts      bench.Options
		scenarios string
		systems   string
	)
	flag.BoolVar(&opts.Quick, "quick", false, "run every scenario for a few seconds (smoke test of the harness)")
	flag.StringVar(&opts.Out, "out", "", "output folder (default bench/out/<timestamp>)")
	flag.StringVar(&scenarios, "scenarios", "", "comma-separated scenarios (default all)")
	flag.StringVar(&systems, "systems", "", "comma-separated systems: "+strings.Join(bench.AllSystems, ",")+" (default all)")
	flag.DurationVar(&opts.Duration, "duration", 0, "one measured repetition (default 5s, quick 1s)")
	flag.DurationVar(&opts.Warmup, "warmup", 0, "warm-up before the repetitions (default 2s, quick 0.5s)")
	flag.IntVar(&opts.Reps, "reps", 0, "repetitions per row (default 5, quick 3)")
	flag.IntVar(&opts.Concurrency, "concurrency", 0, "closed-loop concurrency (default 32)")
	flag.Func("idle-conns", "comma-separated idle connection counts at which memory is measured and fitted (default 1000,5000,9000, quick 200,500,1000; at most 9500)", func(s string) error {
		for _, p := range splitList(s) {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 {
				return fmt.Errorf("%q is not a positive count", p)
			}
			opts.IdleConns = append(opts.IdleConns, n)
		}
		return nil
	})
	flag.BoolVar(&opts.Profile, "profile", false, "write CPU profiles of gotls and edgegate (EDGEGATE_CPUPROFILE) into OUT/profiles")
	flag.BoolVar(&opts.Syscalls, "syscalls", false, "passthrough-connect: count each system's system calls per connection under strace -c -f (one more window, after the measured ones)")
	flag.StringVar(&opts.Edgegate, "edgegate", "", "edgegate binary (default: go build ./cmd/edgegate)")
	flag.StringVar(&opts.NetnsPrefix, "netns-prefix", "", "not-tls-flood: start of the network namespace's and veth pair's names (default egb)")
	flag.BoolVar(&opts.NoPin, "no-pin", false, "do not pin the systems to CPU 0 and the load generator to CPU 1")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "edgegate-bench: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	opts.Scenarios = splitList(scenarios)
	opts.Systems = splitList(systems)
	opts.Progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := bench.Run(ctx, opts, strings.Join(os.Args, " "))
	if rep != nil {
		fmt.Print(rep.Summary())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgegate-bench:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "edgegate-bench: finished in %s\n", time.Since(start).Round(time.Second))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
