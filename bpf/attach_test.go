package bpf

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/bpf/netnstest"
	"github.com/edgegate/edgegate/gateway/eventually"
)

// The namespaces' addresses: 198.18.0.0/15 and 2001:2::/48 are reserved
// for benchmarking and never routed.
var (
	nsServer4 = netnstest.Server4
	nsClient4 = netnstest.Client4
	nsServer6 = netnstest.Server6
	nsClient6 = netnstest.Client6
)

const (
	nsPort     = 443
	serverVeth = "egs0"
	clientVeth = "egc0"
	smallMSS   = 88 // Linux's minimum: a post-quantum hello needs ~20 segments
	waitLimit  = 30 * time.Second
)

// testNetns is a server and a client namespace joined by a veth pair.
type testNetns struct {
	server, client string
}

func run(t testing.TB, args ...string) { t.Helper(); netnstest.Run(t, args...) }

func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	p := netnstest.New(t, netnstest.Options{Prefix: "eg", ServerVeth: serverVeth, ClientVeth: clientVeth})
	return &testNetns{server: p.Server, client: p.Client}
}

// inNetns runs f on a thread inside the named namespace (netnstest.In).
func inNetns[T any](name string, f func() (T, error)) (T, error) { return netnstest.In(name, f) }

// testCert returns a self-signed certificate for edgegate.test and a pool
// trusting it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "edgegate.test"},
		DNSNames:     []string{"edgegate.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// nsServer is the listener edgegate would own: each accepted connection is
// handed to the test, which decides what to do with it.
type nsServer struct {
	ln    net.Listener
	conns chan net.Conn
}

func startServer(t testing.TB, n *testNetns) *nsServer {
	t.Helper()
	ln, err := inNetns(n.server, func() (net.Listener, error) {
		return net.Listen("tcp", fmt.Sprintf(":%d", nsPort))
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &nsServer{ln: ln, conns: make(chan net.Conn, 16)}
	go func() {
		defer close(s.conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *nsServer) accept(t testing.TB) net.Conn {
	t.Helper()
	select {
	case c, ok := <-s.conns:
		if !ok {
			t.Fatal("listener closed")
		}
		return c
	case <-time.After(waitLimit):
		t.Fatal("no connection accepted")
	}
	return nil
}

// dial connects from the client namespace with a small MSS.
func dial(n *testNetns, dst netip.Addr, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, smallMSS)
		})
		return errors.Join(err, serr)
	}}
	return inNetns(n.client, func() (net.Conn, error) {
		return d.Dial("tcp", netip.AddrPortFrom(dst, nsPort).String())
	})
}

// waitCounter waits until verdict's counter reaches at least want.
func waitCounter(t testing.TB, g *Guard, verdict string, want uint64) {
	t.Helper()
	eventually.Within(t, waitLimit, func() error {
		c, err := g.Counters()
		if err != nil {
			return err
		}
		if c[verdict] < want {
			return fmt.Errorf("counter %s stayed at %d, want %d (all: %v)", verdict, c[verdict], want, c)
		}
		return nil
	})
}

func counter(t testing.TB, g *Guard, verdict string) uint64 {
	t.Helper()
	c, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[verdict]
}

// tlsExchange completes a post-quantum TLS handshake from the client
// namespace through the guard, then a ping/pong. It returns an error rather
// than failing the test so that load generators can call it.
func tlsExchange(n *testNetns, s *nsServer, cert tls.Certificate, pool *x509.CertPool,
	dst netip.Addr, split bool) error {
	raw, err := dial(n, dst, waitLimit)
	if err != nil {
		return err
	}
	defer raw.Close()
	var sc net.Conn
	select {
	case sc = <-s.conns:
		if sc == nil {
			return errors.New("listener closed")
		}
	case <-time.After(waitLimit):
		return errors.New("no connection accepted")
	}
	defer sc.Close()

	srvErr := make(chan error, 1)
	go func() {
		sc.SetDeadline(time.Now().Add(waitLimit))
		ts := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}})
		buf := make([]byte, 4)
		if _, err := io.ReadFull(ts, buf); err != nil {
			srvErr <- fmt.Errorf("server read: %w", err)
			return
		}
		_, err := ts.Write([]byte("pong"))
		srvErr <- err
	}()

	var conn net.Conn = raw
	if split {
		conn = &netnstest.SplitConn{Conn: raw}
	}
	raw.SetDeadline(time.Now().Add(waitLimit))
	tc := tls.Client(conn, &tls.Config{
		ServerName:       "edgegate.test",
		RootCAs:          pool,
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768},
	})
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("handshake to %s through the guard: %w", dst, err)
	}
	if _, err := tc.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "pong" {
		return fmt.Errorf("read pong: %q, %v", buf, err)
	}
	return <-srvErr
}

