package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
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

// testCloudflareCAPEM returns a self-signed certificate with the given
// subject CN, validity and CA flag, in PEM.
func testCloudflareCAPEM(t *testing.T, cn string, notBefore, notAfter time.Time, isCA bool) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"edgegate test"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeCloudflareSet writes the three files of a set into dir; an empty
// name in skip leaves that file out.
func writeCloudflareSet(t *testing.T, dir, v4, v6 string, ca []byte, skip ...string) {
	t.Helper()
	for name, data := range map[string][]byte{
		CloudflareIPv4File: []byte(v4),
		CloudflareIPv6File: []byte(v6),
		CloudflareCAFile:   ca,
	} {
		path := filepath.Join(dir, name)
		os.Remove(path)
		if slices.Contains(skip, name) {
			continue
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// restoreCloudflareData puts the built-in set back when the test ends, so
// no other test sees what this one installed.
func restoreCloudflareData(t *testing.T) {
	t.Cleanup(func() { installedCloudflare.Store(nil) })
}

func TestParseCloudflareDataRefuses(t *testing.T) {
	now := time.Now()
	goodCA := testCloudflareCAPEM(t, CloudflareCACommonName, now.Add(-time.Hour), now.Add(24*time.Hour), true)
	v4, v6 := testCloudflareList(12, false), testCloudflareList(6, true)
	tests := []struct {
		name     string
		v4, v6   string
		ca       []byte
		wantErrs []string
	}{
		{name: "empty v4", v4: "", v6: v6, ca: goodCA, wantErrs: []string{"ips-v4.txt", "empty"}},
		{name: "empty v6", v4: v4, v6: "\n\n", ca: goodCA, wantErrs: []string{"ips-v6.txt", "empty"}},
		{name: "html page", v4: "<html><head><title>301 Moved</title></head></html>\n", v6: v6, ca: goodCA, wantErrs: []string{"ips-v4.txt", "not a CIDR"}},
		{name: "glued lines", v4: strings.Replace(v4, "/24\n", "/24", 1), v6: v6, ca: goodCA, wantErrs: []string{"ips-v4.txt", "line 1"}},
		{name: "short v4", v4: testCloudflareList(9, false), v6: v6, ca: goodCA, wantErrs: []string{"ips-v4.txt", "9 entries", "at least 10"}},
		{name: "short v6", v4: v4, v6: testCloudflareList(4, true), ca: goodCA, wantErrs: []string{"ips-v6.txt", "4 entries", "at least 5"}},
		{name: "swapped files", v4: v6 + testCloudflareList(6, true), v6: v4, ca: goodCA, wantErrs: []string{"ips-v4.txt", "not an IPv4 prefix", "swapped"}},
		{name: "v4 in v6", v4: v4, v6: v6 + "198.18.0.0/24\n", ca: goodCA, wantErrs: []string{"ips-v6.txt", "not an IPv6 prefix"}},
		{name: "mapped v4 in v6", v4: v4, v6: v6 + "::ffff:198.18.0.0/120\n", ca: goodCA, wantErrs: []string{"ips-v6.txt", "not an IPv6 prefix"}},
		{name: "whole internet v4", v4: v4 + "0.0.0.0/0\n", v6: v6, ca: goodCA, wantErrs: []string{"ips-v4.txt", "0.0.0.0/0", "broader than /8"}},
		{name: "whole internet v6", v4: v4, v6: v6 + "::/0\n", ca: goodCA, wantErrs: []string{"ips-v6.txt", "::/0", "broader than /16"}},
		{name: "empty CA", v4: v4, v6: v6, ca: nil, wantErrs: []string{"origin-pull-ca.pem", "is empty"}},
		{name: "CA not PEM", v4: v4, v6: v6, ca: []byte("<html>Moved</html>"), wantErrs: []string{"origin-pull-ca.pem", "not a PEM certificate"}},
		{name: "CA is a key", v4: v4, v6: v6, ca: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), wantErrs: []string{"origin-pull-ca.pem", `"PRIVATE KEY"`}},
		{name: "CA garbage DER", v4: v4, v6: v6, ca: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), wantErrs: []string{"origin-pull-ca.pem", "certificate 1"}},
		{name: "two certificates", v4: v4, v6: v6, ca: append(slices.Clone(goodCA), goodCA...), wantErrs: []string{"origin-pull-ca.pem", "2 certificates"}},
		{name: "leaf not CA", v4: v4, v6: v6, ca: testCloudflareCAPEM(t, CloudflareCACommonName, now.Add(-time.Hour), now.Add(time.Hour), false), wantErrs: []string{"origin-pull-ca.pem", "not a CA certificate"}},
		{name: "CA expired", v4: v4, v6: v6, ca: testCloudflareCAPEM(t, CloudflareCACommonName, now.Add(-48*time.Hour), now.Add(-24*time.Hour), true), wantErrs: []string{"origin-pull-ca.pem", "expired"}},
		{name: "CA not yet valid", v4: v4, v6: v6, ca: testCloudflareCAPEM(t, CloudflareCACommonName, now.Add(24*time.Hour), now.Add(48*time.Hour), true), wantErrs: []string{"origin-pull-ca.pem", "not valid before"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseCloudflareData([]byte(tc.v4), []byte(tc.v6), tc.ca, now)
			if err == nil {
				t.Fatalf("accepted: %d IPv4, %d IPv6, CA %v", len(d.IPv4), len(d.IPv6), d.CA.Subject)
			}
			for _, want := range tc.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if d != nil {
				t.Errorf("returned part of a set with the error")
			}
		})
	}
}

func TestParseCloudflareDataAccepts(t *testing.T) {
	now := time.Now()
	// The reference data as embedded is a valid set, today.
	d, err := ParseCloudflareData(cloudflareIPv4, cloudflareIPv6, cloudflareCAPEM, now)
	if err != nil {
		t.Fatalf("the embedded set is refused: %v", err)
	}
	if len(d.IPv4) != 15 || len(d.IPv6) != 7 || len(d.Warnings) != 0 {
		t.Errorf("embedded set: %d IPv4, %d IPv6, warnings %q; want 15, 7, none", len(d.IPv4), len(d.IPv6), d.Warnings)
	}
	// Another CA name is the operator's call, but said out loud.
	other := testCloudflareCAPEM(t, "Example Corp client CA", now.Add(-time.Hour), now.Add(time.Hour), true)
	d, err = ParseCloudflareData([]byte(testCloudflareList(10, false)), []byte(testCloudflareList(5, true)), other, now)
	if err != nil {
		t.Fatalf("a valid set with another CA name is refused: %v", err)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "Example Corp client CA") || !strings.Contains(d.Warnings[0], CloudflareCACommonName) {
		t.Errorf("warnings %q; want one naming both the CA's subject and %s", d.Warnings, CloudflareCACommonName)
	}
}

func TestLoadCloudflareData(t *testing.T) {
	restoreCloudflareData(t)
	builtinV4 := len(BuiltinCloudflareData().IPv4)
	now := time.Now()
	ca, err := testpki.NewCA(CloudflareCACommonName)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("cloudflare origin pull")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cloudflare")

	// No folder: the built-in set, and no error.
	d, err := LoadCloudflareData(dir)
	if err != nil || d.Source != "built-in" {
		t.Fatalf("missing folder: %v, source %q; want the built-in set without error", err, d.Source)
	}

	// A valid set replaces the built-in one everywhere "cloudflare" is used.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if d, err := LoadCloudflareData(dir); err != nil || d.Source != "built-in" {
		t.Fatalf("empty folder: %v, source %q; want the built-in set without error", err, d.Source)
	}
	writeCloudflareSet(t, dir, testCloudflareList(12, false), testCloudflareList(6, true), ca.PEM)
	d, err = LoadCloudflareData(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Source != dir || len(d.IPv4) != 12 || len(d.IPv6) != 6 {
		t.Fatalf("loaded %d IPv4, %d IPv6 from %q; want 12, 6 from %s", len(d.IPv4), len(d.IPv6), d.Source, dir)
	}
	ps := CloudflarePrefixes()
	if len(ps) != 18 || ps[0] != netip.MustParsePrefix("198.18.0.0/24") || ps[12] != netip.MustParsePrefix("2001:db8::/48") {
		t.Errorf("CloudflarePrefixes after load = %v; want the 12 + 6 installed", ps)
	}
	pool, cert := CloudflareCA()
	if !cert.Equal(ca.Cert) {
		t.Errorf("CloudflareCA = %v; want the installed test CA", cert.Subject)
	}
	if _, err := client.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a client certificate from the installed CA does not verify against CloudflareCA: %v", err)
	}
	// What an operator writes in a config follows the installed set.
	cfg, err := ParseConfig("edgegate.yaml", []byte(`
listen: [{address: "127.0.0.1:8443"}]
cloudflare_data: `+dir+`
limits: {never_limit: [cloudflare]}
vhosts:
  - {name: www, hosts: [www.example.com], mode: passthrough, upstream: {address: "127.0.0.1:8444"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !containsAddr(cfg.Limits.neverLimit, netip.MustParseAddr("198.18.3.9")) || containsAddr(cfg.Limits.neverLimit, netip.MustParseAddr("104.16.0.1")) {
		t.Errorf("never_limit: [cloudflare] = %v; want the installed ranges, not the built-in ones", cfg.Limits.neverLimit)
	}
	// ParseConfig itself loaded cloudflare_data again: that set is the
	// one now in force.
	d = CurrentCloudflareData()
	if d.Source != dir {
		t.Fatalf("after ParseConfig the set in force comes from %q, want %s", d.Source, dir)
	}

	// Every broken set is refused and the installed one stays in force.
	for _, tc := range []struct {
		name string
		v4   string
		ca   []byte
		skip string
		want string
	}{
		{name: "truncated list", v4: testCloudflareList(3, false), ca: ca.PEM, want: "at least 10"},
		{name: "expired CA", v4: testCloudflareList(12, false), ca: testCloudflareCAPEM(t, CloudflareCACommonName, now.Add(-48*time.Hour), now.Add(-time.Hour), true), want: "expired"},
		{name: "half a set", v4: testCloudflareList(12, false), ca: ca.PEM, skip: CloudflareCAFile, want: "missing"},
	} {
		writeCloudflareSet(t, dir, tc.v4, testCloudflareList(6, true), tc.ca, tc.skip)
		got, err := LoadCloudflareData(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: err = %v; want one naming %s and saying %q", tc.name, err, dir, tc.want)
		}
		if got != d || CurrentCloudflareData() != d || len(CloudflarePrefixes()) != 18 {
			t.Errorf("%s: the installed set was not kept", tc.name)
		}
	}

	// Removing the folder is how an operator goes back to the built-in set.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCloudflareData(dir); err != nil {
		t.Fatal(err)
	}
	if got := len(CurrentCloudflareData().IPv4); got != builtinV4 {
		t.Errorf("after removing the folder: %d IPv4 ranges; want the built-in %d", got, builtinV4)
	}
	if _, cert := CloudflareCA(); cert.Subject.CommonName != CloudflareCACommonName || cert.Equal(ca.Cert) {
		t.Errorf("after removing the folder CloudflareCA is still the test CA")
	}
}

// TestCloudflareDataSwapIsConsistent reads the set while another goroutine
// swaps between two; under -race this also proves the swap is safe. A
// reader must never see one set's CA with the other's ranges.
func TestCloudflareDataSwapIsConsistent(t *testing.T) {
	restoreCloudflareData(t)
	ca, err := testpki.NewCA(CloudflareCACommonName)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeCloudflareSet(t, dir, testCloudflareList(11, false), testCloudflareList(5, true), ca.PEM)
	builtin := BuiltinCloudflareData()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := CurrentCloudflareData()
				fromDir := d.CA.Equal(ca.Cert)
				if fromDir != (len(d.IPv4) == 11) || fromDir == (d.CA == builtin.CA) {
					t.Errorf("inconsistent set: CA %v with %d IPv4 ranges", d.CA.Subject, len(d.IPv4))
					return
				}
				if n := len(CloudflarePrefixes()); n != 16 && n != len(builtin.IPv4)+len(builtin.IPv6) {
					t.Errorf("CloudflarePrefixes returned %d ranges, which is neither set", n)
					return
				}
			}
		})
	}
	empty := filepath.Join(dir, "missing")
	for i := range 200 {
		target := dir
		if i%2 == 1 {
			target = empty
		}
		if _, err := LoadCloudflareData(target); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestCloudflareDataServes runs a real gateway whose mtls vhost trusts
// "cloudflare" and allows only "cloudflare": with a set installed that names
// a test CA and loopback, a client certificate from that CA reaches the
// upstream; after the folder is removed and the gateway reloaded, the
// built-in set is in force again and the same client is refused before any
// cryptography, because loopback is not Cloudflare's.
func TestCloudflareDataServes(t *testing.T) {
	restoreCloudflareData(t)
	p := newPKI(t)
	dir := filepath.Join(t.TempDir(), "cloudflare")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCloudflareSet(t, dir, "127.0.0.0/8\n"+testCloudflareList(10, false), testCloudflareList(5, true), p.ca.PEM)
	if _, err := LoadCloudflareData(dir); err != nil {
		t.Fatal(err)
	}
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
	if _, err := LoadCloudflareData(dir); err != nil {
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
