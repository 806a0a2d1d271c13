package cloudflare

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCloudflareCA(t *testing.T) {
	pool, cert := Builtin().Pool(), Builtin().CA
	if pool == nil || cert == nil {
		t.Fatal("the built-in set has no CA")
	}
	want := "CN=origin-pull.cloudflare.net,OU=Origin Pull,O=CloudFlare\\, Inc.,L=San Francisco,ST=California,C=US"
	if got := cert.Subject.String(); got != want {
		t.Errorf("subject = %q, want %q", got, want)
	}
	if cert.Issuer.String() != cert.Subject.String() {
		t.Errorf("issuer %q differs from subject", cert.Issuer)
	}
	if !cert.IsCA {
		t.Error("not a CA certificate")
	}
	if cert.SignatureAlgorithm != x509.SHA512WithRSA {
		t.Errorf("signature algorithm %v, want SHA512-RSA", cert.SignatureAlgorithm)
	}
	// The 2015-2020 predecessor shares the key, so dates and fingerprint are
	// what tell the current certificate apart.
	if got := cert.NotBefore.UTC().Format(time.DateOnly); got != "2019-10-10" {
		t.Errorf("NotBefore = %s, want 2019-10-10", got)
	}
	if got := cert.NotAfter.UTC().Format(time.DateOnly); got != "2029-11-01" {
		t.Errorf("NotAfter = %s, want 2029-11-01", got)
	}
	sum := sha256.Sum256(cert.Raw)
	const fp = "9A:1A:C2:B4:BE:15:F9:F2:7E:EE:20:A7:34:CB:A4:E9:89:8F:61:00:1B:3B:D7:C8:4B:69:B5:6A:3E:25:A2:B9"
	if got := strings.ToUpper(hex.EncodeToString(sum[:])); got != strings.ReplaceAll(fp, ":", "") {
		t.Errorf("SHA-256 fingerprint = %s, want %s", got, fp)
	}
	// The pool must contain the CA: a chain of just the CA verifies to it.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: cert.NotBefore.Add(time.Hour)}); err != nil {
		t.Errorf("CA does not verify against its own pool: %v", err)
	}
	// A caller extending its pool must not change what the next caller gets.
	extra := Builtin().Pool()
	extra.AddCert(&x509.Certificate{Raw: []byte{1}, RawSubject: []byte{2}})
	again := Builtin().Pool()
	if again.Equal(extra) {
		t.Error("Pool returned a shared, mutable pool")
	}
}

// TestCloudflareDataMatchesShared guards against the embedded copies drifting
// from the team's reference files when those are updated.
func TestCloudflareDataMatchesShared(t *testing.T) {
	for _, tc := range []struct {
		name     string
		embedded []byte
	}{
		{"origin-pull-ca.pem", cloudflareCAPEM},
		{"ips-v4.txt", cloudflareIPv4},
		{"ips-v6.txt", cloudflareIPv6},
	} {
		ref, err := os.ReadFile("../../../shared/cloudflare/" + tc.name)
		if err != nil {
			t.Logf("reference copy not available (%v); embedded data checked on its own", err)
			continue
		}
		if string(ref) != string(tc.embedded) {
			t.Errorf("gateway/cloudflare/%s differs from shared/cloudflare/%s", tc.name, tc.name)
		}
	}
}

func TestCloudflarePrefixes(t *testing.T) {
	ps := Builtin().Prefixes()
	var v4, v6 int
	for _, p := range ps {
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 != 15 || v6 != 7 {
		t.Fatalf("got %d IPv4 and %d IPv6 prefixes, want 15 and 7", v4, v6)
	}
	contains := func(addr string) bool {
		a := netip.MustParseAddr(addr)
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, in := range []string{"173.245.48.1", "104.16.0.1", "104.23.255.254", "172.71.0.1", "2606:4700::1111", "2a06:98c7::1"} {
		if !contains(in) {
			t.Errorf("%s should be a Cloudflare address", in)
		}
	}
	for _, out := range []string{"127.0.0.1", "104.32.0.1", "8.8.8.8", "2001:db8::1"} {
		if contains(out) {
			t.Errorf("%s should not be a Cloudflare address", out)
		}
	}
	ps[0] = netip.Prefix{}
	if Builtin().Prefixes()[0] != netip.MustParsePrefix("173.245.48.0/20") {
		t.Error("Prefixes returned a shared slice")
	}
}

func TestParsePrefixList(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		min     int
		want    int
		wantErr string
	}{
		{name: "one per line", data: "10.0.0.0/8\n192.168.0.0/16\n", min: 2, want: 2},
		{name: "no trailing newline", data: "10.0.0.0/8\n192.168.0.0/16", min: 2, want: 2},
		{name: "crlf comments blanks", data: "# office\r\n10.0.0.0/8\r\n\r\n  2001:db8::/32  \r\n", min: 1, want: 2},
		{name: "empty", data: "", min: 0, wantErr: "empty"},
		{name: "only comments", data: "# nothing\n\n", min: 0, wantErr: "empty"},
		{name: "glued lines", data: "173.245.48.0/20103.21.244.0/22\n", min: 1, wantErr: "line 1"},
		{name: "glued across files", data: "10.0.0.0/8\n131.0.72.0/222400:cb00::/32\n", min: 1, wantErr: "line 2"},
		{name: "html redirect page", data: "<html><body>Moved</body></html>\n", min: 1, wantErr: "not a CIDR"},
		{name: "bare address", data: "10.0.0.1\n", min: 1, wantErr: "not a CIDR"},
		{name: "host bits", data: "10.0.0.1/8\n", min: 1, wantErr: "host bits"},
		{name: "too short", data: "10.0.0.0/8\n", min: 10, wantErr: "at least 10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePrefixList([]byte(tc.data), tc.min)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q (got %v)", err, tc.wantErr, got)
				}
				if got != nil {
					t.Fatalf("returned a partial list %v with the error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("got %d prefixes %v, want %d", len(got), got, tc.want)
			}
		})
	}
}

func FuzzParsePrefixList(f *testing.F) {
	f.Add(cloudflareIPv4, 1)
	f.Add(cloudflareIPv6, 1)
	f.Add([]byte("10.0.0.0/8103.21.244.0/22"), 0)
	f.Fuzz(func(t *testing.T, data []byte, min int) {
		ps, err := parsePrefixList(data, min)
		if err != nil {
			return
		}
		if len(ps) == 0 || len(ps) < min {
			t.Fatalf("accepted %d prefixes with min %d", len(ps), min)
		}
		for _, p := range ps {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("accepted non-canonical prefix %v", p)
			}
		}
	})
}
