package gateway

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto/tlvparse"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/edgegate/edgegate/gateway/proxyheader"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// pki is a test stand-in for Cloudflare's origin-pull PKI: a CA, the
// gateway's server certificate, and client certificates good and bad.
type pki struct {
	dir      string
	ca       *testpki.CA
	roots    *x509.CertPool // trusts the server certificate
	clients  map[string]tls.Certificate
	goodPin  string
	caFile   string
	certFile string
	keyFile  string
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), clients: map[string]tls.Certificate{}}
	must := func(c tls.Certificate, err error) tls.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var err error
	if p.ca, err = testpki.NewCA("test origin-pull CA"); err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("some other CA")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := p.ca.Intermediate("test origin-pull intermediate")
	if err != nil {
		t.Fatal(err)
	}
	p.caFile = filepath.Join(p.dir, "origin-pull-ca.pem")
	os.WriteFile(p.caFile, p.ca.PEM, 0o644)
	server := must(p.ca.Server("app.example.test", "other.example.test", "*.example.test"))
	if p.certFile, p.keyFile, err = testpki.WritePEM(p.dir, "server", server); err != nil {
		t.Fatal(err)
	}
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.ca.Cert)
	p.clients["valid"] = must(p.ca.Client("origin-pull client"))
	p.clients["intermediate"] = must(inter.Client("origin-pull client via intermediate"))
	p.clients["self-signed"] = must(testpki.SelfSigned("origin-pull client"))
	p.clients["other-ca"] = must(other.Client("origin-pull client"))
	p.clients["expired"] = must(p.ca.Client("origin-pull client", testpki.Expired()))
	p.clients["not-yet-valid"] = must(p.ca.Client("origin-pull client", testpki.NotYetValid()))
	p.clients["server-auth-only"] = must(p.ca.Client("origin-pull client", testpki.ServerAuthOnly()))
	// Client authentication in its extended key usage, but a KeyUsage that
	// does not allow signing the handshake (digitalSignature).
	p.clients["no-digital-signature"] = must(p.ca.Client("origin-pull client",
		testpki.KeyUsage(x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement)))
	p.clients["pinned"] = must(p.ca.Client("pinned client"))
	leaf, _ := x509.ParseCertificate(p.clients["pinned"].Certificate[0])
	p.goodPin = hex.EncodeToString(testpki.SPKISHA256(leaf))
	return p
}

// recConn records the bytes a client reads after its last write: what the
// server said in answer to the client's final flight.
type recConn struct {
	net.Conn
	mu             sync.Mutex
	afterLastWrite int
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.afterLastWrite += n
	c.mu.Unlock()
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.afterLastWrite = 0
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// dialTLS connects a Go TLS client to the gateway and runs its handshake.
func dialTLS(t testing.TB, addr string, cfg *tls.Config) (*tls.Conn, *recConn, error) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recConn{Conn: raw}
	c := tls.Client(rc, cfg)
	c.SetDeadline(time.Now().Add(15 * time.Second))
	return c, rc, c.Handshake()
}

// expectRefused asserts the gateway ended a TLS connection with nothing
// after the client's last flight: no alert, no ticket, no byte, and a FIN.
func expectRefused(t testing.TB, c *tls.Conn, rc *recConn, hsErr error) {
	t.Helper()
	defer c.Close()
	if hsErr == nil {
		// TLS 1.3: the client finished its side; it must read end-of-stream.
		n, err := c.Read(make([]byte, 64))
		if n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("client read %d bytes, err %v; want 0 bytes and end-of-stream", n, err)
		}
	} else {
		var ae tls.AlertError
		if errors.As(hsErr, &ae) {
			t.Fatalf("client received a TLS alert: %v", hsErr)
		}
		if !errors.Is(hsErr, io.EOF) && !errors.Is(hsErr, io.ErrUnexpectedEOF) {
			t.Fatalf("handshake error %v; want end-of-stream", hsErr)
		}
	}
	rc.mu.Lock()
	n := rc.afterLastWrite
	rc.mu.Unlock()
	if n != 0 {
		t.Fatalf("gateway sent %d bytes after the client's last flight; want none", n)
	}
}