// junkNeverArrives sends bytes that are not a ClientHello and checks that
// the guard refuses the segment and its retransmission: the server's
// socket reads nothing and is reset (each refused segment went up the
// local stack as a RST), and the client hears nothing back, neither data
// nor a RST.
func junkNeverArrives(t testing.TB, n *testNetns, s *nsServer, g *Guard, dst netip.Addr, junk []byte) {
	t.Helper()
	before := counter(t, g, "drop_not_tls")
	c, err := dial(n, dst, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := s.accept(t)
	defer sc.Close()

	var got atomic.Int64
	readDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			m, err := sc.Read(buf)
			got.Add(int64(m))
			if err != nil {
				readDone <- err
				return
			}
		}
	}()
	if _, err := c.Write(junk); err != nil {
		t.Fatal(err)
	}
	// The first transmission and one retransmission were both refused.
	waitCounter(t, g, "drop_not_tls", before+2)
	sc.SetReadDeadline(time.Now().Add(waitLimit))
	err = <-readDone
	if got.Load() != 0 {
		t.Fatalf("server read %d bytes of %q", got.Load(), junk)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read ended with %v, want the connection reset by the guard", err)
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if m, err := c.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read %d bytes, %v after its junk; want nothing (the deadline)", m, err)
	}
}

// blockedThenPasses has a source fail handshakes until Offenders blocks it,
// checks that its next SYN is dropped in the kernel, and that the same
// connection attempt completes once the block expires.
func blockedThenPasses(t testing.TB, n *testNetns, s *nsServer, g *Guard, cert tls.Certificate, dst netip.Addr) {
	t.Helper()
	const blockFor = 1500 * time.Millisecond
	off := NewOffenders(2, time.Minute, blockFor, nil, 64, g.Block)
	blocked := false
	for i := 0; i < 2; i++ {
		c, err := dial(n, dst, waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		sc := s.accept(t)
		go func() {
			// A client that names a host edgegate does not serve: refused.
			tc := tls.Client(c, &tls.Config{ServerName: "unknown.test", InsecureSkipVerify: true})
			tc.SetDeadline(time.Now().Add(waitLimit))
			tc.Handshake()
			c.Close()
		}()
		sc.SetDeadline(time.Now().Add(waitLimit))
		ts := tls.Server(sc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if h.ServerName != "edgegate.test" {
				return nil, fmt.Errorf("unknown server name %q", h.ServerName)
			}
			return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
		}})
		if err := ts.Handshake(); err == nil {
			t.Fatal("handshake with an unknown name succeeded")
		}
		src := sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		blocked = off.Offence(src)
		sc.Close()
	}
	if !blocked {
		t.Fatal("two refused handshakes did not block the source")
	}
	client := nsClient4
	if dst.Is6() {
		client = nsClient6
	}
	if b, err := g.Blocked(client); err != nil || !b {
		t.Fatalf("Blocked(%s) = %v, %v after Offenders blocked it", client, b, err)
	}

	before := counter(t, g, "drop_blocked")
	dialed := make(chan error, 1)
	var c net.Conn
	go func() {
		var err error
		c, err = dial(n, dst, waitLimit)
		dialed <- err
	}()
	waitCounter(t, g, "drop_blocked", before+1)
	// The SYN retransmission after the block expired gets through.
	if err := <-dialed; err != nil {
		t.Fatalf("dial after the block expired: %v", err)
	}
	c.Close()
	s.accept(t).Close()
}

