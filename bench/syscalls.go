package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Syscalls is what `strace -c -f` counted in a system's serving processes
// while the load generator ran passthrough connections through it for a
// fixed window. strace stops the traced threads at every system call, so
// the system runs many times slower than untraced: the counts per
// connection are figures, the rate in the window is not.
type Syscalls struct {
	PIDs []int `json:"pids"` // traced processes (nginx: the worker)
	// Window is how long the load ran; Connections ended in it with the
	// upstream's reply, Failed did not. strace was attached before the
	// first connection began and detached after the last one ended.
	WindowS     float64 `json:"window_s"`
	Connections int64   `json:"connections"`
	Failed      int64   `json:"failed,omitempty"`
	// RateUnderStrace is Connections per second of the window: how much
	// strace slowed the system, not a performance figure.
	RateUnderStrace float64 `json:"rate_under_strace"`
	// TotalPerConn is every system call in the window divided by
	// Connections; WakeupsPerConn the part of it in wakeupCalls.
	TotalPerConn   float64        `json:"total_per_conn"`
	WakeupsPerConn float64        `json:"wakeups_per_conn"`
	Calls          []SyscallCount `json:"calls"` // most frequent first
}

// SyscallCount is one system call's line of the strace summary.
type SyscallCount struct {
	Name    string  `json:"name"`
	Calls   int64   `json:"calls"`
	Errors  int64   `json:"errors,omitempty"`
	PerConn float64 `json:"per_conn"`
}

// wakeupCalls are the system calls with which Go's scheduler parks and
// wakes threads (and spinning threads back off). One-threaded nginx and
// HAProxy make almost none, so they are shown apart from the rest.
var wakeupCalls = []string{"futex", "nanosleep", "clock_nanosleep", "sched_yield"}

// perConn returns the count of name per connection, 0 when absent.
func (s *Syscalls) perConn(name string) float64 {
	for _, c := range s.Calls {
		if c.Name == name {
			return c.PerConn
		}
	}
	return 0
}

// tracedPIDs returns the processes of r that serve connections: nginx's
// worker (its master only starts and watches it), the single process of
// the others.
func tracedPIDs(r *running) []int {
	tree := procTree(r.pid)
	if r.system == sysNginx && len(tree) > 1 {
		return tree[1:]
	}
	return tree[:1]
}

// traceSyscalls counts r's system calls under passthrough load and stores
// them in row; when it cannot, the row's note says why. The row's other
// figures were measured before, without strace.
func (h *harness) traceSyscalls(ctx context.Context, r *running, row *Row, tag string, ops func(i int) op) {
	s, err := h.countSyscalls(ctx, r, tag, ops)
	if err != nil {
		row.Note = strings.TrimSpace(row.Note + " system calls not counted: " + err.Error())
		h.progress("  %s: system calls not counted: %v", r.system, err)
		return
	}
	row.Syscalls = s
	h.progress("  %s under strace: %d connections in %.1fs, %.1f system calls each (%.1f scheduler wake-ups)",
		r.system, s.Connections, s.WindowS, s.TotalPerConn, s.WakeupsPerConn)
}

// countSyscalls attaches `strace -c -f` to r's serving processes, runs the
// load for one repetition's duration, detaches strace, checks that the
// system is no longer traced and still answers, and divides strace's
// counts by the connections completed. strace's own summary is kept in
// OUT/syscalls.
func (h *harness) countSyscalls(ctx context.Context, r *running, tag string, ops func(i int) op) (*Syscalls, error) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		return nil, errors.New("strace is not installed (apt-get install strace)")
	}
	dir := filepath.Join(h.out, "syscalls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pids := tracedPIDs(r)
	file := filepath.Join(dir, r.system+"-"+tag+".txt")
	args := []string{"-c", "-f", "-q", "-U", "name,calls,errors", "-S", "calls", "-o", file}
	for _, p := range pids {
		args = append(args, "-p", strconv.Itoa(p))
	}
	cmd := exec.Command(strace, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Should the harness die, strace detaches (SIGINT) instead of dying
	// with the system still attached to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start strace: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	// detach asks strace to let go (it detaches from every thread and
	// writes its summary on SIGINT) and waits until it has.
	detach := func() error {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
			return nil
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			return errors.New("strace did not end on SIGINT and was killed")
		}
	}
	if err := waitTraced(pids, true, exited, 10*time.Second); err != nil {
		detach()
		return nil, fmt.Errorf("attach strace to %v: %w (%s)", pids, err, firstLines(stderr.String(), 3))
	}
	start := time.Now()
	ok, failed, firstErr := runAll(ctx, h.opts.Concurrency, h.opts.Duration, makeOps(h.opts.Concurrency, ops))
	window := time.Since(start)
	// The client has its answer before the system has closed both
	// sockets; let it finish the last connections before detaching.
	time.Sleep(200 * time.Millisecond)
	if err := detach(); err != nil {
		return nil, err
	}
	if err := waitTraced(pids, false, nil, 5*time.Second); err != nil {
		return nil, fmt.Errorf("after strace ended: %w", err)
	}
	// The system must serve as before: strace only watched.
	check := ops(-1)
	for range 10 {
		if err := check(ctx); err != nil {
			return nil, fmt.Errorf("connection after strace detached: %w", err)
		}
	}
	if ok == 0 {
		return nil, fmt.Errorf("no connection completed under strace (%d failed, first: %v)", failed, firstErr)
	}
	out, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read strace summary: %w", err)
	}
	calls, total, err := parseStraceSummary(out)
	if err != nil {
		return nil, fmt.Errorf("%w (strace: %s)", err, firstLines(stderr.String(), 3))
	}
	s := &Syscalls{
		PIDs: pids, WindowS: window.Seconds(), Connections: ok, Failed: failed,
		RateUnderStrace: float64(ok) / window.Seconds(), TotalPerConn: float64(total) / float64(ok),
	}
	for _, c := range calls {
		c.PerConn = float64(c.Calls) / float64(ok)
		s.Calls = append(s.Calls, c)
		if slices.Contains(wakeupCalls, c.Name) {
			s.WakeupsPerConn += c.PerConn
		}
	}
	return s, nil
}

