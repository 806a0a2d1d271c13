package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// TestInboundProxy puts edgegate behind an L4 balancer: a PROXY header from
// a trusted address is honoured (its client address is forwarded upstream),
// anything else on that listener is closed without a response.
func TestInboundProxy(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, nil)
	s := startServer(t, yamlf(`
listen:
  - address: "127.0.0.1:0"
    accept_proxy_protocol: true
    trusted_proxies: ["127.0.0.0/8"]
  - address: "[::1]:0"
    accept_proxy_protocol: true
    trusted_proxies: ["192.0.2.0/24"]
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	hello := readHello(t, "go-pq.bin")
	client := netip.MustParseAddrPort("203.0.113.7:40000")
	orig := netip.MustParseAddrPort("198.51.100.1:443")

	for _, version := range []byte{1, 2} {
		h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(orig))
		hdr, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		for _, oneByte := range []bool{false, true} {
			c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
			if err != nil {
				t.Fatal(err)
			}
			// The spec has a balancer send its header at once. Header and
			// hello in one segment: the bytes the PROXY reader buffers past
			// its header must still reach the upstream; or the hello in
			// 1-byte segments after it.
			if oneByte {
				c.Write(hdr)
				send(c, hello, true)
			} else {
				c.Write(append(append([]byte{}, hdr...), hello...))
			}
			c.(*net.TCPConn).CloseWrite()
			uc := up.next(t)
			if !bytes.Equal(uc.data, hello) {
				t.Fatalf("v%d: upstream got %d bytes, want the %d-byte hello", version, len(uc.data), len(hello))
			}
			src, dst, _ := uc.header.TCPAddrs()
			if src.AddrPort() != client || dst.AddrPort() != orig {
				t.Fatalf("v%d: forwarded header says %v -> %v; want the balancer's %v -> %v", version, src, dst, client, orig)
			}
			c.Close()
		}
	}
	s.waitCount(t, "127.0.0.1:0", "www", OutcomeProxied, 4)

	t.Run("no header from a trusted proxy", func(t *testing.T) {
		c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello)
		expectSilentClose(t, c)
		s.waitCount(t, "127.0.0.1:0", "", OutcomeBadProxyHeader, 1)
	})
	t.Run("untrusted source", func(t *testing.T) {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(orig))
		hdr, _ := h.Format()
		c, err := net.Dial("tcp", s.addr(t, "[::1]:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(append(hdr, hello...))
		expectSilentClose(t, c)
		s.waitCount(t, "[::1]:0", "", OutcomeUntrustedProxy, 1)
	})
	up.expectNone(t)
}

// TestMain lets the test binary double as a client process that holds
// connections (see holdConnections).
func TestMain(m *testing.M) {
	if addr := os.Getenv("EDGEGATE_TEST_HOLD"); addr != "" {
		holdConnections(addr)
		return
	}
	os.Exit(m.Run())
}

// holdConnections opens up to 1,024 connections to addr, each with a partial hello,
// says "ready", and holds them until its stdin closes. It starts when
// the parent writes a line.
func holdConnections(addr string) {
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n') // wait for the parent's go
	var conns []net.Conn
	for range 1024 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			break
		}
		c.Write([]byte{0x16, 0x03, 0x01})
		conns = append(conns, c)
	}
	fmt.Println("ready", len(conns))
	io.Copy(io.Discard, in)
}

// TestAcceptOutOfFiles runs the gateway out of file descriptors: accept
// fails, the gateway backs off (no spinning, no exit) and counts it, and it
// serves again as soon as descriptors are free.
func TestAcceptOutOfFiles(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {client_hello: 30s}
vhosts: [{name: www, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	addr := s.addr(t, "127.0.0.1:0")

	// The clients live in another process, so only the gateway's side of
	// each connection counts against this process's limit.
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), "EDGEGATE_TEST_HOLD="+addr)
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer stdin.Close()
	// Earlier tests' sockets may still be closing: let the count settle
	// before basing the limit on it.
	n := settle(t, 20*time.Second, func() int { return fdCount(t) })
	lim := old
	lim.Cur = uint64(n + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
			restored = true
		}
	}
	defer restore()
	io.WriteString(stdin, "go\n")
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		t.Fatalf("holder: %q", line)
	}
	// The failure's details are gathered only once it has failed: counting
	// descriptors opens one, which may fail while they are exhausted.
	if err := eventually.Poll(20*time.Second, func() error {
		if testutil.ToFloat64(s.metrics.acceptErrors) == 0 {
			return errors.New("accept never failed")
		}
		return nil
	}); err != nil {
		s.admission.mu.Lock()
		admitted := s.admission.total
		s.admission.mu.Unlock()
		t.Fatalf("%v; the limit did not bite (limit %d, %d fds open, holder: %q, admitted %d)", err, lim.Cur, fdCount(t), line, admitted)
	}
	// Backing off: over a second, a handful of failed accepts, not
	// thousands. The second is the window the rate is measured over, not a
	// wait for anything.
	before := testutil.ToFloat64(s.metrics.acceptErrors)
	time.Sleep(time.Second)
	if n := testutil.ToFloat64(s.metrics.acceptErrors) - before; n > 50 {
		t.Fatalf("%v accept errors in a second: spinning", n)
	}
	restore()
	stdin.Close()
	holder.Wait()

	hello := readHello(t, "go-pq.bin")
	eventually.Within(t, 20*time.Second, func() error {
		if !proxied(t, dialFrom(t, "127.0.0.1", addr), hello) {
			return errors.New("the gateway did not recover")
		}
		return nil
	})
}
