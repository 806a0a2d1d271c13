package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
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

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// holdingUpstream accepts connections and holds them, with no goroutine
// of its own for any, so that a test can count the gateway's goroutines;
// the test reads and writes them itself.
type holdingUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []*heldUpstream // not yet taken by wait
	all   []*heldUpstream // closed at the end of the test
}

// heldUpstream is one connection the upstream holds: its PROXY header's
// source port tells which client it carries.
type heldUpstream struct {
	net.Conn
	r *bufio.Reader
}

func newHoldingUpstream(t testing.TB) *holdingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &holdingUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hc := &heldUpstream{Conn: c, r: bufio.NewReader(c)}
			u.mu.Lock()
			u.conns = append(u.conns, hc)
			u.all = append(u.all, hc)
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.all {
			c.Close()
		}
		u.mu.Unlock()
	})
	return u
}

// wait returns the upstream's new connections once there are n.
func (u *holdingUpstream) wait(t testing.TB, n int) []*heldUpstream {
	t.Helper()
	var conns []*heldUpstream
	eventually.Within(t, 15*time.Second, func() error {
		u.mu.Lock()
		defer u.mu.Unlock()
		if len(u.conns) != n {
			return fmt.Errorf("upstream holds %d connections, want %d", len(u.conns), n)
		}
		conns, u.conns = u.conns, nil
		return nil
	})
	return conns
}

// byClient reads each connection's PROXY header and returns the
// connections by the client port it names.
func byClient(t testing.TB, conns []*heldUpstream) map[int]*heldUpstream {
	t.Helper()
	m := map[int]*heldUpstream{}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		h, err := proxyproto.Read(c.r)
		if err != nil {
			t.Fatalf("upstream: PROXY header: %v", err)
		}
		m[h.SourceAddr.(*net.TCPAddr).Port] = c
	}
	return m
}

// readFull reads exactly len(want) bytes from r and fails t unless they
// are want.
func readFull(t testing.TB, who string, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
		t.Fatalf("%s read %q, %v; want %q", who, got, err, want)
	}
}

// mtlsClient opens an mtls connection to the gateway with a valid client
// certificate.
func mtlsClient(t testing.TB, p *pki, addr string) *tls.Conn {
	t.Helper()
	cfg := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}}
	c, _, err := dialTLS(t, addr, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestIdleMTLSParked: an idle terminated connection is parked in the
// relay's loops like a passthrough one: once n connections are through
// their handshakes, the gateway holds no goroutine for any of them (none
// serves, copies, or waits in crypto/tls), and each still relays both
// ways, after which it is parked again.
func TestIdleMTLSParked(t *testing.T) {
	p := newPKI(t)
	up := newHoldingUpstream(t)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.ln.Addr().String(), ""))
	addr := s.addr(t, "127.0.0.1:0")
	const n = 40
	base := settle(t, 10*time.Second, runtime.NumGoroutine)
	var clients []*tls.Conn
	for range n {
		clients = append(clients, mtlsClient(t, p, addr))
	}
	ups := byClient(t, up.wait(t, n))
	waitActive(t, s, n)
	noGoroutines := func() error {
		if got := goroutinesIn("gateway.(*Server).serveConn") + goroutinesIn("relay.(*pipeState).copyHalf") +
			goroutinesIn("crypto/tls.(*Conn).Read"); got != 0 {
			return fmt.Errorf("%d goroutines serve, copy or read %d idle mtls connections, want none", got, n)
		}
		// The clients and the upstream run no goroutine per connection
		// either: anything the process gained is the gateway's.
		if got := runtime.NumGoroutine() - base; got > 2 {
			return fmt.Errorf("%d goroutines more with %d idle mtls connections than with none; want none per connection", got, n)
		}
		return nil
	}
	eventually.Within(t, 15*time.Second, noGoroutines)

	for i, c := range clients {
		u := ups[c.NetConn().LocalAddr().(*net.TCPAddr).Port]
		if u == nil {
			t.Fatalf("client %d: no upstream connection names its port", i)
		}
		ping, pong := fmt.Sprintf("ping %d\n", i), fmt.Sprintf("pong %d\n", i)
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Write([]byte(ping)); err != nil {
			t.Fatal(err)
		}
		readFull(t, "upstream", u.r, ping)
		if _, err := u.Write([]byte(pong)); err != nil {
			t.Fatal(err)
		}
		readFull(t, "client", c, pong)
	}
	eventually.Within(t, 15*time.Second, noGoroutines)
	if got := s.count("127.0.0.1:0", "app", OutcomeProxied); got != 0 {
		t.Fatalf("%v connections ended; want all %d open", got, n)
	}
}