func TestAttachedGuard(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	s := startServer(t, n)
	cert, pool := testCert(t)
	pin := testPinPath(t)

	for _, mode := range []Mode{ModeXDPNative, ModeXDPGeneric, ModeTCX} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := Config{Interfaces: []string{serverVeth}, Mode: mode, Ports: []uint16{nsPort},
				PinPath: pin, FlowTableSize: 1024}
			g, err := inNetns(n.server, func() (*Guard, error) { return Open(cfg, testLogger(t)) })
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if got := g.Modes()[serverVeth]; got != string(mode) {
				t.Fatalf("attached as %q, want %q", got, mode)
			}

			for _, dst := range []netip.Addr{nsServer4, nsServer6} {
				before := counter(t, g, "pass_tls")
				for _, split := range []bool{false, true} {
					b0 := counter(t, g, "pass_tls")
					if err := tlsExchange(n, s, cert, pool, dst, split); err != nil {
						t.Fatal(err)
					}
					// Split: a first segment shorter than 9 bytes leaves bytes
					// for a later segment, so the check runs at least twice.
					if split && counter(t, g, "pass_tls") < b0+2 {
						t.Fatalf("%s: split hello judged in %d segment(s), want a short first segment and more",
							dst, counter(t, g, "pass_tls")-b0)
					}
				}
				if counter(t, g, "pass_tls") < before+2 {
					t.Fatalf("%s: handshakes passed without the guard judging them", dst)
				}
				for _, junk := range [][]byte{httpGet, sshBanner, []byte("\x8c\x01\xfe\x33random-bytes\x00\xff")} {
					junkNeverArrives(t, n, s, g, dst, junk)
				}
			}
			blockedThenPasses(t, n, s, g, cert, nsServer4)
		})
	}
}

// TestRefusedNeverAccepted runs the guard in front of a listener with
// TCP_DEFER_ACCEPT, as edgegate's are: the kernel accepts a connection only
// once data arrives. A client that sends HTTP and a TLS client connect at
// the same time; the TLS client is accepted, the HTTP client never is, the
// server holds nothing for it (its refused segment went up the stack as a
// RST, which ended the pending connection), and the HTTP client hears
// nothing back, neither data nor a RST.
func TestRefusedNeverAccepted(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	pin := testPinPath(t)
	for _, mode := range []Mode{ModeXDPNative, ModeXDPGeneric, ModeTCX} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := Config{Interfaces: []string{serverVeth}, Mode: mode, Ports: []uint16{nsPort}, PinPath: pin, FlowTableSize: 1024}
			g, err := inNetns(n.server, func() (*Guard, error) { return Open(cfg, testLogger(t)) })
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			for _, dst := range []netip.Addr{nsServer4, nsServer6} {
				refusedNeverAccepted(t, n, g, dst)
			}
		})
	}
}

