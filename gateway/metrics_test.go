package gateway

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// scrape fetches the server's /metrics page.
func scrape(t testing.TB, s *Server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sample returns the value of the sample written exactly as series (name
// and labels in the order client_golang writes them) on a /metrics page.
func sample(page, series string) (float64, bool) {
	for _, l := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// goHello returns the first TLS record Go's client sends for sni: its
// ClientHello.
func goHello(t testing.TB, sni string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		tls.Client(client, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
		client.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(server, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// TestVHostHistograms drives connections of every kind through a running
// gateway and reads the per-vhost histograms off its /metrics endpoint: the
// ClientHello wait and the connection's duration for every connection
// (vhost "" for those that reached none), the mtls handshake for mtls
// vhosts, the upstream connect for those that were dialled.
func TestVHostHistograms(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.address(), `
  - name: pass
    hosts: [pass.example.test]
    mode: passthrough
    upstream: {address: "`+up.address()+`"}
metrics: {listen: "127.0.0.1:0"}
`))
	addr := s.addr(t, "127.0.0.1:0")

	// mtls, proxied.
	c, _, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
		Certificates: []tls.Certificate{p.clients["valid"]}})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PING\n"))
	c.CloseWrite()
	if reply, err := io.ReadAll(c); string(reply) != "PONG" {
		t.Fatalf("mtls client got %q, %v; want PONG", reply, err)
	}
	c.Close()
	up.next(t)
	// mtls, refused for its certificate: handshake, but no dial.
	c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
		Certificates: []tls.Certificate{p.clients["other-ca"]}})
	expectRefused(t, c, rc, err)
	// passthrough: dialled, no handshake of edgegate's own.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	send(raw, goHello(t, "pass.example.test"), false)
	raw.(*net.TCPConn).CloseWrite()
	io.ReadAll(raw)
	raw.Close()
	up.next(t)
	// junk: no vhost.
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	expectSilentClose(t, raw)
	s.waitCount(t, "127.0.0.1:0", "", OutcomeNotTLS, 1)
	s.waitCount(t, "127.0.0.1:0", "pass", OutcomeProxied, 1)
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeClientCert, 1)
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeProxied, 1)

	page := scrape(t, s)
	for _, want := range []struct {
		series string
		count  float64 // -1: the series must be absent
	}{
		{`edgegate_client_hello_seconds_count{vhost="app"}`, 2},
		{`edgegate_client_hello_seconds_count{vhost="pass"}`, 1},
		{`edgegate_client_hello_seconds_count{vhost=""}`, 1},
		{`edgegate_tls_handshake_seconds_count{vhost="app"}`, 2},
		{`edgegate_tls_handshake_seconds_count{vhost="pass"}`, 0},
		{`edgegate_upstream_connect_seconds_count{vhost="app"}`, 1},
		{`edgegate_upstream_connect_seconds_count{vhost="pass"}`, 1},
		{`edgegate_upstream_connect_seconds_count{vhost=""}`, 0},
		{`edgegate_connection_duration_seconds_count{vhost="app"}`, 2},
		{`edgegate_connection_duration_seconds_count{vhost="pass"}`, 1},
		{`edgegate_connection_duration_seconds_count{vhost=""}`, 1},
	} {
		if got, ok := sample(page, want.series); !ok || got != want.count {
			t.Errorf("%s = %v (present %t), want %v", want.series, got, ok, want.count)
		}
	}
	// Durations are real time: each histogram's sum is positive where it
	// counted anything.
	for _, series := range []string{
		`edgegate_client_hello_seconds_sum{vhost="app"}`,
		`edgegate_tls_handshake_seconds_sum{vhost="app"}`,
		`edgegate_upstream_connect_seconds_sum{vhost="pass"}`,
		`edgegate_connection_duration_seconds_sum{vhost="pass"}`,
	} {
		if got, ok := sample(page, series); !ok || got <= 0 {
			t.Errorf("%s = %v (present %t), want > 0", series, got, ok)
		}
	}
}

