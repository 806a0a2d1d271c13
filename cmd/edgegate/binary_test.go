package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// edgegateBin is the edgegate binary built once for this test run.
var edgegateBin string

// raceEnabled is set by race_test.go when the tests run with -race.
var raceEnabled bool

// waitLimit bounds every wait for the binary to do something. It is a
// safety net for a hung process, never a measurement: on a busy shared
// machine with the race detector things can take seconds.
const waitLimit = 60 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgegate-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	edgegateBin = filepath.Join(dir, "edgegate")
	args := []string{"build", "-o", edgegateBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "go build edgegate: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if raceEnabled {
		// The race runtime sleeps a second at exit so late reports get
		// out; a tenth is enough for these short processes and keeps the
		// many runs of the binary from adding up.
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=100"))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runEdgegate runs the binary to completion and returns its stdout, its
// stderr and its exit status.
func runEdgegate(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(edgegateBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Run from an unrelated folder: paths in a config resolve against the
	// config's folder, not the working directory.
	cmd.Dir = t.TempDir()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start edgegate: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("edgegate %s: %v", strings.Join(args, " "), err)
		}
	case <-time.After(waitLimit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("edgegate %s did not exit\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out.String(), errb.String())
	}
	return out.String(), errb.String(), code
}

// gateProc is an edgegate process running in the background.
type gateProc struct {
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	exited chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, set before exited is closed
}

// startEdgegate starts the binary with args; it is killed when the test
// ends if it is still running, and its output is shown if the test failed.
func startEdgegate(t *testing.T, args ...string) *gateProc {
	t.Helper()
	return startEdgegateEnv(t, nil, args...)
}

// startEdgegateEnv is startEdgegate with variables added to the
// environment.
func startEdgegateEnv(t *testing.T, env []string, args ...string) *gateProc {
	t.Helper()
	p := &gateProc{
		cmd:    exec.Command(edgegateBin, args...),
		exited: make(chan struct{}),
	}
	p.stdout = newOutput(p.exited)
	p.stderr = newOutput(p.exited)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Dir = t.TempDir()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start edgegate: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("edgegate %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout.text(), p.stderr.text())
		}
	})
	return p
}

// signal sends sig to the process.
func (p *gateProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit status.
func (p *gateProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitLimit):
		t.Fatal("edgegate did not exit")
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("edgegate: %v", p.err)
	return -1
}

// running reports whether the process has not exited yet.
func (p *gateProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// output collects what a process writes, line by line, and wakes those
// waiting for a line.
type output struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced at each new line
	exited  <-chan struct{}
}

func newOutput(exited <-chan struct{}) *output {
	return &output{changed: make(chan struct{}), exited: exited}
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, b...)
	grew := false
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.lines = append(o.lines, string(o.partial[:i]))
		o.partial = o.partial[i+1:]
		grew = true
	}
	if grew {
		close(o.changed)
		o.changed = make(chan struct{})
	}
	return len(b), nil
}

// snapshot returns the complete lines so far.
func (o *output) snapshot() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

func (o *output) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n") + "\n" + string(o.partial)
}

// waitFor waits until a line satisfies match and returns it. It fails the
// test if the process exits first or nothing matches within waitLimit.
func (o *output) waitFor(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		o.mu.Lock()
		lines, changed := o.lines, o.changed
		o.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l
			}
		}
		select {
		case <-changed:
		case <-o.exited:
			// The last lines may have arrived with the exit.
			for _, l := range o.snapshot() {
				if match(l) {
					return l
				}
			}
			t.Fatalf("edgegate exited before logging %s", what)
		case <-deadline:
			t.Fatalf("edgegate did not log %s", what)
		}
	}
}

// waitJSON waits for a JSON log record for which match is true.
func (o *output) waitJSON(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var rec map[string]any
	o.waitFor(t, what, func(l string) bool {
		var r map[string]any
		if json.Unmarshal([]byte(l), &r) != nil || !match(r) {
			return false
		}
		rec = r
		return true
	})
	return rec
}

// records decodes every line as a JSON log record; a line that is not JSON
// fails the test (a json log must be nothing but records).
func (o *output) records(t *testing.T) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, l := range o.snapshot() {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("log line is not JSON (%v): %s", err, l)
		}
		recs = append(recs, r)
	}
	return recs
}

// msgIs matches JSON log records by their message.
func msgIs(msg string) func(map[string]any) bool {
	return func(r map[string]any) bool { return r["msg"] == msg }
}

// freeAddr returns an address for the binary to listen on: a random
// address in 127.0.0.0/8 with a port that was free on it a moment ago. The
// binary is given fixed ports because it does not print the port it bound
// when asked for port 0. The random address keeps two picks from ever
// naming the same socket: edgegate listens with SO_REUSEPORT, so a port
// handed out twice would silently share connections between two gateways
// instead of failing.
func freeAddr(t *testing.T) string {
	t.Helper()
	ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// writeFile writes text to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// yamlf formats a YAML document; leading newlines are dropped so line
// numbers in a test read as they are written.
func yamlf(format string, args ...any) string {
	return strings.TrimLeft(fmt.Sprintf(format, args...), "\n")
}

// requireTool finds a program the test needs; without it the test skips,
// except in CI, where a missing tool is a broken setup.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true): %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}
