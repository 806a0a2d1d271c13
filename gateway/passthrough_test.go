package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/eventually"
	proxyproto "github.com/pires/go-proxyproto"
)

// vectors maps each captured hello to the vhost its SNI must reach
// ("" = no SNI: closed).
var vectors = []struct {
	file  string
	vhost string
}{
	{"go-pq.bin", "go"},
	{"go-pq-split3.bin", "go"},
	{"chromium.bin", "chromium"},
	{"curl.bin", "wild"},
	{"openssl-tls12-sni.bin", "wild"},
	{"openssl-tls13-sni.bin", "wild"},
	{"openssl-tls13-trailing-dot.bin", "dot"},
}

// TestPassthroughVectors sends every captured hello, in one write and in
// 1-byte segments, over IPv4 and IPv6, with PROXY v1 and v2, and checks that
// the right upstream receives a correct PROXY header followed by exactly the
// bytes the client sent, and that its reply comes back after the client's
// half-close.
func TestPassthroughVectors(t *testing.T) {
	for _, pp := range []string{"v1", "v2"} {
		for _, fam := range []struct{ name, listen, up string }{
			{"ipv4", "127.0.0.1:0", "127.0.0.1:0"},
			{"ipv6", "[::1]:0", "[::1]:0"},
		} {
			t.Run(pp+"/"+fam.name, func(t *testing.T) {
				ups := map[string]*testUpstream{}
				for _, name := range []string{"go", "chromium", "wild", "dot"} {
					ups[name] = newUpstream(t, "tcp", fam.up, true, []byte("reply from "+name))
				}
				s := startServer(t, yamlf(`
listen: [{address: %q}]
vhosts:
  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: %s}}
  - {name: chromium, hosts: [CHROMIUM.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: %s}}
  - {name: wild, hosts: ["*.example.test"], mode: passthrough, upstream: {address: %q, proxy_protocol: %s}}
  - {name: dot, hosts: [dot.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: %s}}
`, fam.listen, ups["go"].address(), pp, ups["chromium"].address(), pp, ups["wild"].address(), pp, ups["dot"].address(), pp))
				addr := s.addr(t, fam.listen)
				for _, vec := range vectors {
					hello := readHello(t, vec.file)
					for _, oneByte := range []bool{false, true} {
						c, err := net.Dial("tcp", addr)
						if err != nil {
							t.Fatal(err)
						}
						if err := send(c, hello, oneByte); err != nil {
							t.Fatalf("%s: send: %v", vec.file, err)
						}
						c.(*net.TCPConn).CloseWrite()
						uc := ups[vec.vhost].next(t)
						if uc.err != nil {
							t.Fatalf("%s: upstream: %v", vec.file, uc.err)
						}
						if !bytes.Equal(uc.data, hello) {
							t.Fatalf("%s (1-byte=%v): upstream got %d bytes, want the %d sent, byte-identical", vec.file, oneByte, len(uc.data), len(hello))
						}
						checkHeader(t, uc.header, pp, c, vec.vhost)
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						reply, err := io.ReadAll(c)
						if err != nil || string(reply) != "reply from "+vec.vhost {
							t.Fatalf("%s: client got %q, %v", vec.file, reply, err)
						}
						c.Close()
					}
				}
				for _, u := range ups {
					u.expectNone(t)
				}
				s.waitCount(t, fam.listen, "go", OutcomeProxied, 4)
				s.waitCount(t, fam.listen, "wild", OutcomeProxied, 6)
			})
		}
	}
}

