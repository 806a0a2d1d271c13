package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// crlConfig is an mtls vhost whose client_auth names crl (YAML: one file or
// a list). The crl key is on line 9.
func crlConfig(p *pki, upstream, crl string) string {
	return yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth:
      ca: %q
      crl: %s
    upstream: {address: %q}
`, p.certFile, p.keyFile, p.caFile, crl, upstream)
}

// writeCRL writes a CRL of ca that revokes the given certificates and
// expires at next, in PEM or DER, and returns its path.
func writeCRL(t testing.TB, path string, ca *testpki.CA, next time.Time, pemForm bool, revoked ...tls.Certificate) string {
	t.Helper()
	var leaves []*x509.Certificate
	for _, c := range revoked {
		leaves = append(leaves, c.Leaf)
	}
	der, err := ca.CRL(next, leaves...)
	if err != nil {
		t.Fatal(err)
	}
	if pemForm {
		der = testpki.CRLPEM(der)
	}
	if err := os.WriteFile(path, der, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClientCRL: a client whose leaf its CA's CRL revokes is refused like
// every other refused client (no byte after its last flight, no alert, no
// upstream connection) with reason "revoked", at TLS 1.2 and 1.3; one the
// CRL does not list is served. A reload with a new CRL applies at once,
// also to a chain verified and cached before it, and keeps the cache; a
// reload whose CRL does not load changes nothing.
func TestClientCRL(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	dir := t.TempDir()
	kept := p.clients["valid"]
	revoked, err := p.ca.Client("revoked client")
	if err != nil {
		t.Fatal(err)
	}
	// Two files: the CA's list in PEM and, in DER, an older one of the same
	// CA that revokes nothing.
	crlFile := writeCRL(t, filepath.Join(dir, "ca.crl.pem"), p.ca, time.Now().Add(24*time.Hour), true, revoked)
	writeCRL(t, filepath.Join(dir, "old.crl"), p.ca, time.Now().Add(24*time.Hour), false)
	const crls = "[ca.crl.pem, old.crl]"
	s := startServerIn(t, dir, crlConfig(p, up.address(), crls))
	addr := s.addr(t, "127.0.0.1:0")

	served := func(t *testing.T, cert tls.Certificate, version uint16) {
		t.Helper()
		c, _, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
			Certificates: []tls.Certificate{cert}, MaxVersion: version})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		c.Write([]byte("PING\n"))
		c.CloseWrite()
		if reply, err := io.ReadAll(c); string(reply) != "PONG" {
			t.Fatalf("client got %q, %v; want PONG", reply, err)
		}
		if uc := up.next(t); string(uc.data) != "PING\n" {
			t.Fatalf("upstream got %q", uc.data)
		}
	}
	refused := func(t *testing.T, cert tls.Certificate, version uint16) {
		t.Helper()
		before := testutil.ToFloat64(s.metrics.rejections.WithLabelValues("app", "revoked"))
		c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
			Certificates: []tls.Certificate{cert}, MaxVersion: version})
		if err == nil {
			// TLS 1.3: the request goes out before the refusal is seen; it
			// must not reach the upstream.
			c.Write([]byte("PING\n"))
		}
		expectRefused(t, c, rc, err)
		waitRejections(t, s, "app", "revoked", before+1)
		up.expectNone(t)
	}
	versions := map[string]uint16{"TLS1.2": tls.VersionTLS12, "TLS1.3": tls.VersionTLS13}

	for name, v := range versions {
		t.Run("revoked "+name, func(t *testing.T) { refused(t, revoked, v) })
		t.Run("not revoked "+name, func(t *testing.T) { served(t, kept, v) })
	}
	cache := s.state.Load().vhosts["app"].mtls.auth.Cache
	if cache.Len() != 1 {
		t.Fatalf("the chain cache holds %d chains, want the one served", cache.Len())
	}

	// Tickets issued to the client the next CRL revokes.
	tickets := map[string]*stealCache{}
	for name, v := range versions {
		tickets[name] = ticketFrom(t, addr, "app.example.test", p, v, kept)
		up.next(t)
	}

	reload := func(t *testing.T) error {
		t.Helper()
		return s.ReloadFile(filepath.Join(dir, "edgegate.yaml"))
	}
	t.Run("reload swaps the CRL", func(t *testing.T) {
		// The new list revokes the client served (and cached) a moment ago
		// and no longer the other.
		writeCRL(t, crlFile, p.ca, time.Now().Add(24*time.Hour), true, kept)
		if err := reload(t); err != nil {
			t.Fatal(err)
		}
		if now := s.state.Load().vhosts["app"].mtls.auth.Cache; now != cache {
			t.Fatal("a new CRL replaced the chain cache")
		}
		for name, v := range versions {
			t.Run(name, func(t *testing.T) {
				refused(t, kept, v)
				served(t, revoked, v)
			})
			// A session resumed from a ticket issued before the reload (the
			// ticket keys are kept) is judged by the new CRL too.
			t.Run("resumed "+name, func(t *testing.T) {
				before := testutil.ToFloat64(s.metrics.rejections.WithLabelValues("app", "revoked"))
				c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
					MinVersion: v, MaxVersion: v, ClientSessionCache: tickets[name]})
				if err == nil {
					c.Write([]byte("PING\n"))
				}
				expectRefused(t, c, rc, err)
				waitRejections(t, s, "app", "revoked", before+1)
				up.expectNone(t)
			})
		}
	})
	t.Run("reload with a broken CRL", func(t *testing.T) {
		if err := os.WriteFile(crlFile, []byte("not a CRL\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := reload(t)
		if want := filepath.Join(dir, "edgegate.yaml") + `:9: vhost "app": client_auth.crl ca.crl.pem: not a CRL`; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("reload error %v, want %q", err, want)
		}
		refused(t, kept, tls.VersionTLS13)
		served(t, revoked, tls.VersionTLS13)
	})
}

// TestClientCRLRefusedAtLoad: a CRL that does not load stops the
// configuration at the crl entry's line, whether it is not a CRL or is
// signed by no CA the vhost trusts.
func TestClientCRLRefusedAtLoad(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	other, err := testpki.NewCA("some other CA")
	if err != nil {
		t.Fatal(err)
	}
	writeCRL(t, filepath.Join(dir, "good.crl"), p.ca, time.Now().Add(time.Hour), false)
	writeCRL(t, filepath.Join(dir, "other.crl"), other, time.Now().Add(time.Hour), true)
	os.WriteFile(filepath.Join(dir, "garbage.crl"), []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cert.pem"), p.ca.PEM, 0o644)
	for _, tc := range []struct{ crl, want string }{
		{"other.crl", `:9: vhost "app": client_auth.crl other.crl: CRL issued by "CN=some other CA,O=edgegate testpki" is signed by no CA of client_auth.ca`},
		{"garbage.crl", `:9: vhost "app": client_auth.crl garbage.crl: PEM block 1: x509: malformed crl`},
		{"cert.pem", `:9: vhost "app": client_auth.crl cert.pem: PEM block 1 is "CERTIFICATE", not "X509 CRL"`},
		{"missing.crl", `:9: vhost "app": client_auth.crl missing.crl: open`},
		{"\n        - good.crl\n        - other.crl", `:11: vhost "app": client_auth.crl other.crl: CRL issued by`},
	} {
		t.Run(tc.crl, func(t *testing.T) {
			path := filepath.Join(dir, "edgegate.yaml")
			if err := os.WriteFile(path, []byte(crlConfig(p, "127.0.0.1:1", tc.crl)), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewServer(cfg, testLog())
			if err == nil || !strings.HasPrefix(err.Error(), path+tc.want) {
				t.Fatalf("error %v\nwant %q", err, path+tc.want)
			}
		})
	}
}

// TestCheckWarnsExpiredCRL: check warns, at the crl entry's line, about a
// CRL past its next update, and not about a current one.
func TestCheckWarnsExpiredCRL(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	writeCRL(t, filepath.Join(dir, "current.crl"), p.ca, time.Now().Add(time.Hour), false)
	writeCRL(t, filepath.Join(dir, "expired.crl"), p.ca, time.Now().Add(-time.Hour), true)
	path := filepath.Join(dir, "edgegate.yaml")
	os.WriteFile(path, []byte(crlConfig(p, "127.0.0.1:1", "\n        - current.crl\n        - expired.crl")), 0o644)
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(cfg, testLog()); err != nil {
		t.Fatalf("an expired CRL stopped the configuration: %v", err)
	}
	var crlWarnings []string
	for _, w := range Warnings(cfg) {
		if strings.Contains(w, "client_auth.crl") {
			crlWarnings = append(crlWarnings, w)
		}
	}
	want := fmt.Sprintf(`%s:11: vhost "app": client_auth.crl: expired.crl (issued by CN=test origin-pull CA,O=edgegate testpki) expired `, path)
	if len(crlWarnings) != 1 || !strings.HasPrefix(crlWarnings[0], want) {
		t.Fatalf("warnings about CRLs: %q\nwant one starting %q", crlWarnings, want)
	}
}