// TestVHostHistogramsFollowReload: a vhost a reload adds is observed under
// its own name from its first connection.
func TestVHostHistogramsFollowReload(t *testing.T) {
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	base := yamlf(`
listen: [{address: "127.0.0.1:0"}]
metrics: {listen: "127.0.0.1:0"}
vhosts:
  - {name: one, hosts: [one.example.test], mode: passthrough, upstream: {address: %q}}
`, up.address())
	dir := t.TempDir()
	s := startServerIn(t, dir, base)
	if err := s.ReloadFile(writeConfig(t, dir, base+yamlf(`
  - {name: two, hosts: [two.example.test], mode: passthrough, upstream: {address: %q}}
`, up.address()))); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	send(raw, goHello(t, "two.example.test"), false)
	raw.(*net.TCPConn).CloseWrite()
	io.ReadAll(raw)
	raw.Close()
	up.next(t)
	s.waitCount(t, "127.0.0.1:0", "two", OutcomeProxied, 1)
	page := scrape(t, s)
	for _, series := range []string{
		`edgegate_client_hello_seconds_count{vhost="two"}`,
		`edgegate_upstream_connect_seconds_count{vhost="two"}`,
		`edgegate_connection_duration_seconds_count{vhost="two"}`,
	} {
		if got, ok := sample(page, series); !ok || got != 1 {
			t.Errorf("%s = %v (present %t), want 1", series, got, ok)
		}
	}
}