func refusedNeverAccepted(t *testing.T, n *testNetns, g *Guard, dst netip.Addr) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 5)
		})
		return errors.Join(err, serr)
	}}
	ln, err := inNetns(n.server, func() (net.Listener, error) {
		return lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(dst, nsPort).String())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	before := counter(t, g, "drop_not_tls")

	httpClient, err := dial(n, dst, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer httpClient.Close()
	tlsClient, err := dial(n, dst, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer tlsClient.Close()
	if _, err := httpClient.Write(httpGet); err != nil {
		t.Fatal(err)
	}
	go tls.Client(tlsClient, &tls.Config{ServerName: "edgegate.test", InsecureSkipVerify: true}).Handshake()

	// Accept for 2 seconds: the TLS client, and nothing else.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	var accepted []net.Conn
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
		defer c.Close()
		accepted = append(accepted, c)
	}
	var ports []int
	for _, c := range accepted {
		ports = append(ports, c.RemoteAddr().(*net.TCPAddr).Port)
	}
	tlsPort := tlsClient.LocalAddr().(*net.TCPAddr).Port
	httpPort := httpClient.LocalAddr().(*net.TCPAddr).Port
	if len(ports) != 1 || ports[0] != tlsPort {
		t.Fatalf("%s: accepted connections from ports %v; want only the TLS client's %d (the HTTP client is %d)",
			dst, ports, tlsPort, httpPort)
	}
	first := make([]byte, 1)
	accepted[0].SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(accepted[0], first); err != nil || first[0] != 0x16 {
		t.Fatalf("%s: the accepted connection starts %x, %v; want a TLS handshake record", dst, first, err)
	}
	if got := counter(t, g, "drop_not_tls"); got <= before {
		t.Fatalf("%s: drop_not_tls stayed at %d", dst, got)
	}
	if st, ok := serverSocket(t, n, dst, httpPort); ok {
		t.Fatalf("%s: the server still holds a socket for the HTTP client, in state %s", dst, st)
	}
	httpClient.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if m, err := httpClient.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the HTTP client read %d bytes, %v; want nothing (the deadline)", dst, m, err)
	}
}

// serverSocket looks in the server namespace's /proc/net/tcp (or tcp6) for
// a socket whose remote port is port, and returns its state (hex, as the
// file has it: 03 is SYN_RECV).
func serverSocket(t *testing.T, n *testNetns, dst netip.Addr, port int) (string, bool) {
	t.Helper()
	file := "/proc/thread-self/net/tcp"
	if dst.Is6() {
		file += "6"
	}
	b, err := inNetns(n.server, func() ([]byte, error) { return os.ReadFile(file) })
	if err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[2], suffix) {
			return f[3], true
		}
	}
	return "", false
}

func TestAutoModeOnVeth(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	cfg := Config{Interfaces: []string{serverVeth}, Ports: []uint16{nsPort}, PinPath: testPinPath(t), FlowTableSize: 1024}
	g, err := inNetns(n.server, func() (*Guard, error) { return Open(cfg, testLogger(t)) })
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// veth has a native XDP implementation, so auto must pick it.
	if got := g.Modes()[serverVeth]; got != string(ModeXDPNative) {
		t.Fatalf("auto attached as %q, want xdp-native", got)
	}
}