// TestIdleMTLSTimeout: timeouts.idle ends a parked mtls connection that
// carried a request and its response and then went silent: the client
// reads the end of the stream, the upstream too, and the connection is
// counted closed_idle.
func TestIdleMTLSTimeout(t *testing.T) {
	p := newPKI(t)
	up := newHoldingUpstream(t)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.ln.Addr().String(), "    timeouts: {idle: 1s}\n"))
	c := mtlsClient(t, p, s.addr(t, "127.0.0.1:0"))
	u := byClient(t, up.wait(t, 1))[c.NetConn().LocalAddr().(*net.TCPAddr).Port]
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	readFull(t, "upstream", u.r, "GET / HTTP/1.1\r\n\r\n")
	u.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	readFull(t, "client", c, "HTTP/1.1 204 No Content\r\n\r\n")

	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("client after the idle timeout: read %q, %v; want the end of the stream", b, err)
	}
	u.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(u.r); len(b) != 0 || err != nil {
		t.Fatalf("upstream after the idle timeout: read %q, %v; want the end of the stream", b, err)
	}
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeIdleTimeout, 1)
}

// TestMTLSHalfClose: a parked mtls connection passes each side's end of
// stream on and keeps the other direction open: the client's close_notify
// half-closes the upstream, which still answers; the upstream's FIN is a
// close_notify to the client, which still sends. An upstream that hangs
// up without a word is upstream_closed.
func TestMTLSHalfClose(t *testing.T) {
	p := newPKI(t)
	up := newHoldingUpstream(t)
	s, logs := startServerLogged(t, mtlsConfig(p, "127.0.0.1:0", up.ln.Addr().String(), ""))
	addr := s.addr(t, "127.0.0.1:0")
	const listener = "127.0.0.1:0"

	t.Run("client first", func(t *testing.T) {
		c := mtlsClient(t, p, addr)
		u := byClient(t, up.wait(t, 1))[c.NetConn().LocalAddr().(*net.TCPAddr).Port]
		c.SetDeadline(time.Now().Add(15 * time.Second))
		u.SetDeadline(time.Now().Add(15 * time.Second))
		c.Write([]byte("request"))
		c.CloseWrite()
		if b, err := io.ReadAll(u.r); string(b) != "request" || err != nil {
			t.Fatalf("upstream read %q, %v; want the request and the end of the stream", b, err)
		}
		u.Write([]byte("response"))
		u.Close()
		if b, err := io.ReadAll(c); string(b) != "response" || err != nil {
			t.Fatalf("client read %q, %v; want the response and the end of the stream", b, err)
		}
		s.waitCount(t, listener, "app", OutcomeProxied, 1)
	})

	t.Run("upstream first", func(t *testing.T) {
		c := mtlsClient(t, p, addr)
		u := byClient(t, up.wait(t, 1))[c.NetConn().LocalAddr().(*net.TCPAddr).Port]
		c.SetDeadline(time.Now().Add(15 * time.Second))
		u.SetDeadline(time.Now().Add(15 * time.Second))
		u.Write([]byte("banner"))
		u.Conn.(*net.TCPConn).CloseWrite()
		if b, err := io.ReadAll(c); string(b) != "banner" || err != nil {
			t.Fatalf("client read %q, %v; want the banner and close_notify", b, err)
		}
		if _, err := c.Write([]byte("still talking")); err != nil {
			t.Fatalf("client write after the upstream's end: %v", err)
		}
		readFull(t, "upstream", u.r, "still talking")
		c.CloseWrite()
		if b, err := io.ReadAll(u.r); len(b) != 0 || err != nil {
			t.Fatalf("upstream read %q, %v; want the end of the stream", b, err)
		}
		s.waitCount(t, listener, "app", OutcomeProxied, 2)
		lines := logs.waitConnections(t, 2)
		last := lines[len(lines)-1]
		if last["bytes_to_client"] != float64(len("banner")) || last["bytes_to_upstream"] != float64(len("still talking")) {
			t.Fatalf("log line counts %v bytes to the client and %v to the upstream; want %d and %d",
				last["bytes_to_client"], last["bytes_to_upstream"], len("banner"), len("still talking"))
		}
	})

	t.Run("upstream hangs up", func(t *testing.T) {
		c := mtlsClient(t, p, addr)
		u := up.wait(t, 1)[0]
		c.SetDeadline(time.Now().Add(15 * time.Second))
		u.Close()
		if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
			t.Fatalf("client read %q, %v; want close_notify", b, err)
		}
		c.Close()
		s.waitCount(t, listener, "app", OutcomeUpstreamClosed, 1)
	})
	if got := testutil.ToFloat64(s.metrics.active); got != 0 {
		t.Fatalf("%v connections still active", got)
	}
}