// writeConfig writes yaml as the configuration file in dir and returns its
// path.
func writeConfig(t testing.TB, dir, yaml string) string {
	t.Helper()
	path := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBuildInfo: the gauge the command registers reads 1 with the version
// it was given and the Go release of the running binary.
func TestBuildInfo(t *testing.T) {
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
metrics: {listen: "127.0.0.1:0"}
vhosts:
  - {name: one, hosts: [one.example.test], mode: passthrough, upstream: {address: "127.0.0.1:9"}}
`))
	s.Registry().MustRegister(BuildInfo("v1.2.3-test"))
	series := fmt.Sprintf(`edgegate_build_info{goversion=%q,version="v1.2.3-test"}`, runtime.Version())
	if v, ok := sample(scrape(t, s), series); !ok || v != 1 {
		t.Errorf("%s = %v (present %t), want 1", series, v, ok)
	}
}

// TestMTLSLogLineTLSFacts reads the log line of mtls connections: a proxied
// one, a resumed one and one refused for its certificate each carry the TLS
// version, the cipher suite, whether the session was resumed, and the
// client certificate's subject CN, serial and SPKI SHA-256 (for a refusal,
// of the certificate that was refused: the pin an operator would add).
// Passthrough lines carry none of them.
func TestMTLSLogLineTLSFacts(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s, log := startServerLogged(t, mtlsConfig(p, "127.0.0.1:0", up.address(), `
  - name: pass
    hosts: [pass.example.test]
    mode: passthrough
    upstream: {address: "`+up.address()+`"}
`))
	addr := s.addr(t, "127.0.0.1:0")
	cache := tls.NewLRUClientSessionCache(4)
	valid := p.clients["valid"]
	proxied := func(version uint16, cipher uint16) *tls.Conn {
		t.Helper()
		cfg := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{valid},
			MinVersion: version, MaxVersion: version, ClientSessionCache: cache}
		if cipher != 0 {
			cfg.CipherSuites = []uint16{cipher}
		}
		c, _, err := dialTLS(t, addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("PING\n"))
		c.CloseWrite()
		if reply, err := io.ReadAll(c); string(reply) != "PONG" {
			t.Fatalf("client got %q, %v; want PONG", reply, err)
		}
		c.Close()
		up.next(t)
		return c
	}
	first := proxied(tls.VersionTLS13, 0)
	second := proxied(tls.VersionTLS13, 0)
	if !second.ConnectionState().DidResume {
		t.Fatal("control: the second connection did not resume; the test would prove nothing")
	}
	tls12 := proxied(tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
	c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
		Certificates: []tls.Certificate{p.clients["other-ca"]}, MaxVersion: tls.VersionTLS13})
	expectRefused(t, c, rc, err)
	c, rc, err = dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, MaxVersion: tls.VersionTLS12})
	expectRefused(t, c, rc, err)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	send(raw, goHello(t, "pass.example.test"), false)
	raw.(*net.TCPConn).CloseWrite()
	io.ReadAll(raw)
	raw.Close()
	up.next(t)

	recs := log.waitConnections(t, 6)
	byClient := map[string]map[string]any{}
	for _, r := range recs {
		byClient[fmt.Sprint(r["client"])] = r
	}
	facts := func(cert tls.Certificate) map[string]any {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		return map[string]any{
			"client_cn":          leaf.Subject.CommonName,
			"client_serial":      strings.ToUpper(leaf.SerialNumber.Text(16)),
			"client_spki_sha256": hex.EncodeToString(spki[:]),
		}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}
	validFacts, otherFacts := facts(valid), facts(p.clients["other-ca"])
	if validFacts["client_spki_sha256"] == otherFacts["client_spki_sha256"] {
		t.Fatal("control: the two client certificates have the same key")
	}
	var passClient, refusedNone, refusedOther string
	for client, r := range byClient {
		switch {
		case r["mode"] == "passthrough":
			passClient = client
		case r["reason"] == "unknown_issuer":
			refusedOther = client
		case r["reason"] == "no_certificate":
			refusedNone = client
		}
	}
	for _, tc := range []struct {
		name   string
		client string
		want   map[string]any
	}{
		{"TLS 1.3 full handshake", first.LocalAddr().String(), with(validFacts, "outcome", "proxied", "tls_version", "TLS 1.3",
			"tls_cipher", tls.CipherSuiteName(first.ConnectionState().CipherSuite), "tls_resumed", false)},
		{"TLS 1.3 resumed", second.LocalAddr().String(), with(validFacts, "outcome", "proxied", "tls_version", "TLS 1.3",
			"tls_cipher", tls.CipherSuiteName(second.ConnectionState().CipherSuite), "tls_resumed", true)},
		{"TLS 1.2", tls12.LocalAddr().String(), with(validFacts, "outcome", "proxied", "tls_version", "TLS 1.2",
			"tls_cipher", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "tls_resumed", false)},
		{"refused certificate", refusedOther, with(otherFacts, "outcome", "closed_client_cert", "tls_version", "TLS 1.3", "tls_resumed", false)},
		{"no certificate", refusedNone, map[string]any{"outcome": "closed_client_cert", "tls_version": "TLS 1.2", "tls_resumed": false,
			"client_cn": nil, "client_serial": nil, "client_spki_sha256": nil}},
		{"passthrough", passClient, map[string]any{"outcome": "proxied", "tls_version": nil, "tls_cipher": nil, "tls_resumed": nil,
			"client_cn": nil, "client_serial": nil, "client_spki_sha256": nil}},
	} {
		r, ok := byClient[tc.client]
		if !ok || tc.client == "" {
			t.Errorf("%s: no log line (client %q) in %v", tc.name, tc.client, recs)
			continue
		}
		for k, v := range tc.want {
			if r[k] != v {
				t.Errorf("%s: %s = %#v, want %#v (line %v)", tc.name, k, r[k], v, r)
			}
		}
	}
	if r := byClient[refusedOther]; r != nil {
		if c, _ := r["tls_cipher"].(string); !strings.HasPrefix(c, "TLS_") {
			t.Errorf("refused certificate: tls_cipher %#v, want a suite name", r["tls_cipher"])
		}
	}
}

// TestVHostObserversAllocateNothing: what a connection adds to the per-vhost
// histograms (hello, handshake, connect, duration) allocates nothing, for a
// routed connection and for one that reached no vhost.
func TestVHostObserversAllocateNothing(t *testing.T) {
	m := newMetrics()
	st := &state{vhosts: map[string]*vhost{"app": {name: "app"}}}
	m.forState(st)
	v := st.vhosts["app"]
	for _, target := range []*vhost{v, nil} {
		allocs := testing.AllocsPerRun(1000, func() {
			o := m.of(target)
			o.hello.Observe(0.001)
			o.handshake.Observe(0.002)
			o.connect.Observe(0.0003)
			o.duration.Observe(1.5)
		})
		if allocs != 0 {
			t.Errorf("vhost %v: %v allocations per connection's observations, want 0", target, allocs)
		}
	}
}

func BenchmarkVHostObservers(b *testing.B) {
	m := newMetrics()
	st := &state{vhosts: map[string]*vhost{"app": {name: "app"}}}
	m.forState(st)
	v := st.vhosts["app"]
	b.ReportAllocs()
	for b.Loop() {
		o := m.of(v)
		o.hello.Observe(0.001)
		o.handshake.Observe(0.002)
		o.connect.Observe(0.0003)
		o.duration.Observe(1.5)
	}
}