// TestRestartKeepsBlocklist restarts the guard (Close, Open on the same pin
// path) while a client keeps completing handshakes, and checks that a
// blocked source stays blocked in the new instance.
func TestRestartKeepsBlocklist(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	s := startServer(t, n)
	cert, pool := testCert(t)
	cfg := Config{Interfaces: []string{serverVeth}, Mode: ModeTCX, Ports: []uint16{nsPort},
		PinPath: testPinPath(t), FlowTableSize: 1024}
	open := func() *Guard {
		g, err := inNetns(n.server, func() (*Guard, error) { return Open(cfg, testLogger(t)) })
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	g1 := open()
	if err := g1.Block(nsClient6, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	// Load: IPv4 handshakes back to back across the restart.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var handshakes atomic.Int64
	loadErr := make(chan error, 1)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := tlsExchange(n, s, cert, pool, nsServer4, false); err != nil {
				loadErr <- err
				return
			}
			handshakes.Add(1)
		}
	})
	waitHandshakes := func(want int64) {
		t.Helper()
		for handshakes.Load() < want {
			select {
			case err := <-loadErr:
				t.Fatalf("handshake under load: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitHandshakes(3)
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	g2 := open()
	defer g2.Close()
	waitHandshakes(handshakes.Load() + 3)
	close(stop)
	wg.Wait()
	select {
	case err := <-loadErr:
		t.Fatalf("handshake under load: %v", err)
	default:
	}

	if b, err := g2.Blocked(nsClient6); err != nil || !b {
		t.Fatalf("block lost across restart: %v, %v", b, err)
	}
	dialed := make(chan error, 1)
	var c net.Conn
	go func() {
		var err error
		c, err = dial(n, nsServer6, waitLimit)
		dialed <- err
	}()
	waitCounter(t, g2, "drop_blocked", 1)
	if err := g2.Unblock(nsClient6); err != nil {
		t.Fatal(err)
	}
	if err := <-dialed; err != nil {
		t.Fatalf("dial after unblock: %v", err)
	}
	c.Close()
	s.accept(t).Close()
}

// TestAutoFallback checks the auto chain on an interface without a native
// XDP implementation (ifb): the first guard gets generic XDP; a second
// guard on the same interface finds XDP taken and falls back to TCX.
func TestAutoFallback(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	run(t, "ip", "-n", n.server, "link", "add", "egd0", "type", "ifb")
	run(t, "ip", "-n", n.server, "link", "set", "egd0", "up")
	open := func() *Guard {
		cfg := Config{Interfaces: []string{"egd0"}, Ports: []uint16{nsPort}, PinPath: testPinPath(t), FlowTableSize: 1024}
		g, err := inNetns(n.server, func() (*Guard, error) { return Open(cfg, testLogger(t)) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return g
	}
	if got := open().Modes()["egd0"]; got != string(ModeXDPGeneric) {
		t.Fatalf("first guard attached as %q, want xdp-generic", got)
	}
	if got := open().Modes()["egd0"]; got != string(ModeTCX) {
		t.Fatalf("second guard attached as %q, want tcx", got)
	}
}

// TestHandOver is an upgrade's view of the guard: a second guard opened on
// the same interface and pin path takes over the first one's attachment by
// swapping in its own program (its counters move from then on), the first
// lets go without detaching it, junk is dropped throughout, and the last
// Close detaches and removes the pinned link.
func TestHandOver(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	s := startServer(t, n)
	pin := testPinPath(t)
	for _, mode := range []Mode{ModeXDPNative, ModeTCX} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := Config{Interfaces: []string{serverVeth}, Mode: mode, Ports: []uint16{nsPort}, PinPath: pin, FlowTableSize: 1024}
			open := func() *Guard {
				g, err := inNetns(n.server, func() (*Guard, error) { return Open(cfg, testLogger(t)) })
				if err != nil {
					t.Fatal(err)
				}
				return g
			}
			old := open()
			defer old.Close()
			junkNeverArrives(t, n, s, old, nsServer4, httpGet)

			// A stream of junk connections runs across the handover: none
			// may ever reach the socket.
			stop := make(chan struct{})
			leaked := make(chan int, 1)
			go func() {
				total := 0
				for {
					select {
					case <-stop:
						leaked <- total
						return
					default:
					}
					c, err := dial(n, nsServer4, waitLimit)
					if err != nil {
						continue
					}
					c.Write(sshBanner)
					sc := s.accept(t)
					sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
					m, _ := sc.Read(make([]byte, 64))
					total += m
					sc.Close()
					c.Close()
				}
			}()

			next := open()
			defer next.Close()
			if got := next.Modes()[serverVeth]; got != string(mode) {
				t.Fatalf("successor attached as %q, want %q (taken over)", got, mode)
			}
			if err := old.Release(); err != nil {
				t.Fatal(err)
			}
			close(stop)
			if m := <-leaked; m != 0 {
				t.Fatalf("%d junk bytes reached the socket during the handover", m)
			}
			junkNeverArrives(t, n, s, next, nsServer4, httpGet)
			if _, err := os.Stat(next.linkPinPath(serverVeth, mode)); err != nil {
				t.Fatalf("the attachment is not pinned for the next process: %v", err)
			}
			if err := next.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(next.linkPinPath(serverVeth, mode)); !os.IsNotExist(err) {
				t.Fatalf("Close left the pinned attachment: %v", err)
			}
			// Detached: junk reaches the socket again.
			c, err := dial(n, nsServer4, waitLimit)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(sshBanner)
			sc := s.accept(t)
			defer sc.Close()
			sc.SetReadDeadline(time.Now().Add(waitLimit))
			if m, err := sc.Read(make([]byte, 64)); m == 0 {
				t.Fatalf("after Close the guard still drops: %v", err)
			}
		})
	}
}