func mtlsConfig(p *pki, listen, upstream string, extra string) string {
	return yamlf(`
listen: [{address: %q}]
timeouts: {handshake: 5s}
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls:
      certificates: [{cert: %q, key: %q}]
    client_auth: {ca: %q}
    upstream: {address: %q, proxy_protocol: v2}
%s`, listen, p.certFile, p.keyFile, p.caFile, upstream, extra)
}

// TestMTLSMatrix runs every client certificate case at TLS 1.2 and 1.3:
// valid chains reach the upstream after a PROXY v2 header with the TLS
// facts; every other case is closed with no byte after the failure and the
// upstream never sees it.
func TestMTLSMatrix(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.address(), `
  - name: pinned
    hosts: [other.example.test]
    mode: mtls
    tls:
      certificates: [{cert: `+p.certFile+`, key: `+p.keyFile+`}]
      alpn: [h2, http/1.1]
    client_auth: {ca: `+p.caFile+`, spki_sha256: ["`+p.goodPin+`"]}
    upstream: {address: "`+up.address()+`"}
`))
	addr := s.addr(t, "127.0.0.1:0")
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tc := range []struct {
			client, sni, reason string
		}{
			{"valid", "app.example.test", ""},
			{"intermediate", "app.example.test", ""},
			{"pinned", "other.example.test", ""},
			{"none", "app.example.test", "no_certificate"},
			{"self-signed", "app.example.test", "unknown_issuer"},
			{"other-ca", "app.example.test", "unknown_issuer"},
			{"expired", "app.example.test", "expired"},
			{"not-yet-valid", "app.example.test", "not_yet_valid"},
			{"server-auth-only", "app.example.test", "bad_key_usage"},
			{"no-digital-signature", "app.example.test", "bad_key_usage"},
			{"valid", "other.example.test", "pin_mismatch"},
		} {
			name := tls.VersionName(version) + "/" + tc.client + "@" + tc.sni
			t.Run(name, func(t *testing.T) {
				vhost := map[string]string{"app.example.test": "app", "other.example.test": "pinned"}[tc.sni]
				cfg := &tls.Config{ServerName: tc.sni, RootCAs: p.roots, MinVersion: version, MaxVersion: version}
				if c, ok := p.clients[tc.client]; ok {
					cfg.Certificates = []tls.Certificate{c}
				}
				before := testutil.ToFloat64(s.metrics.rejections.WithLabelValues(vhost, tc.reason))
				c, rc, err := dialTLS(t, addr, cfg)
				if tc.reason != "" {
					expectRefused(t, c, rc, err)
					eventually.Within(t, 10*time.Second, func() error {
						if got := testutil.ToFloat64(s.metrics.rejections.WithLabelValues(vhost, tc.reason)); got != before+1 {
							return fmt.Errorf("edgegate_mtls_rejections_total{reason=%q} did not move: %v, want %v", tc.reason, got, before+1)
						}
						return nil
					})
					up.expectNone(t)
					return
				}
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				defer c.Close()
				c.Write([]byte("PING\n"))
				c.CloseWrite()
				reply, err := io.ReadAll(c)
				if string(reply) != "PONG" {
					t.Fatalf("client got %q, %v; want PONG", reply, err)
				}
				uc := up.next(t)
				if string(uc.data) != "PING\n" {
					t.Fatalf("upstream got %q; want the cleartext PING", uc.data)
				}
				checkHeader(t, uc.header, "v2", c.NetConn(), vhost)
				tlvs, _ := uc.header.TLVs()
				ssl, ok := tlvparse.FindSSL(tlvs)
				if !ok || !ssl.ClientSSL() || !ssl.ClientCertConn() || !ssl.Verified() {
					t.Fatalf("PP2_TYPE_SSL missing or wrong: %+v", ssl)
				}
				if v, _ := ssl.SSLVersion(); v != map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[version] {
					t.Fatalf("PP2_SUBTYPE_SSL_VERSION = %q", v)
				}
				leaf, _ := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
				if cn, _ := ssl.ClientCN(); cn != leaf.Subject.CommonName {
					t.Fatalf("PP2_SUBTYPE_SSL_CN = %q, want %q", cn, leaf.Subject.CommonName)
				}
			})
		}
	}
	up.expectNone(t)
}

