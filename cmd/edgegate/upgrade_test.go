package main_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// The processes an upgrade starts are the old process's children, and once
// it exits they are orphans. This test process makes itself their
// subreaper so it can collect their exit status like its own children's.
var subreaperOnce sync.Once

func becomeSubreaper(t *testing.T) {
	t.Helper()
	var err error
	subreaperOnce.Do(func() { err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
	if err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
}

// serviceLog collects the lines every process of one service writes: the
// first `edgegate run` and the successors its upgrades start share its
// stdout and stderr. Waiting scans only the lines not seen yet, so a log of
// thousands of connection lines stays cheap.
type serviceLog struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced at each new line
	eof     bool          // every process that held the pipe has exited
}

func (l *serviceLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, sc.Text())
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.eof = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// waitFor waits for a line that satisfies match and returns it.
func (l *serviceLog) waitFor(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for i := 0; ; {
		l.mu.Lock()
		lines, changed, eof := l.lines, l.changed, l.eof
		l.mu.Unlock()
		for ; i < len(lines); i++ {
			if match(lines[i]) {
				return lines[i]
			}
		}
		if eof {
			t.Fatalf("every edgegate process exited before logging %s", what)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("edgegate did not log %s", what)
		}
	}
}

// waitJSON waits for a JSON record for which match is true.
func (l *serviceLog) waitJSON(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var rec map[string]any
	l.waitFor(t, what, func(s string) bool {
		var r map[string]any
		if json.Unmarshal([]byte(s), &r) != nil || !match(r) {
			return false
		}
		rec = r
		return true
	})
	return rec
}

// waitEOF waits until every process writing the log has exited and all
// they wrote has been read.
func (l *serviceLog) waitEOF(t *testing.T) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		l.mu.Lock()
		eof, changed := l.eof, l.changed
		l.mu.Unlock()
		if eof {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("a process still holds the log open")
		}
	}
}

// count returns how many JSON records so far match.
func (l *serviceLog) count(match func(map[string]any) bool) int {
	n := 0
	for _, s := range l.snapshot() {
		var r map[string]any
		if json.Unmarshal([]byte(s), &r) == nil && match(r) {
			n++
		}
	}
	return n
}

func (l *serviceLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// service is an `edgegate run` that may upgrade itself. Its stdout and
// stderr are a pipe the test reads (not os/exec's copying goroutines, whose
// Wait would last until every successor holding the pipe exits too), so
// the first process's exit is seen when it happens.
type service struct {
	cmd    *exec.Cmd
	log    *serviceLog
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited is closed

	mu         sync.Mutex
	successors []*os.Process
}

// startService runs `edgegate run --config cfg` with env added. Every
// process of the service is killed when the test ends, and the shared log
// is shown if the test failed.
func startService(t *testing.T, cfg string, env ...string) *service {
	t.Helper()
	return startServiceBin(t, edgegateBin, cfg, env...)
}

// startServiceBin is startService running the binary at bin.
func startServiceBin(t *testing.T, bin, cfg string, env ...string) *service {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &service{
		cmd:    exec.Command(bin, "run", "--config", cfg),
		log:    &serviceLog{changed: make(chan struct{})},
		exited: make(chan struct{}),
	}
	s.cmd.Stdout, s.cmd.Stderr = w, w
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Dir = t.TempDir()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start edgegate: %v", err)
	}
	w.Close()
	go s.log.read(r)
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.mu.Lock()
		succ := s.successors
		s.mu.Unlock()
		for _, p := range succ {
			p.Kill()
			p.Wait() // an error means it was reaped already
		}
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Kill()
			<-s.exited
		}
		r.Close()
		if t.Failed() {
			t.Logf("edgegate log:\n%s", strings.Join(s.log.snapshot(), "\n"))
		}
	})
	s.log.waitJSON(t, "that it is running", msgIs("edgegate running"))
	return s
}

