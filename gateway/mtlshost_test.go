package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/clientauth"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// TestChainCacheAcrossReload: the cache of verified client chains belongs
// to what a vhost trusts. A reload that keeps the vhost's CA and pins keeps
// the cache, entries included, so Cloudflare's one chain is not verified
// again after every reload; one that changes them (a CA file rewritten in
// place included) starts an empty cache, and a chain verified under the old
// CA gets no pass from it.
func TestChainCacheAcrossReload(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	up2 := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	dir := t.TempDir()
	caFile := filepath.Join(dir, "client-ca.pem")
	copyFile(t, p.caFile, caFile)
	config := func(upstream, pins, otherCA string) string {
		return yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[3]q, spki_sha256: [%[4]s]}
    upstream: {address: %[5]q}
  - name: other
    hosts: [other.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[6]q}
    upstream: {address: %[5]q}
`, p.certFile, p.keyFile, caFile, pins, upstream, otherCA)
	}
	s := startServerIn(t, dir, config(up.address(), "", p.caFile))
	reload := func(t *testing.T, text string) {
		t.Helper()
		path := filepath.Join(dir, "edgegate.yaml") // startServerIn's
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.ReloadFile(path); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	addr := s.addr(t, "127.0.0.1:0")
	cache := func(vhost string) *clientauth.Cache { return s.state.Load().vhosts[vhost].mtls.auth.Cache }
	// connect makes a full handshake (no session to resume: the chain is
	// judged) and one exchange through to u.
	connect := func(t *testing.T, cert tls.Certificate, u *testUpstream) {
		t.Helper()
		c, _, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		c.Write([]byte("PING\n"))
		c.CloseWrite()
		if reply, err := io.ReadAll(c); string(reply) != "PONG" {
			t.Fatalf("client got %q, %v; want PONG", reply, err)
		}
		if uc := u.next(t); string(uc.data) != "PING\n" {
			t.Fatalf("upstream got %q", uc.data)
		}
	}
	wantLen := func(t *testing.T, c *clientauth.Cache, n int) {
		t.Helper()
		if got := c.Len(); got != n {
			t.Fatalf("app's chain cache holds %d chains, want %d", got, n)
		}
	}

	first := cache("app")
	connect(t, p.clients["valid"], up)
	wantLen(t, first, 1)

	t.Run("unchanged", func(t *testing.T) {
		reload(t, config(up.address(), "", p.caFile))
		if cache("app") != first {
			t.Fatal("a reload that changed nothing replaced app's chain cache")
		}
		// The same key as before the reload: a hit, not a second entry
		// under a new trust generation.
		connect(t, p.clients["valid"], up)
		wantLen(t, first, 1)
	})

	otherCA, err := testpki.NewCA("other vhost's CA")
	if err != nil {
		t.Fatal(err)
	}
	otherCAFile := filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(otherCAFile, otherCA.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("upstream and another vhost's CA", func(t *testing.T) {
		otherBefore := cache("other")
		reload(t, config(up2.address(), "", otherCAFile))
		if cache("app") != first {
			t.Fatal("changing app's upstream and another vhost's CA replaced app's chain cache")
		}
		if cache("other") == otherBefore || cache("other").Len() != 0 {
			t.Fatal("the vhost whose CA changed kept its chain cache")
		}
		connect(t, p.clients["valid"], up2)
		wantLen(t, first, 1)
	})

	newCA, err := testpki.NewCA("replacement origin-pull CA")
	if err != nil {
		t.Fatal(err)
	}
	newClient, err := newCA.Client("client of the replacement CA")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("CA file rewritten in place", func(t *testing.T) {
		if err := os.WriteFile(caFile, newCA.PEM, 0o644); err != nil {
			t.Fatal(err)
		}
		reload(t, config(up2.address(), "", otherCAFile))
		now := cache("app")
		if now == first {
			t.Fatal("app kept its chain cache although its CA changed")
		}
		wantLen(t, now, 0)
		// The chain verified under the old CA, cached a moment ago, is
		// judged afresh and refused.
		refused := testutil.ToFloat64(s.metrics.rejections.WithLabelValues("app", "unknown_issuer"))
		c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}})
		expectRefused(t, c, rc, err)
		waitRejections(t, s, "app", "unknown_issuer", refused+1)
		up2.expectNone(t)
		wantLen(t, now, 0)
		connect(t, newClient, up2)
		wantLen(t, now, 1)
	})

	t.Run("pins", func(t *testing.T) {
		before := cache("app")
		leaf, err := x509.ParseCertificate(newClient.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		reload(t, config(up2.address(), `"`+hex.EncodeToString(testpki.SPKISHA256(leaf))+`"`, otherCAFile))
		now := cache("app")
		if now == before {
			t.Fatal("app kept its chain cache although its pins changed")
		}
		wantLen(t, now, 0)
		connect(t, newClient, up2)
		wantLen(t, now, 1)
	})
	up.expectNone(t)
	up2.expectNone(t)
}