// checkHeader asserts a PROXY header names the client's own address as
// source and the gateway's as destination, and (v2) the SNI as authority.
func checkHeader(t testing.TB, h *proxyproto.Header, version string, c net.Conn, vhost string) {
	t.Helper()
	if h == nil {
		t.Fatal("no PROXY header")
	}
	if want := map[string]byte{"v1": 1, "v2": 2}[version]; h.Version != want {
		t.Fatalf("PROXY version %d, want %d", h.Version, want)
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		t.Fatalf("PROXY header has no TCP addresses: %+v", h)
	}
	if got, want := src.AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort(); got != want {
		t.Fatalf("PROXY source %v, want the client %v", got, want)
	}
	if got, want := dst.AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != want {
		t.Fatalf("PROXY destination %v, want the gateway %v", got, want)
	}
	if version == "v2" {
		tlvs, err := h.TLVs()
		if err != nil {
			t.Fatal(err)
		}
		var authority string
		for _, tlv := range tlvs {
			if tlv.Type == proxyproto.PP2_TYPE_AUTHORITY {
				authority = string(tlv.Value)
			}
		}
		if want := authorityFor[vhost]; authority == "" || want != "*" && authority != want {
			t.Fatalf("PP2_TYPE_AUTHORITY %q, want %q", authority, authorityFor[vhost])
		}
	}
}

// authorityFor is the normalised SNI each vhost's vectors carry ("*": several).
var authorityFor = map[string]string{
	"app": "app.example.test", "pinned": "other.example.test",
	"go": "go.example.test", "chromium": "chromium.example.test", "wild": "*", "dot": "dot.example.test",
}

// TestClosedWithoutResponse sends what a gateway on port 443 must turn away
// and checks the client receives no byte, the upstream is never dialled and
// the outcome is counted by name.
func TestClosedWithoutResponse(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("x"))
	dead := deadAddress(t)
	const listen = "127.0.0.1:0"
	s := startServer(t, yamlf(`
listen: [{address: %q}]
timeouts: {client_hello: 1s, upstream_dial: 2s}
limits: {max_hello_size: 4096}
vhosts:
  - {name: www, hosts: [www.example.test], mode: passthrough, upstream: {address: %q}}
  - {name: gone, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}
`, listen, up.address(), dead))
	addr := s.addr(t, listen)
	junk := make([]byte, 600)
	rand.Read(junk)
	junk[0] = 0x42
	oversize := []byte{0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00}

	cases := []struct {
		name    string
		data    []byte
		oneByte bool
		slow    bool
		vhost   string
		outcome Outcome
	}{
		{"no SNI", readHello(t, "openssl-tls13-nosni.bin"), false, false, "", OutcomeNoSNI},
		{"no SNI TLS 1.2", readHello(t, "openssl-tls12-nosni.bin"), true, false, "", OutcomeNoSNI},
		{"unknown SNI", readHello(t, "chromium.bin"), false, false, "", OutcomeUnknownSNI},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n"), false, false, "", OutcomeNotTLS},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), false, false, "", OutcomeNotTLS},
		{"random bytes", junk, false, false, "", OutcomeNotTLS},
		{"oversize hello", append(oversize, make([]byte, 5000)...), false, false, "", OutcomeHelloTooLarge},
		{"slow loris", readHello(t, "go-pq.bin")[:40], true, true, "", OutcomeHelloTimeout},
		{"unreachable upstream", readHello(t, "go-pq.bin"), false, false, "gone", OutcomeUpstreamUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.count(listen, tc.vhost, tc.outcome)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.slow {
				// One byte a second: the ClientHello deadline (1s) cuts it.
				// The pace is the attack, not a wait for anything.
				go func() {
					for i := range tc.data {
						if _, err := c.Write(tc.data[i : i+1]); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
				}()
			} else if err := send(c, tc.data, tc.oneByte); err != nil {
				t.Fatal(err)
			}
			expectSilentClose(t, c)
			s.waitCount(t, listen, tc.vhost, tc.outcome, before+1)
		})
	}
	up.expectNone(t)
}