// TestMTLSRefusals covers refusals that are not about the certificate: a
// source outside allow_from (no cryptography spent), a TLS version the vhost
// refuses, a handshake that stalls, and on_reject: reset.
func TestMTLSRefusals(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {handshake: 1s}
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}], min_version: "1.3"}
    client_auth: {ca: %q}
    upstream: {address: %q}
  - name: cf
    hosts: [cf.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q}
    allow_from: [cloudflare, 192.0.2.0/24]
    upstream: {address: %q}
  - name: rst
    hosts: [rst.example.test]
    mode: mtls
    on_reject: reset
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q}
    upstream: {address: %q}
`, p.certFile, p.keyFile, p.caFile, up.address(), p.certFile, p.keyFile, p.caFile, up.address(), p.certFile, p.keyFile, p.caFile, up.address()))
	addr := s.addr(t, "127.0.0.1:0")
	valid := []tls.Certificate{p.clients["valid"]}

	t.Run("source not allowed", func(t *testing.T) {
		c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "cf.example.test", RootCAs: p.roots, Certificates: valid})
		expectRefused(t, c, rc, err)
		// Nothing at all came back: not even a ServerHello.
		if err == nil {
			t.Fatal("handshake completed for a source outside allow_from")
		}
		s.waitCount(t, "127.0.0.1:0", "cf", OutcomeNotAllowed, 1)
	})
	t.Run("TLS 1.2 to a 1.3-only vhost", func(t *testing.T) {
		c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: valid, MaxVersion: tls.VersionTLS12})
		expectRefused(t, c, rc, err)
		s.waitCount(t, "127.0.0.1:0", "app", OutcomeHandshake, 1)
	})
	t.Run("handshake timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A whole ClientHello, then silence: the server's flight arrives,
		// then nothing more once the handshake deadline passes.
		tc := tls.Client(&stallConn{Conn: c}, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots})
		tc.SetDeadline(time.Now().Add(15 * time.Second))
		// The TLS 1.3 client believes its side is done; it must then read
		// end-of-stream when the server gives up waiting.
		if err := tc.Handshake(); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		if n, err := tc.Read(make([]byte, 64)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("read %d bytes, %v; want end-of-stream", n, err)
		}
		s.waitCount(t, "127.0.0.1:0", "app", OutcomeHandshake, 2)
		if got := testutil.ToFloat64(s.metrics.rejections.WithLabelValues("app", "handshake_timeout")); got != 1 {
			t.Fatalf("handshake_timeout refusals = %v, want 1", got)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, _, err := dialTLS(t, addr, &tls.Config{ServerName: "rst.example.test", RootCAs: p.roots, MaxVersion: tls.VersionTLS12})
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("handshake error %v; want a connection reset", err)
		}
		c.Close()
		s.waitCount(t, "127.0.0.1:0", "rst", OutcomeClientCert, 1)
	})
	up.expectNone(t)
}

// TestMTLSUpstreamUnreachable: a verified client whose vhost's upstream
// refuses the connection (the relay's loop finishes the connect) is closed
// with a FIN and nothing else, no close_notify, and counted as
// upstream_unreachable.
func TestMTLSUpstreamUnreachable(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", deadAddress(t), ""))
	addr := s.addr(t, "127.0.0.1:0")
	for i := range 20 {
		// TLS 1.2: the server's last handshake bytes come before the
		// client's first write, so any byte after PING is one too many.
		c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
			Certificates: []tls.Certificate{p.clients["valid"]}, MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		c.Write([]byte("PING\n"))
		expectRefused(t, c, rc, nil)
		s.waitCount(t, "127.0.0.1:0", "app", OutcomeUpstreamUnreachable, float64(i+1))
	}
}

// stallConn lets a TLS client send its ClientHello, then swallows every
// later write so the server waits for a flight that never comes.
type stallConn struct {
	net.Conn
	writes int
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes > 1 {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestSharedTicketKeys runs two gateways with one session_ticket_keys file,
// as instances behind one balancer: a session made on A resumes on B. A key
// file of the wrong size is refused with FILE:LINE.
func TestSharedTicketKeys(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	keyFile := filepath.Join(p.dir, "tickets.key")
	key := make([]byte, 64)
	rand.Read(key)
	os.WriteFile(keyFile, key, 0o600)
	cfg := mtlsConfig(p, "127.0.0.1:0", up.address(), "")
	cfg = strings.Replace(cfg, "    tls:\n", "    tls:\n      session_ticket_keys: "+keyFile+"\n", 1)
	a, b := startServer(t, cfg), startServer(t, cfg)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := ticketFrom(t, a.addr(t, "127.0.0.1:0"), "app.example.test", p, version, p.clients["valid"])
		up.next(t)
		c, _, err := dialTLS(t, b.addr(t, "127.0.0.1:0"), &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
			MinVersion: version, MaxVersion: version, ClientSessionCache: cache})
		if err != nil || !c.ConnectionState().DidResume {
			t.Fatalf("%s: session from A on B: err %v, want a resumed handshake", tls.VersionName(version), err)
		}
		c.Write([]byte("PING\n"))
		c.CloseWrite()
		if r, _ := io.ReadAll(c); string(r) != "PONG" {
			t.Fatalf("resumed on B: got %q", r)
		}
		c.Close()
		up.next(t)
	}

	os.WriteFile(keyFile, key[:40], 0o600)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "e.yaml"), []byte(cfg), 0o644)
	c, err := config.Load(filepath.Join(dir, "e.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(c, nil); err == nil || !strings.Contains(err.Error(), "e.yaml:8: ") || !strings.Contains(err.Error(), "32-byte keys") {
		t.Fatalf("short key file: %v; want FILE:LINE and the reason", err)
	}
}

// BenchmarkMTLSHandshake measures full TLS 1.3 handshakes with a client
// certificate through the gateway (including the upstream dial and PROXY
// header), with and without the verified-chain cache, on loopback.
func BenchmarkMTLSHandshake(b *testing.B) {
	p := newPKI(b)
	up := newUpstream(b, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	go func() {
		for range up.got {
		}
	}()
	s := startServer(b, mtlsConfig(p, "127.0.0.1:0", up.address(), ""))
	addr := s.addr(b, "127.0.0.1:0")
	for _, cached := range []bool{true, false} {
		name := map[bool]string{true: "cache", false: "nocache"}[cached]
		b.Run(name, func(b *testing.B) {
			auth := s.state.Load().vhosts["app"].mtls.auth
			saved := auth.Cache
			if !cached {
				auth.Cache = nil
			}
			defer func() { auth.Cache = saved }()
			cfg := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]},
				MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519}}
			b.ResetTimer()
			for b.Loop() {
				mtlsRequest(b, addr, cfg)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

// BenchmarkMTLSOverhead runs one mtls connection (full or resumed TLS 1.3
// handshake with a client certificate, one request, close) through the
// gateway, logging as `edgegate run` does (JSON, info), and through a bare
// tls.Server doing the same job the way the harness's "gotls" system does
// (verify the client's chain, dial the upstream, PROXY v2, copy), with the
// same certificates, client and upstream in the same run. The client and
// the upstream cost the same in both, so the difference in ns/op, B/op and
// allocs/op is what edgegate adds to crypto/tls (less what its
// verified-chain cache saves: the gateway's "nocache" rows verify every
// chain in full, as tls.Server does). Profile it with -cpuprofile and
// `go tool pprof -focus 'gateway\.\(\*Server\)'` for the gateway's own side.
func BenchmarkMTLSOverhead(b *testing.B) {
	p := newPKI(b)
	up := newUpstream(b, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	go func() {
		for range up.got {
		}
	}()
	log, err := NewLogger(io.Discard, config.Log{Level: "info", Format: "json"})
	if err != nil {
		b.Fatal(err)
	}
	s := startServerLogging(b, b.TempDir(), mtlsConfig(p, "127.0.0.1:0", up.address(), ""), log)
	bare := startBareTLS(b, p, up.address())
	client := p.clients["valid"]
	for _, resumed := range []bool{false, true} {
		for _, sys := range []string{"gateway", "gateway-nocache", "tls.Server"} {
			name := map[bool]string{false: "full/", true: "resumed/"}[resumed] + sys
			b.Run(name, func(b *testing.B) {
				addr := bare
				if sys != "tls.Server" {
					addr = s.addr(b, "127.0.0.1:0")
				}
				if sys == "gateway-nocache" {
					auth := s.state.Load().vhosts["app"].mtls.auth
					saved := auth.Cache
					auth.Cache = nil
					defer func() { auth.Cache = saved }()
				}
				cfg := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{client},
					MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519}}
				if resumed {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
					mtlsRequest(b, addr, cfg)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if c := mtlsRequest(b, addr, cfg); c.DidResume != resumed {
						b.Fatalf("resumed %v, want %v", c.DidResume, resumed)
					}
				}
			})
		}
	}
}

// mtlsRequest makes one request through an mtls server: handshake, PING,
// half-close, read PONG, close.
func mtlsRequest(b *testing.B, addr string, cfg *tls.Config) tls.ConnectionState {
	c, _, err := dialTLS(b, addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PING\n"))
	c.CloseWrite()
	if r, _ := io.ReadAll(c); string(r) != "PONG" {
		b.Fatalf("got %q, want PONG", r)
	}
	return c.ConnectionState()
}

// startBareTLS serves p's mtls job with crypto/tls alone, as the harness's
// gotls system does: no routing, logging or metrics. It returns its address.
func startBareTLS(b *testing.B, p *pki, upstream string) string {
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		b.Fatal(err)
	}
	cas := x509.NewCertPool()
	cas.AddCert(p.ca.Cert)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas,
		MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go bareTLSServe(c.(*net.TCPConn), cfg, upstream)
		}
	}()
	return ln.Addr().String()
}

func bareTLSServe(c *net.TCPConn, cfg *tls.Config, upstream string) {
	defer c.Close()
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	hdr, _ := proxyheader.Encode("v2", addrPort(c.RemoteAddr()), addrPort(c.LocalAddr()), nil)
	if _, err := up.Write(hdr); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, tc)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(tc, up)
	tc.CloseWrite()
	<-done
}

// TestMTLSCertificateChoice gives a vhost an ECDSA and an RSA certificate:
// a client that can use ECDSA gets it, one limited to RSA gets the RSA one.
// A default Go client negotiates the post-quantum group.
func TestMTLSCertificateChoice(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	rsaCert, err := p.ca.ServerRSA("app.example.test")
	if err != nil {
		t.Fatal(err)
	}
	rsaFile, rsaKey, err := testpki.WritePEM(p.dir, "server-rsa", rsaCert)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mtlsConfig(p, "127.0.0.1:0", up.address(), "")
	cfg = strings.Replace(cfg, "certificates: [{cert: "+strconvQuote(p.certFile)+", key: "+strconvQuote(p.keyFile)+"}]",
		"certificates: [{cert: "+strconvQuote(p.certFile)+", key: "+strconvQuote(p.keyFile)+"}, {cert: "+strconvQuote(rsaFile)+", key: "+strconvQuote(rsaKey)+"}]", 1)
	s := startServer(t, cfg)
	if n := len(s.state.Load().vhosts["app"].mtls.certs); n != 2 {
		t.Fatalf("vhost loaded %d certificates, want 2", n)
	}
	addr := s.addr(t, "127.0.0.1:0")
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want x509.PublicKeyAlgorithm
	}{
		{"default", &tls.Config{}, x509.ECDSA},
		{"RSA only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}, x509.RSA},
	} {
		c := tc.cfg
		c.ServerName, c.RootCAs, c.Certificates = "app.example.test", p.roots, []tls.Certificate{p.clients["valid"]}
		conn, _, err := dialTLS(t, addr, c)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		cs := conn.ConnectionState()
		if got := cs.PeerCertificates[0].PublicKeyAlgorithm; got != tc.want {
			t.Fatalf("%s: served a %v certificate, want %v", tc.name, got, tc.want)
		}
		if tc.name == "default" && cs.CurveID != tls.X25519MLKEM768 {
			t.Fatalf("default client negotiated %v, want X25519MLKEM768", cs.CurveID)
		}
		conn.Write([]byte("PING\n"))
		conn.CloseWrite()
		if b, _ := io.ReadAll(conn); string(b) != "PONG" {
			t.Fatalf("%s: got %q", tc.name, b)
		}
		conn.Close()
		up.next(t)
	}
}

// TestMTLSRefusesCipher: a client offering only a cipher suite the vhost
// does not enable (RSA key exchange) is refused without an alert.
func TestMTLSRefusesCipher(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.address(), ""))
	c, rc, err := dialTLS(t, s.addr(t, "127.0.0.1:0"), &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
		Certificates: []tls.Certificate{p.clients["valid"]}, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}})
	expectRefused(t, c, rc, err)
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeHandshake, 1)
	up.expectNone(t)
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }
