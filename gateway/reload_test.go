package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// echoUpstream reads the gateway's PROXY header and echoes every byte
// after it until the client half-closes; it counts the connections whose
// header it read.
type echoUpstream struct {
	ln       net.Listener
	accepted atomic.Int64
}

func newEchoUpstream(t testing.TB) *echoUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &echoUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				br := bufio.NewReader(c)
				if _, err := proxyproto.Read(br); err != nil {
					return
				}
				u.accepted.Add(1)
				br.WriteTo(c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return u
}

func (u *echoUpstream) address() string { return u.ln.Addr().String() }

// passthroughEcho sends a captured ClientHello through the gateway, half
// closes, and checks the upstream echoed it back byte for byte.
func passthroughEcho(addr string, hello []byte) error {
	c, err := net.DialTimeout("tcp", addr, 15*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(hello); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	c.(*net.TCPConn).CloseWrite()
	back, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(back, hello) {
		return fmt.Errorf("echo: got %d bytes, want the %d-byte hello", len(back), len(hello))
	}
	return nil
}

// mtlsEcho makes an mtls connection with a valid client certificate, one
// echo through it, and returns the server certificate it was shown.
func mtlsEcho(addr string, cfg *tls.Config) ([]byte, error) {
	d := &net.Dialer{Timeout: 15 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("PING\n")); err != nil {
		return nil, err
	}
	c.CloseWrite()
	back, err := io.ReadAll(c)
	if err != nil || string(back) != "PING\n" {
		return nil, fmt.Errorf("echo: %q, %v", back, err)
	}
	return c.ConnectionState().PeerCertificates[0].Raw, nil
}

// churn keeps clients connecting until stopped and records every failure.
type churn struct {
	stop chan struct{}
	wg   sync.WaitGroup
	ok   atomic.Int64

	mu       sync.Mutex
	failures []error
}

func (c *churn) run(n int, one func() error) {
	for range n {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for {
				select {
				case <-c.stop:
					return
				default:
				}
				if err := one(); err != nil {
					c.mu.Lock()
					c.failures = append(c.failures, err)
					c.mu.Unlock()
					continue
				}
				c.ok.Add(1)
			}
		}()
	}
}

// waitOK waits until at least n more connections have succeeded.
func (c *churn) waitOK(t *testing.T, n int64) {
	t.Helper()
	want := c.ok.Load() + n
	eventually.Within(t, time.Minute, func() error {
		if got := c.ok.Load(); got < want {
			return fmt.Errorf("clients made %d good connections, want %d", got, want)
		}
		return nil
	})
}