// adopt records a successor started by an upgrade so it is killed when the
// test ends, and returns a handle to it (a pidfd: no confusion with a
// reused process ID).
func (s *service) adopt(t *testing.T, pid int) *os.Process {
	t.Helper()
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatalf("successor %d: %v", pid, err)
	}
	s.mu.Lock()
	s.successors = append(s.successors, p)
	s.mu.Unlock()
	return p
}

func (s *service) running() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// wait waits for the first process to exit and returns its exit status.
func (s *service) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(waitLimit):
		t.Fatal("edgegate did not exit")
	}
	return exitCode(t, s.err)
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("edgegate: %v", err)
	return -1
}

// waitSuccessor waits for a successor (this test process's child by then,
// as their subreaper) to exit and returns its exit status.
func waitSuccessor(t *testing.T, p *os.Process) int {
	t.Helper()
	done := make(chan *os.ProcessState, 1)
	var werr error
	go func() {
		st, err := p.Wait()
		werr = err
		done <- st
	}()
	select {
	case st := <-done:
		if werr != nil {
			t.Fatalf("wait for process %d: %v", p.Pid, werr)
		}
		return st.ExitCode()
	case <-time.After(waitLimit):
		t.Fatalf("process %d did not exit", p.Pid)
		return -1
	}
}

// readPIDFile returns the process ID the pid file names.
func readPIDFile(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file holds %q", b)
	}
	return pid
}

// notification is one datagram a process sent to $NOTIFY_SOCKET, with the
// sender's process ID as the kernel reports it (what systemd checks).
type notification struct {
	state string
	pid   int
}

// notifySocket stands in for systemd's notification socket.
type notifySocket struct {
	path string
	msgs chan notification
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	n := &notifySocket{path: path, msgs: make(chan notification, 16)}
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			k, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			msg := notification{state: string(buf[:k]), pid: -1}
			if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, cm := range cms {
					if cred, err := syscall.ParseUnixCredentials(&cm); err == nil {
						msg.pid = int(cred.Pid)
					}
				}
			}
			n.msgs <- msg
		}
	}()
	return n
}

func (n *notifySocket) next(t *testing.T) notification {
	t.Helper()
	select {
	case m := <-n.msgs:
		return m
	case <-time.After(waitLimit):
		t.Fatal("no notification from edgegate")
		return notification{}
	}
}

// serviceConfig runs two passthrough vhosts, www and bulk, with a pid file
// and (unless control is false) a control socket, both beside the config.
func serviceConfig(listen, metrics, www, bulk string, control bool) string {
	sock := ""
	if control {
		sock = "control_socket: control.sock\n"
	}
	return yamlf(`
listen:
  - address: %q
timeouts: {drain: 10m}
metrics: {listen: %q}
log: {level: info, format: json}
pid_file: edgegate.pid
%svhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: {address: %q, proxy_protocol: v2}
  - name: bulk
    hosts: ["bulk.e2e.test"]
    mode: passthrough
    upstream: {address: %q, proxy_protocol: v2}
`, listen, metrics, sock, www, bulk)
}

// load keeps several clients making complete TLS connections through the
// gateway, back to back: handshake with the upstream, one echo, "quit",
// "bye", close. Any error is a failed connection.
type load struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	ok       atomic.Int64

	mu       sync.Mutex
	failures []error
	resets   int
}

func startLoad(t *testing.T, addr string, up *tlsUpstream, clients int) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	// The upstream reports every connection; nobody else reads them here.
	upErrs := make(chan error, 1)
	go func() {
		for {
			select {
			case uc := <-up.conns:
				if uc.err != nil {
					select {
					case upErrs <- uc.err:
					default:
					}
				}
			case <-l.stop:
				return
			}
		}
	}()
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := l.one(addr, up, fmt.Sprintf("client %d connection %d", i, n)); err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err)
					if errors.Is(err, syscall.ECONNRESET) {
						l.resets++
					}
					many := len(l.failures) > 100
					l.mu.Unlock()
					if many {
						return
					}
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	t.Cleanup(l.end)
	return l
}