// TestUnmatchedRules checks unmatched: reset (RST, not FIN) and unmatched
// naming a vhost (no SNI and unknown SNI go there).
func TestUnmatchedRules(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, nil)
	t.Run("reset", func(t *testing.T) {
		s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
unmatched: reset
vhosts: [{name: www, hosts: [www.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
		c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(readHello(t, "go-pq.bin"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 10))
		if n != 0 || err == nil || err == io.EOF {
			t.Fatalf("read = %d, %v; want a connection reset", n, err)
		}
		s.waitCount(t, "127.0.0.1:0", "", OutcomeUnknownSNI, 1)
	})
	t.Run("default vhost", func(t *testing.T) {
		s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
unmatched: www
vhosts: [{name: www, hosts: [www.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v1}}]
`, up.address()))
		for _, f := range []string{"go-pq.bin", "openssl-tls13-nosni.bin"} {
			hello := readHello(t, f)
			c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
			if err != nil {
				t.Fatal(err)
			}
			c.Write(hello)
			c.(*net.TCPConn).CloseWrite()
			if uc := up.next(t); !bytes.Equal(uc.data, hello) {
				t.Fatalf("%s: upstream got %d bytes, want %d", f, len(uc.data), len(hello))
			}
			c.Close()
		}
		s.waitCount(t, "127.0.0.1:0", "www", OutcomeProxied, 2)
	})
}

// deadAddress returns a loopback address where nothing listens.
func deadAddress(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestPassthroughBulk moves 64 MiB each way through passthrough (spliced)
// and checks both arrive intact, and that each side's FIN reaches the other
// while the opposite direction keeps flowing.
func TestPassthroughBulk(t *testing.T) {
	const size = 64 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts: [{name: bulk, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, ln.Addr().String()))
	hello := readHello(t, "go-pq.bin")

	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	upGot := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			upGot <- result{err: err}
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := proxyproto.Read(br); err != nil {
			upGot <- result{err: err}
			return
		}
		// Upstream -> client: 64 MiB, then FIN, while still reading.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(c, io.LimitReader(seeded(2), size))
			c.(*net.TCPConn).CloseWrite()
		}()
		h := sha256.New()
		n, err := io.Copy(h, br)
		wg.Wait()
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		upGot <- r
	}()

	c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clientGot := make(chan result, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		clientGot <- r
	}()
	want := sha256.New()
	w := io.MultiWriter(c, want)
	w.Write(hello)
	io.Copy(w, io.LimitReader(seeded(1), size))
	c.(*net.TCPConn).CloseWrite()

	down := <-clientGot
	wantDown := sha256.New()
	io.Copy(wantDown, io.LimitReader(seeded(2), size))
	if down.err != nil || down.n != size || !bytes.Equal(down.sum[:], wantDown.Sum(nil)) {
		t.Fatalf("client received %d bytes (err %v), digest match %v; want %d intact", down.n, down.err, bytes.Equal(down.sum[:], wantDown.Sum(nil)), size)
	}
	upr := <-upGot
	if upr.err != nil || upr.n != int64(len(hello))+size || !bytes.Equal(upr.sum[:], want.Sum(nil)) {
		t.Fatalf("upstream received %d bytes (err %v); want %d intact", upr.n, upr.err, int64(len(hello))+size)
	}
	s.waitCount(t, "127.0.0.1:0", "bulk", OutcomeProxied, 1)
	if got := s.metrics.bytes.WithLabelValues("bulk", "to_client"); got == nil {
		t.Fatal("no byte counter")
	}
}

// seeded is a deterministic byte stream (so both ends can digest it).
func seeded(seed byte) io.Reader {
	return &seededReader{x: uint64(seed)*0x9E3779B97F4A7C15 + 1}
}

type seededReader struct{ x uint64 }

func (r *seededReader) Read(p []byte) (int, error) {
	for i := range p {
		r.x ^= r.x << 13
		r.x ^= r.x >> 7
		r.x ^= r.x << 17
		p[i] = byte(r.x)
	}
	return len(p), nil
}

// TestNoLeaks runs 1,000 mixed connections (proxied, junk, unknown SNI,
// unreachable upstream, client gone mid-hello) and checks that goroutines and
// file descriptors return to where they were.
func TestNoLeaks(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("ok"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {client_hello: 2s}
vhosts:
  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}
  - {name: dead, hosts: [curl.example.test], mode: passthrough, upstream: {address: %q}}
`, up.address(), deadAddress(t)))
	addr := s.addr(t, "127.0.0.1:0")
	goHello, curlHello, chrome := readHello(t, "go-pq.bin"), readHello(t, "curl.bin"), readHello(t, "chromium.bin")

	counts := func() (int, int) {
		runtime.GC()
		return runtime.NumGoroutine(), fdCount(t)
	}
	base := settle(t, 15*time.Second, func() [2]int {
		g, f := counts()
		return [2]int{g, f}
	})
	g0, f0 := base[0], base[1]
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			switch i % 5 {
			case 0:
				c.Write(goHello)
				c.(*net.TCPConn).CloseWrite()
				io.ReadAll(c)
			case 1:
				c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				io.ReadAll(c)
			case 2:
				c.Write(chrome)
				io.ReadAll(c)
			case 3:
				c.Write(curlHello)
				io.ReadAll(c)
			case 4:
				c.Write(goHello[:100])
			}
		}()
	}
	wg.Wait()
	for range 200 {
		if uc := up.next(t); !bytes.Equal(uc.data, goHello) {
			t.Fatalf("upstream got %d bytes, want the %d-byte hello", len(uc.data), len(goHello))
		}
	}
	var g, f int
	if err := eventually.Poll(15*time.Second, func() error {
		if g, f = counts(); g > g0+2 || f > f0 {
			return errors.New("not back to the baseline")
		}
		return nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("after 1,000 connections: %d goroutines (was %d), %d fds (was %d)\n%s", g, g0, f, f0, buf[:n])
	}
	s.waitCount(t, "127.0.0.1:0", "go", OutcomeProxied, 200)
	s.waitCount(t, "127.0.0.1:0", "", OutcomeNotTLS, 200)
	s.waitCount(t, "127.0.0.1:0", "", OutcomeUnknownSNI, 200)
	s.waitCount(t, "127.0.0.1:0", "dead", OutcomeUpstreamUnreachable, 200)
	s.waitCount(t, "127.0.0.1:0", "", OutcomeClosedEarly, 200)
}

// TestPassthroughUnixUpstream forwards to a Unix socket upstream.
func TestPassthroughUnixUpstream(t *testing.T) {
	up := newUpstream(t, "unix", t.TempDir()+"/up.sock", true, []byte("unix reply"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts: [{name: u, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, up.address()))
	hello := readHello(t, "go-pq.bin")
	c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello)
	c.(*net.TCPConn).CloseWrite()
	uc := up.next(t)
	if !bytes.Equal(uc.data, hello) {
		t.Fatalf("upstream got %d bytes", len(uc.data))
	}
	checkHeader(t, uc.header, "v2", c, "go")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, _ := io.ReadAll(c); string(b) != "unix reply" {
		t.Fatalf("client got %q", b)
	}
}

// TestIdleTimeout closes a proxied connection on which nothing moves, and
// keeps one that trickles.
func TestIdleTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {idle: 1s}
vhosts: [{name: idle, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, ln.Addr().String()))
	hello := readHello(t, "go-pq.bin")
	upstreamEOF := make(chan error, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err := io.Copy(io.Discard, c)
				upstreamEOF <- err
			}()
		}
	}()

	// Trickle a byte every 300ms for 3s: longer than idle, never idle.
	// The pace is what is tested, not a wait for anything.
	c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	c.Write(hello)
	for range 10 {
		time.Sleep(300 * time.Millisecond)
		if _, err := c.Write([]byte{0}); err != nil {
			t.Fatalf("trickling connection cut: %v", err)
		}
	}
	if got := s.count("127.0.0.1:0", "idle", OutcomeIdleTimeout); got != 0 {
		t.Fatal("a trickling connection was counted idle")
	}
	c.Close()
	<-upstreamEOF

	// Silent after the hello: cut after about a second, both sides closed.
	c, err = net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello)
	expectSilentClose(t, c)
	if err := <-upstreamEOF; err != nil {
		t.Fatalf("upstream side: %v", err)
	}
	s.waitCount(t, "127.0.0.1:0", "idle", OutcomeIdleTimeout, 1)
}