// TestMTLSBulk sends 16 MiB each way at once through a parked mtls
// connection. The client reads nothing until it has sent everything, so
// the records for it fill its socket and the loop must wait for room
// (holding what crypto/tls wrote, reading no more from the upstream) while
// the other direction goes on; no byte is lost or reordered.
func TestMTLSBulk(t *testing.T) {
	const size = 16 << 20
	p := newPKI(t)
	up := newHoldingUpstream(t)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.ln.Addr().String(), ""))
	c := mtlsClient(t, p, s.addr(t, "127.0.0.1:0"))
	u := byClient(t, up.wait(t, 1))[c.NetConn().LocalAddr().(*net.TCPAddr).Port]
	c.SetDeadline(time.Now().Add(60 * time.Second))
	u.SetDeadline(time.Now().Add(60 * time.Second))

	digest := func(seed byte) [32]byte {
		h := sha256.New()
		io.Copy(h, io.LimitReader(seeded(seed), size))
		return [32]byte(h.Sum(nil))
	}
	type got struct {
		sum [32]byte
		n   int64
		err error
	}
	read := func(r io.Reader, into chan<- got) {
		h := sha256.New()
		n, err := io.Copy(h, r)
		into <- got{[32]byte(h.Sum(nil)), n, err}
	}
	atUpstream, atClient := make(chan got, 1), make(chan got, 1)
	go func() {
		io.Copy(u, io.LimitReader(seeded(2), size))
		u.Conn.(*net.TCPConn).CloseWrite()
	}()
	go read(u.r, atUpstream)
	io.Copy(c, io.LimitReader(seeded(1), size))
	c.CloseWrite()
	go read(c, atClient)
	for _, r := range []struct {
		who  string
		got  got
		want [32]byte
	}{{"upstream", <-atUpstream, digest(1)}, {"client", <-atClient, digest(2)}} {
		if r.got.err != nil || r.got.n != size || r.got.sum != r.want {
			t.Fatalf("%s received %d bytes (err %v), digest match %v; want %d intact", r.who, r.got.n, r.got.err, r.got.sum == r.want, size)
		}
	}
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeProxied, 1)
}

// trickleConn writes each byte in a segment of its own once trickle is
// set.
type trickleConn struct {
	net.Conn
	trickle bool
}

func (c *trickleConn) Write(p []byte) (int, error) {
	if !c.trickle {
		return c.Conn.Write(p)
	}
	return len(p), send(c.Conn, p, true)
}