func (l *load) one(addr string, up *tlsUpstream, line string) error {
	ec, err := dialEcho(addr, "www.e2e.test", up.roots)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	defer ec.conn.Close()
	if got, err := ec.roundTrip(line); err != nil || got != line {
		return fmt.Errorf("echo: got %q, %w", got, err)
	}
	if got, err := ec.roundTrip("quit"); err != nil || got != "bye" {
		return fmt.Errorf("quit: got %q, %w", got, err)
	}
	return nil
}

// waitOK waits until at least n connections have succeeded in all.
func (l *load) waitOK(t *testing.T, n int64) {
	t.Helper()
	eventually.Within(t, waitLimit, func() error {
		got := l.ok.Load()
		if got >= n {
			return nil
		}
		if f := l.failed(); len(f) > 100 {
			t.Fatalf("the load is failing: %v", f[0])
		}
		return fmt.Errorf("the load made %d good connections, want %d", got, n)
	})
}

func (l *load) failed() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.failures...)
}

// end stops the clients and waits for them.
func (l *load) end() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// transfer is one long connection through the gateway streaming size bytes
// each way (lines to the echoing upstream), paced so that it spans an
// upgrade; it stops before the last part until release is called.
type transfer struct {
	conn     net.Conn
	received atomic.Int64
	gate     chan struct{}
	done     chan error
}

const (
	transferSize = 32 << 20
	transferLine = 4096
	// transferHeld is how much is sent before waiting for release.
	transferHeld = 24 << 20
)

func startTransfer(t *testing.T, addr string, up *tlsUpstream) *transfer {
	t.Helper()
	ec, err := dialEcho(addr, "bulk.e2e.test", up.roots)
	if err != nil {
		t.Fatalf("long transfer: %v", err)
	}
	t.Cleanup(func() { ec.conn.Close() })
	if uc := up.next(t); uc.err != nil {
		t.Fatalf("long transfer upstream: %v", uc.err)
	}
	ec.conn.SetDeadline(time.Now().Add(5 * time.Minute))
	tr := &transfer{conn: ec.conn, gate: make(chan struct{}), done: make(chan error, 2)}
	var sent [sha256.Size]byte
	sentReady := make(chan struct{})
	go func() {
		h := sha256.New()
		rng := rand.NewChaCha8([32]byte{42})
		line := make([]byte, transferLine)
		chunk := make([]byte, 0, 32*transferLine)
		for n := 0; n < transferSize; {
			if n == transferHeld {
				<-tr.gate
			}
			chunk = chunk[:0]
			for range 32 {
				rng.Read(line)
				for i := range line {
					line[i] = 'a' + line[i]%26
				}
				line[len(line)-1] = '\n'
				chunk = append(chunk, line...)
			}
			h.Write(chunk)
			if _, err := ec.conn.Write(chunk); err != nil {
				tr.done <- fmt.Errorf("send after %d bytes: %w", n, err)
				close(sentReady)
				return
			}
			n += len(chunk)
			// Pacing only, not a wait: about 6 MB/s, so the stream is
			// still flowing while the upgrade happens.
			time.Sleep(20 * time.Millisecond)
		}
		copy(sent[:], h.Sum(nil))
		close(sentReady)
		_, err := ec.conn.Write([]byte("quit\n"))
		tr.done <- err
	}()
	go func() {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for total := int64(0); total < transferSize; {
			k, err := ec.r.Read(buf[:min(len(buf), int(transferSize-total))])
			h.Write(buf[:k])
			total += int64(k)
			tr.received.Store(total)
			if err != nil {
				tr.done <- fmt.Errorf("receive after %d bytes: %w", total, err)
				return
			}
		}
		<-sentReady
		if got := h.Sum(nil); string(got) != string(sent[:]) {
			tr.done <- fmt.Errorf("received %d bytes with SHA-256 %x, sent SHA-256 %x", transferSize, got, sent)
			return
		}
		bye, err := ec.r.ReadString('\n')
		if err != nil || bye != "bye\n" {
			tr.done <- fmt.Errorf("after the transfer: %q, %v; want bye", bye, err)
			return
		}
		tr.done <- nil
	}()
	return tr
}