// TestReloadUnderLoad reloads a gateway while clients keep connecting
// (passthrough and mtls) and two connections stay open exchanging bytes:
// a new route and a renewed server certificate take effect for every
// connection begun after Reload returns, no connection fails, and the open
// ones are unharmed. A bad key and a missing key file are then refused
// with FILE:LINE and the configuration in force keeps serving.
func TestReloadUnderLoad(t *testing.T) {
	p := newPKI(t)
	goUp, appUp, newUp := newEchoUpstream(t), newEchoUpstream(t), newEchoUpstream(t)
	goVHost := fmt.Sprintf("  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v2}}\n", goUp.address())
	newVHost := fmt.Sprintf("  - {name: openssl, hosts: [openssl13.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v2}}\n", newUp.address())
	dir := t.TempDir()
	s := startServerIn(t, dir, mtlsConfig(p, "127.0.0.1:0", appUp.address(), goVHost))
	path := filepath.Join(dir, "edgegate.yaml")
	addr := s.addr(t, "127.0.0.1:0")
	goHello, newHello := readHello(t, "go-pq.bin"), readHello(t, "openssl-tls13-sni.bin")
	firstCert, err := os.ReadFile(p.certFile)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := tls.X509KeyPair(firstCert, must(os.ReadFile(p.keyFile)))
	clientCfg := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}}

	// Before the reload the new name is unknown: closed without a byte.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(newHello)
	expectSilentClose(t, c)
	c.Close()

	// Two connections that stay open across everything below.
	heldTLS, err := tls.Dial("tcp", addr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer heldTLS.Close()
	heldRaw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer heldRaw.Close()
	heldRaw.Write(goHello)
	if _, err := io.ReadFull(heldRaw, make([]byte, len(goHello))); err != nil {
		t.Fatalf("held passthrough connection: %v", err)
	}
	heldDone := make(chan error, 2)
	heldStop := make(chan struct{})
	for _, hc := range []net.Conn{heldTLS, heldRaw} {
		go func() {
			r := bufio.NewReader(hc)
			hc.SetDeadline(time.Now().Add(2 * time.Minute))
			for i := 0; ; i++ {
				select {
				case <-heldStop:
					heldDone <- nil
					return
				default:
				}
				line := fmt.Sprintf("held %d\n", i)
				if _, err := hc.Write([]byte(line)); err != nil {
					heldDone <- err
					return
				}
				if got, err := r.ReadString('\n'); err != nil || got != line {
					heldDone <- fmt.Errorf("exchange %d: got %q, %v", i, got, err)
					return
				}
				time.Sleep(2 * time.Millisecond) // pacing the exchange across the reloads, not a wait
			}
		}()
	}

	// Clients that keep connecting. Each mtls client notes the time it
	// began, to tell which certificate it must have been shown.
	var reloadedAt atomic.Pointer[time.Time]
	second, err := p.ca.Server("app.example.test", "other.example.test", "*.example.test")
	if err != nil {
		t.Fatal(err)
	}
	var staleAfterReload atomic.Int64
	ld := &churn{stop: make(chan struct{})}
	defer func() {
		select {
		case <-ld.stop:
		default:
			close(ld.stop)
		}
		ld.wg.Wait()
	}()
	ld.run(2, func() error { return passthroughEcho(addr, goHello) })
	ld.run(2, func() error {
		began := time.Now()
		leaf, err := mtlsEcho(addr, clientCfg)
		if err != nil {
			return err
		}
		if r := reloadedAt.Load(); r != nil && began.After(*r) && !bytes.Equal(leaf, second.Certificate[0]) {
			staleAfterReload.Add(1)
		}
		return nil
	})
	ld.waitOK(t, 100)

	// The reload: a new vhost and a renewed certificate, written in place.
	if _, _, err := testpki.WritePEM(dir, "renewed", second); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(dir, "renewed.crt"), p.certFile)
	copyFile(t, filepath.Join(dir, "renewed.key"), p.keyFile)
	os.WriteFile(path, []byte(mtlsConfig(p, "127.0.0.1:0", appUp.address(), goVHost+newVHost)), 0o644)
	if err := s.ReloadFile(path); err != nil {
		t.Fatalf("reload: %v", err)
	}
	now := time.Now()
	reloadedAt.Store(&now)
	if g := s.Generation(); g != 2 {
		t.Fatalf("generation %d after the reload, want 2", g)
	}
	if err := passthroughEcho(addr, newHello); err != nil {
		t.Fatalf("new route right after the reload: %v", err)
	}
	if newUp.accepted.Load() != 1 {
		t.Fatalf("the new vhost's upstream got %d connections, want 1", newUp.accepted.Load())
	}
	leaf, err := mtlsEcho(addr, clientCfg)
	if err != nil || !bytes.Equal(leaf, second.Certificate[0]) {
		t.Fatalf("mtls right after the reload: err %v, renewed certificate %t", err, err == nil && bytes.Equal(leaf, second.Certificate[0]))
	}
	ld.waitOK(t, 100)

	// Refused: a key that does not parse, then a key file that is not there.
	goodYAML := mtlsConfig(p, "127.0.0.1:0", appUp.address(), goVHost+newVHost)
	os.WriteFile(p.keyFile, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), 0o600)
	missing := strings.Replace(goodYAML, p.keyFile, filepath.Join(dir, "missing.key"), 1)
	for _, broken := range []struct{ name, yaml, why string }{
		{"bad key", goodYAML, "private key"},
		{"missing key file", missing, "missing.key"},
	} {
		os.WriteFile(path, []byte(broken.yaml), 0o644)
		err := s.ReloadFile(path)
		// Line 8 of mtlsConfig is the certificates line.
		if err == nil || !strings.HasPrefix(err.Error(), path+":8: ") || !strings.Contains(err.Error(), broken.why) {
			t.Fatalf("%s: reload error %v; want %s:8: and %q", broken.name, err, path, broken.why)
		}
		if g := s.Generation(); g != 2 {
			t.Fatalf("%s: generation %d, want 2 still", broken.name, g)
		}
		if err := passthroughEcho(addr, newHello); err != nil {
			t.Fatalf("%s: the route in force: %v", broken.name, err)
		}
		leaf, err := mtlsEcho(addr, clientCfg)
		if err != nil || !bytes.Equal(leaf, second.Certificate[0]) {
			t.Fatalf("%s: mtls after the refusal: err %v; want the certificate in force", broken.name, err)
		}
	}
	ld.waitOK(t, 100)
	close(ld.stop)
	ld.wg.Wait()
	close(heldStop)
	for range 2 {
		if err := <-heldDone; err != nil {
			t.Fatalf("connection held open across the reloads: %v", err)
		}
	}

	if len(ld.failures) > 0 {
		t.Fatalf("%d of %d connections failed; first: %v", len(ld.failures), ld.ok.Load()+int64(len(ld.failures)), ld.failures[0])
	}
	if n := staleAfterReload.Load(); n > 0 {
		t.Errorf("%d mtls connections begun after the reload were shown the old certificate", n)
	}
	if heldTLS.ConnectionState().PeerCertificates[0].Raw == nil || !bytes.Equal(heldTLS.ConnectionState().PeerCertificates[0].Raw, first.Certificate[0]) {
		t.Error("test bug: the held connection was not made with the first certificate")
	}
	if v := testutil.ToFloat64(s.metrics.reloads.WithLabelValues("ok")); v != 1 {
		t.Errorf("edgegate_config_reload_total{result=\"ok\"} = %v, want 1", v)
	}
	if v := testutil.ToFloat64(s.metrics.reloads.WithLabelValues("error")); v != 2 {
		t.Errorf("edgegate_config_reload_total{result=\"error\"} = %v, want 2", v)
	}
	t.Logf("%d connections through three configurations, none failed", ld.ok.Load())
}

// copyFile rewrites dst in place with src's bytes.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, must(os.ReadFile(src)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