// TestShutdownDrains lets an open connection finish during a graceful stop,
// refuses new ones, and cuts what is left at the drain deadline.
func TestShutdownDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts: [{name: d, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: "off"}}]
`, ln.Addr().String()))
	addr := s.addr(t, "127.0.0.1:0")
	// The upstream echoes.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	hello := readHello(t, "go-pq.bin")
	open := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(hello)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
			t.Fatalf("echo of the hello: %v", err)
		}
		return c
	}
	finishing, stuck := open(), open()
	defer stuck.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()

	// New connections are refused once the listener is closed.
	eventually.Within(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("still accepting during shutdown")
	})
	// The open connection still works, then finishes on its own.
	finishing.Write([]byte("still here"))
	buf := make([]byte, 10)
	finishing.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(finishing, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("open connection during drain: %q, %v", buf, err)
	}
	finishing.Close()
	// The other never finishes: cut at the drain deadline.
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the drain deadline", err)
	}
	stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(stuck); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection left open after the drain deadline")
		}
	}
	s.waitCount(t, "127.0.0.1:0", "d", OutcomeShutdown, 1)
	s.waitCount(t, "127.0.0.1:0", "d", OutcomeProxied, 1)
}

// TestUniqueID: with upstream.unique_id, each connection's PROXY v2 header
// carries its own PP2_TYPE_UNIQUE_ID (32 hex digits), for joining logs.
func TestUniqueID(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, nil)
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts: [{name: u, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, unique_id: true}}]
`, up.address()))
	seen := map[string]bool{}
	for range 3 {
		c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		c.Write(readHello(t, "go-pq.bin"))
		c.(*net.TCPConn).CloseWrite()
		uc := up.next(t)
		c.Close()
		tlvs, err := uc.header.TLVs()
		if err != nil {
			t.Fatal(err)
		}
		id := ""
		for _, tlv := range tlvs {
			if tlv.Type == proxyproto.PP2_TYPE_UNIQUE_ID {
				id = string(tlv.Value)
			}
		}
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || seen[id] {
			t.Fatalf("PP2_TYPE_UNIQUE_ID %q: want 32 hex digits, new for each connection", id)
		}
		seen[id] = true
	}
	if _, err := config.Parse("c.yaml", []byte(`listen: [{address: ":443"}]
vhosts: [{name: u, hosts: [a.example], mode: passthrough, upstream: {address: "1.2.3.4:5", proxy_protocol: v1, unique_id: true}}]
`), nil); err == nil || !strings.Contains(err.Error(), "unique_id needs proxy_protocol v2") {
		t.Fatalf("unique_id with v1: %v", err)
	}
}

