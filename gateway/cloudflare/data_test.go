package cloudflare

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
		IPv4File: []byte(v4),
		IPv6File: []byte(v6),
		CAFile:   ca,
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

func TestParseCloudflareDataRefuses(t *testing.T) {
	now := time.Now()
	goodCA := testCloudflareCAPEM(t, CACommonName, now.Add(-time.Hour), now.Add(24*time.Hour), true)
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
		{name: "leaf not CA", v4: v4, v6: v6, ca: testCloudflareCAPEM(t, CACommonName, now.Add(-time.Hour), now.Add(time.Hour), false), wantErrs: []string{"origin-pull-ca.pem", "not a CA certificate"}},
		{name: "CA expired", v4: v4, v6: v6, ca: testCloudflareCAPEM(t, CACommonName, now.Add(-48*time.Hour), now.Add(-24*time.Hour), true), wantErrs: []string{"origin-pull-ca.pem", "expired"}},
		{name: "CA not yet valid", v4: v4, v6: v6, ca: testCloudflareCAPEM(t, CACommonName, now.Add(24*time.Hour), now.Add(48*time.Hour), true), wantErrs: []string{"origin-pull-ca.pem", "not valid before"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse([]byte(tc.v4), []byte(tc.v6), tc.ca, now)
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
	d, err := Parse(cloudflareIPv4, cloudflareIPv6, cloudflareCAPEM, now)
	if err != nil {
		t.Fatalf("the embedded set is refused: %v", err)
	}
	if len(d.IPv4) != 15 || len(d.IPv6) != 7 || len(d.Warnings) != 0 {
		t.Errorf("embedded set: %d IPv4, %d IPv6, warnings %q; want 15, 7, none", len(d.IPv4), len(d.IPv6), d.Warnings)
	}
	// Another CA name is the operator's call, but said out loud.
	other := testCloudflareCAPEM(t, "Example Corp client CA", now.Add(-time.Hour), now.Add(time.Hour), true)
	d, err = Parse([]byte(testCloudflareList(10, false)), []byte(testCloudflareList(5, true)), other, now)
	if err != nil {
		t.Fatalf("a valid set with another CA name is refused: %v", err)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "Example Corp client CA") || !strings.Contains(d.Warnings[0], CACommonName) {
		t.Errorf("warnings %q; want one naming both the CA's subject and %s", d.Warnings, CACommonName)
	}
}

// TestRead reads sets from a folder as the gateway and `edgegate cloudflare
// update` do: a missing or empty folder is the built-in set, a valid set is
// read whole, and every broken set is an error naming the folder.
func TestRead(t *testing.T) {
	now := time.Now()
	ca, err := testpki.NewCA(CACommonName)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("cloudflare origin pull")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cloudflare")
	if d, err := Read(dir, now); err != nil || d.Source != "built-in" {
		t.Fatalf("missing folder: %v; want the built-in set without error", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if d, err := Read(dir, now); err != nil || d.Source != "built-in" {
		t.Fatalf("empty folder: %v; want the built-in set without error", err)
	}
	writeCloudflareSet(t, dir, testCloudflareList(12, false), testCloudflareList(6, true), ca.PEM)
	d, err := Read(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if d.Source != dir || len(d.IPv4) != 12 || len(d.IPv6) != 6 {
		t.Fatalf("read %d IPv4, %d IPv6 from %q; want 12, 6 from %s", len(d.IPv4), len(d.IPv6), d.Source, dir)
	}
	ps := d.Prefixes()
	if len(ps) != 18 || ps[0] != netip.MustParsePrefix("198.18.0.0/24") || ps[12] != netip.MustParsePrefix("2001:db8::/48") {
		t.Errorf("Prefixes = %v; want the 12 + 6 installed", ps)
	}
	if !d.CA.Equal(ca.Cert) {
		t.Errorf("CA = %v; want the installed test CA", d.CA.Subject)
	}
	if _, err := client.Leaf.Verify(x509.VerifyOptions{Roots: d.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a client certificate from the installed CA does not verify against the set's pool: %v", err)
	}
	if Builtin().CA.Equal(ca.Cert) || len(Builtin().IPv4) == 12 {
		t.Error("reading a set changed the built-in one")
	}
	for _, tc := range []struct {
		name string
		v4   string
		ca   []byte
		skip string
		want string
	}{
		{name: "truncated list", v4: testCloudflareList(3, false), ca: ca.PEM, want: "at least 10"},
		{name: "expired CA", v4: testCloudflareList(12, false), ca: testCloudflareCAPEM(t, CACommonName, now.Add(-48*time.Hour), now.Add(-time.Hour), true), want: "expired"},
		{name: "half a set", v4: testCloudflareList(12, false), ca: ca.PEM, skip: CAFile, want: "missing"},
	} {
		writeCloudflareSet(t, dir, tc.v4, testCloudflareList(6, true), tc.ca, tc.skip)
		if _, err := Read(dir, now); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: err = %v; want one naming %s and saying %q", tc.name, err, dir, tc.want)
		}
	}
}