// TestMTLSRecordInPieces: a parked connection's records arriving a byte
// per segment are read in parts (the loop wakes for the first bytes of a
// record and finds the socket empty before its end, and crypto/tls keeps
// the part it has) and reach the upstream whole.
func TestMTLSRecordInPieces(t *testing.T) {
	p := newPKI(t)
	up := newHoldingUpstream(t)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.ln.Addr().String(), ""))
	raw, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &trickleConn{Conn: raw}
	c := tls.Client(tr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}})
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	u := byClient(t, up.wait(t, 1))[raw.LocalAddr().(*net.TCPAddr).Port]
	u.SetDeadline(time.Now().Add(30 * time.Second))
	tr.trickle = true
	for i := range 3 {
		msg := fmt.Sprintf("record %d, sent a byte at a time\n", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		readFull(t, "upstream", u.r, msg)
		u.Write([]byte("ok\n"))
		readFull(t, "client", c, "ok\n")
	}
}

// flightConn is a client's socket that can hold its writes back and send
// them in one segment: the client's last handshake flight together with
// the records written after it, or records together with close_notify. In
// trickle mode each byte goes in a segment of its own, so records arrive
// split across reads.
type flightConn struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	holdAt  int // writes from this one on are held (0: none)
	held    []byte
	trickle bool
}