// TestIdlePassthroughDescriptors: an idle passthrough connection holds its
// two sockets and nothing else: no goroutine (it is parked in the relay's
// loops) and no splice pipe, so a gateway's descriptor and memory budget
// goes to connections.
func TestIdlePassthroughDescriptors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts: [{name: idle, hosts: [go.example.test], mode: passthrough, upstream: {address: %q}}]
`, ln.Addr().String()))
	hello := readHello(t, "go-pq.bin")
	const n = 50
	before := settle(t, 10*time.Second, func() int { return fdCount(t) })
	var clients []net.Conn
	for range n {
		c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello)
		clients = append(clients, c)
	}
	waitActive(t, s, n)
	eventually.Within(t, 10*time.Second, func() error {
		mu.Lock()
		got := len(held)
		mu.Unlock()
		if got != n {
			return fmt.Errorf("upstream has %d connections, want %d", got, n)
		}
		return nil
	})
	// Every connection is parked in the relay: no goroutine serves or
	// copies any of them.
	eventually.Within(t, 10*time.Second, func() error {
		if got := goroutinesIn("gateway.(*Server).serveConn") + goroutinesIn("relay.(*pipeState).copyHalf"); got != 0 {
			return fmt.Errorf("%d goroutines serve or copy %d idle passthrough connections, want none", got, n)
		}
		return nil
	})
	// In this process each connection is four sockets: the client's, the
	// gateway's two, and the upstream's. A splice pipe held while idle
	// would add two more each; the relay's pooled pipes close after a
	// second unused.
	eventually.Within(t, 10*time.Second, func() error {
		if got := fdCount(t) - before; got > 4*n {
			return fmt.Errorf("%d idle passthrough connections hold %d descriptors (%.1f each); want 4 each (sockets only)", n, got, float64(got)/n)
		}
		return nil
	})
}
