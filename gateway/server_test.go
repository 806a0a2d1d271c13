package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/eventually"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startServer writes yaml to a config file in a temp folder, loads it and
// starts a real gateway on it, stopped when the test ends.
func startServer(t testing.TB, yaml string) *Server {
	t.Helper()
	dir := t.TempDir()
	return startServerIn(t, dir, yaml)
}

func startServerIn(t testing.TB, dir, yaml string) *Server {
	t.Helper()
	return startServerLogging(t, dir, yaml, testLog())
}

// startServerLogged is startServer with its log kept, for tests that check
// what an operator reads.
func startServerLogged(t testing.TB, yaml string) (*Server, *logLines) {
	t.Helper()
	l := &logLines{}
	var w io.Writer = l
	if testing.Verbose() {
		w = io.MultiWriter(l, os.Stderr)
	}
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return startServerLogging(t, t.TempDir(), yaml, log), l
}

func startServerLogging(t testing.TB, dir, yaml string, log *slog.Logger) *Server {
	t.Helper()
	path := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	s, err := NewServer(cfg, log)
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// addr returns the bound address of the listener configured as name.
func (s *Server) addr(t testing.TB, name string) string {
	t.Helper()
	a, ok := s.Addrs()[name]
	if !ok {
		t.Fatalf("no listener %q", name)
	}
	return a.String()
}

// count returns edgegate_connections_total for a listener, vhost and outcome.
func (s *Server) count(listener, vhost string, o Outcome) float64 {
	return testutil.ToFloat64(s.metrics.connections.WithLabelValues(listener, vhost, string(o)))
}

// waitCount waits until a connection counter reaches want; counters move
// just after the client sees the close, so tests poll rather than race.
func (s *Server) waitCount(t testing.TB, listener, vhost string, o Outcome, want float64) {
	t.Helper()
	eventually.Within(t, 10*time.Second, func() error {
		if got := s.count(listener, vhost, o); got != want {
			return fmt.Errorf("edgegate_connections_total{listener=%q,vhost=%q,outcome=%q} = %v, want %v", listener, vhost, o, got, want)
		}
		return nil
	})
}

// logLines is a server's log as JSON lines, one record each.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// connections returns the attributes of every per-connection log line so
// far, in order.
func (l *logLines) connections(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	text := l.buf.String()
	l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "connection" {
			out = append(out, rec)
		}
	}
	return out
}

// waitConnections waits until the log holds n connection lines (they are
// written just after the counters move) and returns them.
func (l *logLines) waitConnections(t testing.TB, n int) []map[string]any {
	t.Helper()
	var recs []map[string]any
	eventually.Within(t, 10*time.Second, func() error {
		if recs = l.connections(t); len(recs) < n {
			return fmt.Errorf("log holds %d connection lines, want %d", len(recs), n)
		}
		return nil
	})
	return recs
}

// upstreamConn is what a test upstream received on one connection.
type upstreamConn struct {
	header *proxyproto.Header // nil when none was expected
	data   []byte             // every byte after the header, until EOF
	err    error
}

// testUpstream is a real upstream on loopback (TCP or Unix) that reads a
// PROXY header (unless proxy is false), then everything the gateway sends
// until EOF, answers reply, and reports what it got.
type testUpstream struct {
	ln    net.Listener
	got   chan upstreamConn
	reply []byte
	proxy bool
}

func newUpstream(t testing.TB, network, address string, proxy bool, reply []byte) *testUpstream {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("upstream listen %s %s: %v", network, address, err)
	}
	u := &testUpstream{ln: ln, got: make(chan upstreamConn, 2048), reply: reply, proxy: proxy}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *testUpstream) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	var uc upstreamConn
	if u.proxy {
		uc.header, uc.err = proxyproto.Read(br)
		if uc.err != nil {
			u.got <- uc
			return
		}
	}
	uc.data, uc.err = io.ReadAll(br)
	if len(u.reply) > 0 {
		c.Write(u.reply)
	}
	u.got <- uc
}

// address is the upstream's address in config form.
func (u *testUpstream) address() string {
	if u.ln.Addr().Network() == "unix" {
		return "unix:" + u.ln.Addr().String()
	}
	return u.ln.Addr().String()
}

func (u *testUpstream) next(t testing.TB) upstreamConn {
	t.Helper()
	select {
	case uc := <-u.got:
		return uc
	case <-time.After(20 * time.Second):
		t.Fatal("upstream got no connection")
		return upstreamConn{}
	}
}

// expectNone asserts the upstream received no connection.
func (u *testUpstream) expectNone(t testing.TB) {
	t.Helper()
	select {
	case uc := <-u.got:
		t.Fatalf("upstream got a connection it should not have: %d bytes", len(uc.data))
	default:
	}
}

// readHello loads a captured ClientHello from testdata/hellos.
func readHello(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "hellos", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send writes data to c, all at once or one byte per write (each its own
// TCP segment: Go sets TCP_NODELAY).
func send(c net.Conn, data []byte, oneByte bool) error {
	if !oneByte {
		_, err := c.Write(data)
		return err
	}
	for i := range data {
		if _, err := c.Write(data[i : i+1]); err != nil {
			return err
		}
	}
	return nil
}

// expectSilentClose asserts that the peer closed c without sending a byte.
func expectSilentClose(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("client received %d bytes (%q); want none", len(b), b[:min(len(b), 32)])
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open; want it closed")
	}
}

// yamlf formats a YAML config; a helper so tests read as their config.
func yamlf(format string, args ...any) string {
	return strings.TrimLeft(fmt.Sprintf(format, args...), "\n")
}

// fdCount is the number of open file descriptors of this process.
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds: %v", err)
	}
	return len(ents)
}

// settle waits until sample has returned the same value for half a second
// and returns it: a baseline taken while earlier tests' sockets are still
// closing and their goroutines still ending would be skewed by them. If
// the value is still moving after limit, settle logs so and returns the
// last one.
func settle[T comparable](t testing.TB, limit time.Duration, sample func() T) T {
	t.Helper()
	const quiet = 500 * time.Millisecond
	last, since := sample(), time.Now()
	err := eventually.Poll(limit, func() error {
		if v := sample(); v != last {
			last, since = v, time.Now()
		}
		if d := time.Since(since); d < quiet {
			return fmt.Errorf("%v, unchanged for %v of %v", last, d.Round(time.Millisecond), quiet)
		}
		return nil
	})
	if err != nil {
		t.Logf("baseline still moving after %v: %v", limit, err)
	}
	return last
}

// goroutinesIn counts the goroutines with fn, a function's qualified name,
// on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}