// waitReceived waits until n bytes have come back.
func (tr *transfer) waitReceived(t *testing.T, n int64) {
	t.Helper()
	eventually.Within(t, waitLimit, func() error {
		got := tr.received.Load()
		if got >= n {
			return nil
		}
		select {
		case err := <-tr.done:
			t.Fatalf("long transfer ended early: %v", err)
		default:
		}
		return fmt.Errorf("long transfer: %d bytes back, want %d", got, n)
	})
}

// finish releases the last part, waits for both directions to end and
// closes the connection.
func (tr *transfer) finish(t *testing.T) {
	t.Helper()
	close(tr.gate)
	defer tr.conn.Close()
	for range 2 {
		select {
		case err := <-tr.done:
			if err != nil {
				t.Fatalf("long transfer: %v", err)
			}
		case <-time.After(2 * waitLimit):
			t.Fatalf("long transfer did not finish: %d of %d bytes back", tr.received.Load(), transferSize)
		}
	}
}

// TestUpgradeUnderLoad upgrades a serving gateway, by `edgegate upgrade`
// and by SIGUSR2, while clients keep connecting and a 32 MiB stream is in
// flight each way: no connection fails or is reset, the stream arrives
// intact, the pid file and systemd learn the new process, the old one
// drains and exits 0, and the new one serves and later stops cleanly.
func TestUpgradeUnderLoad(t *testing.T) {
	t.Parallel()
	becomeSubreaper(t)
	for _, how := range []string{"command", "SIGUSR2"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			www := newTLSUpstream(t, "www.e2e.test")
			bulk := newTLSUpstream(t, "bulk.e2e.test")
			notify := listenNotify(t)
			dir := t.TempDir()
			listen, metrics := freeAddr(t), freeAddr(t)
			cfg := writeFile(t, dir, "edgegate.yaml", serviceConfig(listen, metrics, www.ln.Addr().String(), bulk.ln.Addr().String(), true))
			pidFile := filepath.Join(dir, "edgegate.pid")
			s := startService(t, cfg, "NOTIFY_SOCKET="+notify.path)
			oldPID := s.cmd.Process.Pid
			if n := notify.next(t); n.state != "READY=1" || n.pid != oldPID {
				t.Fatalf("first notification %q from %d, want READY=1 from %d", n.state, n.pid, oldPID)
			}
			if got := readPIDFile(t, pidFile); got != oldPID {
				t.Fatalf("pid file names %d, want %d", got, oldPID)
			}

			ld := startLoad(t, listen, www, 4)
			tr := startTransfer(t, listen, bulk)
			ld.waitOK(t, 20)
			tr.waitReceived(t, 4<<20)

			okBefore := ld.ok.Load()
			switch how {
			case "command":
				stdout, stderr, code := runEdgegate(t, "upgrade", "--config", cfg)
				if code != 0 || stdout != "upgrade: ok\n" {
					t.Fatalf("edgegate upgrade: exit %d, stdout %q, stderr %q; want 0 and \"upgrade: ok\"", code, stdout, stderr)
				}
			case "SIGUSR2":
				if err := s.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
					t.Fatal(err)
				}
			}
			rec := s.log.waitJSON(t, "the hand-over", msgIs("upgrade: new process serves; draining this one"))
			newPID := int(rec["new_pid"].(float64))
			next := s.adopt(t, newPID)
			if newPID == oldPID {
				t.Fatalf("new process has the old one's pid %d", newPID)
			}
			if got := readPIDFile(t, pidFile); got != newPID {
				t.Errorf("pid file names %d after the upgrade, want the new process %d", got, newPID)
			}
			if n := notify.next(t); n.state != fmt.Sprintf("MAINPID=%d\nREADY=1", newPID) || n.pid != newPID {
				t.Errorf("notification after the upgrade %q from %d, want MAINPID=%d and READY=1 from it", n.state, n.pid, newPID)
			}

			// The old process drains: the long transfer holds it.
			s.log.waitJSON(t, "the old process draining", func(r map[string]any) bool {
				return r["msg"] == "stopping: draining connections" && r["why"] == "upgraded"
			})
			if !s.running() {
				t.Fatal("the old process exited while the long transfer was still in flight")
			}
			tr.finish(t)
			if code := s.wait(t); code != 0 {
				t.Fatalf("old process: exit status %d, want 0", code)
			}
			if n := s.log.count(func(r map[string]any) bool { return strings.Contains(fmt.Sprint(r["msg"]), "drain timeout") }); n > 0 {
				t.Error("the old process cut connections at the drain timeout")
			}
			// Keep the load going on the new process alone for a while.
			okAfterOld := ld.ok.Load()
			ld.waitOK(t, okAfterOld+40)
			ld.end()
			if f := ld.failed(); len(f) > 0 {
				t.Fatalf("%d connections failed (%d reset) of %d; first: %v", len(f), ld.resets, ld.ok.Load()+int64(len(f)), f[0])
			}
			if okAfterOld <= okBefore {
				t.Errorf("no connection completed during the upgrade (%d before, %d when the old process exited)", okBefore, okAfterOld)
			}
			t.Logf("%d connections: %d before the upgrade, %d until the old process exited, %d after; none failed",
				ld.ok.Load(), okBefore, okAfterOld-okBefore, ld.ok.Load()-okAfterOld)

			if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 1 || h.Draining || h.Listeners != 1 {
				t.Errorf("/healthz from the new process: %d %+v, want 200, generation 1, 1 listener, not draining", code, h)
			}
			if err := next.Signal(syscall.Signal(0)); err != nil {
				t.Fatalf("new process %d is not running: %v", newPID, err)
			}
			// The new process owns the control socket now, also after the
			// old one has closed its own.
			if stdout, stderr, code := runEdgegate(t, "reload", "--config", cfg); code != 0 || stdout != "reload: ok\n" {
				t.Errorf("edgegate reload after the upgrade: exit %d, stdout %q, stderr %q; want 0 and \"reload: ok\"", code, stdout, stderr)
			} else if _, h := getHealthz(t, metrics); h.Generation != 2 {
				t.Errorf("/healthz after reloading the new process: %+v, want generation 2", h)
			}
			if err := next.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := waitSuccessor(t, next); code != 0 {
				t.Fatalf("new process: exit status %d after SIGTERM, want 0", code)
			}
			s.log.waitEOF(t)
			if n := s.log.count(msgIs("stopped")); n != 2 {
				t.Errorf("%d 'stopped' records, want one from each process", n)
			}
			for _, f := range []string{pidFile, filepath.Join(dir, "control.sock")} {
				if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s after the new process stopped: %v, want it removed", filepath.Base(f), err)
				}
			}
		})
	}
}