// waitTraced waits until every thread of pids is traced (want true) or no
// longer traced (want false), as /proc/PID/task/TID/status's TracerPid
// says. It gives up when stop is closed or after timeout.
func waitTraced(pids []int, want bool, stop <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		traced, threads := tracedThreads(pids)
		if threads > 0 && (want && traced == threads || !want && traced == 0) {
			return nil
		}
		if threads == 0 {
			return fmt.Errorf("processes %v are gone", pids)
		}
		select {
		case <-stop:
			return errors.New("strace ended")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d threads traced after %s", traced, threads, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tracedThreads counts the threads of pids and those a tracer is attached to.
func tracedThreads(pids []int) (traced, threads int) {
	for _, pid := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue
		}
		for _, t := range tasks {
			v, ok := readKiBField(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()), "TracerPid:")
			if !ok {
				continue
			}
			threads++
			if v != 0 {
				traced++
			}
		}
	}
	return traced, threads
}

// runAll runs conc workers that start operations until dur has passed, and
// counts every operation, also those that end after dur: strace counts the
// system calls of every connection begun, so every one must be counted.
func runAll(ctx context.Context, conc int, dur time.Duration, ops []op) (ok, failed int64, firstErr error) {
	var (
		okN, failN atomic.Int64
		errs       errRecorder
		wg         sync.WaitGroup
	)
	end := time.Now().Add(dur)
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				if err := ops[i](ctx); err != nil {
					failN.Add(1)
					errs.record(err)
					continue
				}
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	return okN.Load(), failN.Load(), errs.err
}

// parseStraceSummary reads the table `strace -c -U name,calls,errors`
// writes: one line per system call, then a total line.
func parseStraceSummary(b []byte) (calls []SyscallCount, total int64, err error) {
	sawTotal := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] == "syscall" || strings.HasPrefix(f[0], "---") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("strace summary line %q: %w", line, err)
		}
		var e int64
		if len(f) > 2 {
			e, _ = strconv.ParseInt(f[2], 10, 64)
		}
		if f[0] == "total" {
			total, sawTotal = n, true
			continue
		}
		calls = append(calls, SyscallCount{Name: f[0], Calls: n, Errors: e})
	}
	if !sawTotal {
		return nil, 0, errors.New("no summary in strace's output")
	}
	slices.SortStableFunc(calls, func(a, b SyscallCount) int {
		return cmp.Or(cmp.Compare(b.Calls, a.Calls), strings.Compare(a.Name, b.Name))
	})
	return calls, total, nil
}

// syscallTopN is how many of each system's most frequent system calls its
// table shows; the JSON has them all.
const syscallTopN = 10

// syscallTable renders the system calls per connection of g's rows that
// have them, one column per system: the total, the scheduler's wake-ups,
// then the union of each system's most frequent calls. Empty when no row
// was traced.
func syscallTable(g group) string {
	var rows []Row
	for _, row := range g.rows {
		if row.Syscalls != nil {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var names []string
	for _, row := range rows {
		for _, c := range row.Syscalls.Calls[:min(syscallTopN, len(row.Syscalls.Calls))] {
			if !slices.Contains(names, c.Name) {
				names = append(names, c.Name)
			}
		}
	}
	most := func(name string) float64 {
		m := 0.0
		for _, row := range rows {
			m = max(m, row.Syscalls.perConn(name))
		}
		return m
	}
	slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(most(b), most(a)) })

	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("System calls per connection, counted by `strace -c -f` attached to each system (nginx: its")
	w("worker; every thread) while the load ran for %.1f s. strace stops the system at every call, so it", rows[0].Syscalls.WindowS)
	w("ran many times slower than above: the rates under strace are not performance figures, the counts")
	w("per connection are, except that calls which depend on timing (wake-ups, epoll_wait, an accept4")
	w("that finds nothing) change with the slowdown. Scheduler wake-ups are %s", strings.Join(wakeupCalls, ", "))
	w("together (Go's scheduler parking and waking threads), part of the total.")
	w("")
	hdr, sep := "| system call |", "| --- |"
	for _, row := range rows {
		hdr += " " + row.System + " |"
		sep += " --- |"
	}
	w("%s", hdr)
	w("%s", sep)
	line := func(label string, cell func(s *Syscalls) string) {
		l := "| " + label + " |"
		for _, row := range rows {
			l += " " + cell(row.Syscalls) + " |"
		}
		w("%s", l)
	}
	line("connections (rate under strace)", func(s *Syscalls) string {
		return fmt.Sprintf("%d (%.0f/s)", s.Connections, s.RateUnderStrace)
	})
	line("**total**", func(s *Syscalls) string { return fmt.Sprintf("**%.1f**", s.TotalPerConn) })
	line("scheduler wake-ups", func(s *Syscalls) string { return fmt.Sprintf("%.2f", s.WakeupsPerConn) })
	for _, n := range names {
		line(n, func(s *Syscalls) string { return fmt.Sprintf("%.2f", s.perConn(n)) })
	}
	return b.String()
}
