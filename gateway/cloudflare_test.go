package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/cloudflare"
)

// testCloudflareList returns n distinct prefixes of one family, one a
// line, in documentation-free ranges that are not Cloudflare's.
func testCloudflareList(n int, ipv6 bool) string {
	var b strings.Builder
	for i := range n {
		if ipv6 {
			fmt.Fprintf(&b, "2001:db8:%x::/48\n", i)
		} else {
			fmt.Fprintf(&b, "198.18.%d.0/24\n", i)
		}
	}
	return b.String()
}

// installCloudflareSet installs a Cloudflare set in dir as `edgegate
// cloudflare update` does (validated, then written).
func installCloudflareSet(t *testing.T, dir, v4, v6 string, ca []byte) {
	t.Helper()
	set, err := cloudflare.Parse([]byte(v4), []byte(v6), ca, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := cloudflare.Install(dir, set); err != nil {
		t.Fatal(err)
	}
}

// TestCloudflareDataServes runs a real gateway whose mtls vhost trusts
// "cloudflare" and allows only "cloudflare": with a set installed that names
// a test CA and loopback, a client certificate from that CA reaches the
// upstream; after the folder is removed and the gateway reloaded, the
// built-in set is in force again and the same client is refused before any
// cryptography, because loopback is not Cloudflare's.
func TestCloudflareDataServes(t *testing.T) {
	p := newPKI(t)
	dir := filepath.Join(t.TempDir(), "cloudflare")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	installCloudflareSet(t, dir, "127.0.0.0/8\n"+testCloudflareList(10, false), testCloudflareList(5, true), p.ca.PEM)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	cfgDir := t.TempDir()
	s := startServerIn(t, cfgDir, yamlf(`
listen: [{address: "127.0.0.1:0"}]
cloudflare_data: %q
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls:
      certificates: [{cert: %q, key: %q}]
    client_auth: {ca: cloudflare}
    allow_from: [cloudflare]
    upstream: {address: %q, proxy_protocol: v2}
`, dir, p.certFile, p.keyFile, up.address()))
	addr := s.addr(t, "127.0.0.1:0")
	client := &tls.Config{ServerName: "app.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}}

	c, _, err := dialTLS(t, addr, client)
	if err != nil {
		t.Fatalf("handshake with a certificate from the installed CA: %v", err)
	}
	c.Write([]byte("PING\n"))
	c.CloseWrite()
	reply, err := io.ReadAll(c)
	c.Close()
	if string(reply) != "PONG" {
		t.Fatalf("client got %q, %v; want PONG", reply, err)
	}
	if uc := up.next(t); string(uc.data) != "PING\n" {
		t.Fatalf("upstream got %q; want PING", uc.data)
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadFile(filepath.Join(cfgDir, "edgegate.yaml")); err != nil {
		t.Fatal(err)
	}
	c, rc, err := dialTLS(t, addr, client)
	expectRefused(t, c, rc, err)
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeNotAllowed, 1)
	up.expectNone(t)
}