// brokenConfig returns cfgText with a misspelt key on a new last line and
// that line's number.
func brokenConfig(cfgText string) (string, int) {
	broken := cfgText + "    proxy_protocl: v1\n"
	return broken, strings.Count(broken, "\n")
}

// TestUpgradeRefused: with a configuration on disk that does not load,
// `edgegate upgrade` refuses before touching the process (exit 1, FILE:LINE),
// and a SIGUSR2 starts a new process that exits at once, after which the
// old one says so and keeps serving, and still stops cleanly.
func TestUpgradeRefused(t *testing.T) {
	t.Parallel()
	becomeSubreaper(t)
	for _, how := range []string{"command", "SIGUSR2"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			www := newTLSUpstream(t, "www.e2e.test")
			dir := t.TempDir()
			listen, metrics := freeAddr(t), freeAddr(t)
			good := serviceConfig(listen, metrics, www.ln.Addr().String(), www.ln.Addr().String(), true)
			cfg := writeFile(t, dir, "edgegate.yaml", good)
			pidFile := filepath.Join(dir, "edgegate.pid")
			s := startService(t, cfg)
			pid := s.cmd.Process.Pid
			expectProxied(t, listen, "www.e2e.test", www)

			broken, line := brokenConfig(good)
			writeFile(t, dir, "edgegate.yaml", broken)
			wantErr := fmt.Sprintf("%s:%d: ", cfg, line)
			switch how {
			case "command":
				stdout, stderr, code := runEdgegate(t, "upgrade", "--config", cfg)
				if code != 1 || !strings.HasPrefix(stderr, wantErr) || !strings.Contains(stderr, "proxy_protocl") {
					t.Fatalf("edgegate upgrade with a broken file: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, wantErr)
				}
			case "SIGUSR2":
				s.cmd.Process.Signal(syscall.SIGUSR2)
				rec := s.log.waitJSON(t, "the failed upgrade", msgIs("upgrade failed; this process keeps serving"))
				if rec["level"] != "ERROR" {
					t.Errorf("failed upgrade logged at %v, want ERROR", rec["level"])
				}
				// The new process said why before exiting.
				s.log.waitFor(t, "the new process's FILE:LINE", func(l string) bool { return strings.HasPrefix(l, wantErr) })
			}
			// Connections are served as before, by the same process. Two:
			// the second is accepted after the first, by the accept loop
			// the attempt could have disturbed.
			expectProxied(t, listen, "www.e2e.test", www)
			expectProxied(t, listen, "www.e2e.test", www)
			if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 1 {
				t.Errorf("/healthz after the refused upgrade: %d %+v, want 200 and generation 1", code, h)
			}
			if got := readPIDFile(t, pidFile); got != pid {
				t.Errorf("pid file names %d, want the running process %d", got, pid)
			}
			if how == "command" {
				if n := s.log.count(msgIs("upgrade: starting the new process")); n != 0 {
					t.Error("edgegate upgrade refused the file but the process started an upgrade anyway")
				}
			}
			if !s.running() {
				t.Fatal("edgegate exited")
			}
			s.cmd.Process.Signal(syscall.SIGTERM)
			if code := s.wait(t); code != 0 {
				t.Fatalf("exit status %d after SIGTERM, want 0", code)
			}
		})
	}
}