func (c *flightConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	if c.holdAt > 0 && c.writes >= c.holdAt {
		c.held = append(c.held, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	trickle := c.trickle
	c.mu.Unlock()
	return len(p), send(c.Conn, p, trickle)
}

// hold holds every write from now on until release.
func (c *flightConn) hold() {
	c.mu.Lock()
	c.holdAt = c.writes + 1
	c.mu.Unlock()
}

// release sends what was held, in one write, and stops holding.
func (c *flightConn) release() error {
	c.mu.Lock()
	held := c.held
	c.held, c.holdAt = nil, 0
	c.mu.Unlock()
	_, err := c.Conn.Write(held)
	return err
}

// stressRound writes the requests through c, pipelined (each its own
// records, all sent before any echo is read) and checks that the upstream's
// echo of all of them comes back intact.
func stressRound(c *tls.Conn, fc *flightConn, reqs [][]byte, coalesce bool) error {
	var want []byte
	for _, r := range reqs {
		want = append(want, r...)
	}
	echoed := make(chan error, 1)
	go func() {
		got := make([]byte, len(want))
		n, err := io.ReadFull(c, got)
		switch {
		case err != nil:
			echoed <- fmt.Errorf("echo: read %d of %d bytes: %w", n, len(want), err)
		case !bytes.Equal(got, want):
			echoed <- fmt.Errorf("echo: %d bytes differ from what was sent", len(want))
		default:
			echoed <- nil
		}
	}()
	if coalesce {
		fc.hold()
	}
	for _, r := range reqs {
		if _, err := c.Write(r); err != nil {
			return err
		}
	}
	if coalesce {
		if err := fc.release(); err != nil {
			return err
		}
	}
	return <-echoed
}

// TestMTLSParkedStress hunts lost wake-ups in parked mtls connections:
// many connections at once, each sending pipelined requests that must all
// come back from an echo upstream. Connections send their first records in
// the same segment as the handshake's last flight (crypto/tls reads them
// with it, so no event announces them once parked), some send records a
// byte per segment, some big enough to fill the sockets (partial writes),
// some resume, some speak TLS 1.2; a reload happens while they are parked,
// and each ends with close_notify sent with its last records, after which
// the echo and the upstream's end (close_notify) must arrive. A hung
// connection fails the test at its deadline, naming what it waited for.
func TestMTLSParkedStress(t *testing.T) {
	n := 150
	if testing.Short() {
		n = 40
	}
	p := newPKI(t)
	up := newEchoUpstream(t)
	dir := t.TempDir()
	// A loaded machine (the race detector, 2 cores shared) can take longer
	// than the usual limits to run this many handshakes and dials at once:
	// the test is after lost wake-ups, not slow handshakes.
	config := func(extra string) string {
		return strings.Replace(mtlsConfig(p, "127.0.0.1:0", up.address(), extra),
			"timeouts: {handshake: 5s}", "timeouts: {handshake: 1m, upstream_dial: 1m, client_hello: 1m}", 1)
	}
	logs := &logLines{}
	s := startServerLogging(t, dir, config(""), slog.New(slog.NewJSONHandler(logs, nil)))
	addr := s.addr(t, "127.0.0.1:0")
	cache := tls.NewLRUClientSessionCache(64)

	requests := func(i, round int) [][]byte {
		sizes := [][]int{{1, 100, 1000}, {16 << 10, 1}, {17 << 10, 5, 40 << 10}, {300 << 10}, {7, 7, 7, 7, 7, 7, 7, 7}}
		var reqs [][]byte
		for j, size := range sizes[(i+round)%len(sizes)] {
			r := make([]byte, size)
			io.ReadFull(seeded(byte(i*7+round*3+j)), r)
			reqs = append(reqs, r)
		}
		return reqs
	}
	var parked, reloaded sync.WaitGroup
	reloaded.Add(1)
	parked.Add(n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- func() (err error) {
				waited, local := false, ""
				defer func() {
					if !waited {
						parked.Done()
					}
					if err != nil {
						err = fmt.Errorf("connection %d (%s): %w", i, local, err)
					}
				}()
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer raw.Close()
				local = raw.LocalAddr().String()
				fc := &flightConn{Conn: raw}
				cfg := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}}
				tls13 := i%5 != 4
				if !tls13 {
					cfg.MaxVersion = tls.VersionTLS12
				}
				if i%3 == 1 {
					cfg.ClientSessionCache = cache
				}
				c := tls.Client(fc, cfg)
				c.SetDeadline(time.Now().Add(time.Minute))
				if tls13 {
					// The client's last flight waits for the first requests.
					fc.holdAt = 2
				}
				if err := c.Handshake(); err != nil {
					return fmt.Errorf("handshake: %w", err)
				}
				if err := stressRound(c, fc, requests(i, 0), tls13); err != nil {
					return fmt.Errorf("first round: %w", err)
				}
				if i%4 != 0 {
					// Parked and idle until the reload is done.
					waited = true
					parked.Done()
					reloaded.Wait()
				}
				fc.trickle = i%6 == 2
				if err := stressRound(c, fc, requests(i, 1), i%2 == 0); err != nil {
					return fmt.Errorf("second round: %w", err)
				}
				fc.trickle = false
				last := requests(i, 2)
				fc.hold()
				for _, r := range last[:len(last)-1] {
					c.Write(r)
				}
				// The last request, close_notify and the echo's end.
				r := last[len(last)-1]
				echoed := make(chan error, 1)
				go func() {
					var want []byte
					for _, r := range last {
						want = append(want, r...)
					}
					got, err := io.ReadAll(c)
					switch {
					case err != nil:
						echoed <- fmt.Errorf("last echo: read %d of %d bytes: %w", len(got), len(want), err)
					case !bytes.Equal(got, want):
						echoed <- fmt.Errorf("last echo: %d bytes back, want %d intact", len(got), len(want))
					default:
						echoed <- nil
					}
				}()
				c.Write(r)
				c.CloseWrite()
				// CloseWrite ends the socket's write deadline once
				// close_notify is (held) written.
				raw.SetWriteDeadline(time.Now().Add(time.Minute))
				if err := fc.release(); err != nil {
					return err
				}
				return <-echoed
			}()
		}()
	}
	parked.Wait()
	cfgPath := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(cfgPath, []byte(config("    timeouts: {idle: 5m}\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadFile(cfgPath); err != nil {
		t.Fatalf("reload: %v", err)
	}
	reloaded.Done()
	failed := false
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
			failed = true
		}
	}
	if failed {
		// The gateway's account of the connections that did not end as
		// proxied.
		for _, l := range logs.connections(t) {
			if l["outcome"] != string(OutcomeProxied) {
				t.Logf("gateway: %v", l)
			}
		}
	}
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeProxied, float64(n))
}
