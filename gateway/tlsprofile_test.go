package gateway

import (
	"crypto/tls"
	"io"
	"testing"
)

// TestTLSProfileHandshakes checks the profile on the wire with Go clients:
// by default a client offering only a CBC suite, or only a curve outside
// the profile, is refused silently, and the same client is served by a
// vhost that lists them; an ordinary client gets the hybrid post-quantum
// key exchange.
func TestTLSProfileHandshakes(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.address(), yamlf(`
  - name: listed
    hosts: [other.example.test]
    mode: mtls
    tls:
      certificates: [{cert: %q, key: %q}]
      cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-SHA]
      curves: [X25519, P-521]
    client_auth: {ca: %q}
    upstream: {address: %q}
`, p.certFile, p.keyFile, p.caFile, up.address())))
	addr := s.addr(t, "127.0.0.1:0")

	cbc := &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}
	p521 := &tls.Config{MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.CurveP521}}
	for _, tc := range []struct {
		name   string
		client *tls.Config
		sni    string
		ok     bool
		suite  uint16
		curve  tls.CurveID
	}{
		{"default/TLS 1.3", &tls.Config{}, "app.example.test", true, tls.TLS_AES_128_GCM_SHA256, tls.X25519MLKEM768},
		{"default/TLS 1.2", &tls.Config{MaxVersion: tls.VersionTLS12}, "app.example.test", true, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.X25519},
		{"default/CBC only", cbc, "app.example.test", false, 0, 0},
		{"default/P-521 only", p521, "app.example.test", false, 0, 0},
		{"listed/CBC only", cbc, "other.example.test", true, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.X25519},
		{"listed/P-521 only", p521, "other.example.test", true, tls.TLS_AES_128_GCM_SHA256, tls.CurveP521},
		{"listed/no hybrid", &tls.Config{}, "other.example.test", true, tls.TLS_AES_128_GCM_SHA256, tls.X25519},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.client.Clone()
			cfg.ServerName, cfg.RootCAs, cfg.Certificates = tc.sni, p.roots, []tls.Certificate{p.clients["valid"]}
			c, rc, err := dialTLS(t, addr, cfg)
			if !tc.ok {
				expectRefused(t, c, rc, err)
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			cs := c.ConnectionState()
			if cs.CipherSuite != tc.suite || cs.CurveID != tc.curve {
				t.Errorf("negotiated %s over %v, want %s over %v", tls.CipherSuiteName(cs.CipherSuite), cs.CurveID, tls.CipherSuiteName(tc.suite), tc.curve)
			}
			c.Write([]byte("PING\n"))
			c.CloseWrite()
			if b, _ := io.ReadAll(c); string(b) != "PONG" {
				t.Fatalf("got %q", b)
			}
			up.next(t)
		})
	}
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeHandshake, 2)
	up.expectNone(t)
}