// TestUpgradeRunsInstalledBinary: an upgrade starts the binary installed at
// the running one's path now (a package manager renames the new file over
// the old, leaving the running process on a deleted file), not a copy of
// the running image.
func TestUpgradeRunsInstalledBinary(t *testing.T) {
	t.Parallel()
	becomeSubreaper(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "edgegate")
	os.Mkdir(filepath.Dir(bin), 0o755)
	install := func() {
		t.Helper()
		tmp := bin + ".new"
		b, err := os.ReadFile(edgegateBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
	}
	install()
	www := newTLSUpstream(t, "www.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	cfg := writeFile(t, dir, "edgegate.yaml", serviceConfig(listen, metrics, www.ln.Addr().String(), www.ln.Addr().String(), true))
	s := startServiceBin(t, bin, cfg)
	install()
	oldExe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", s.cmd.Process.Pid))
	if err != nil || oldExe != bin+" (deleted)" {
		t.Fatalf("test bug: the running process's executable is %q (%v), want the replaced file", oldExe, err)
	}

	if stdout, stderr, code := runEdgegate(t, "upgrade", "--config", cfg); code != 0 {
		t.Fatalf("edgegate upgrade: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	rec := s.log.waitJSON(t, "the hand-over", msgIs("upgrade: new process serves; draining this one"))
	newPID := int(rec["new_pid"].(float64))
	next := s.adopt(t, newPID)
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", newPID)); err != nil || exe != bin {
		t.Errorf("the new process runs %q (%v), want the installed %s", exe, err, bin)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("old process: exit status %d, want 0", code)
	}
	expectProxied(t, listen, "www.e2e.test", www)
	next.Signal(syscall.SIGTERM)
	if code := waitSuccessor(t, next); code != 0 {
		t.Fatalf("new process: exit status %d, want 0", code)
	}
}
