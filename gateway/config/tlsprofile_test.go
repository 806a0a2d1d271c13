package config

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/proxyheader"
)

// profileVHost is an mtls vhost whose tls block ends with extra lines
// (indented to sit inside it); the vhost's tls: key is on line 6.
func profileVHost(extra string) string {
	return "listen: [{address: \":443\"}]\nvhosts:\n" +
		"  - name: a\n    hosts: [a.example]\n    mode: mtls\n" +
		"    tls:\n      certificates: [{cert: a.crt, key: a.key}]\n" + extra +
		"    upstream: {address: \"127.0.0.1:8080\"}\n"
}

// TestTLSProfileErrors checks that every refused cipher suite or curve is
// reported at the line of the offending list item.
func TestTLSProfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, extra, want string }{
		{"unknown suite", "      cipher_suites:\n        - ECDHE-RSA-AES128-GCM-SHA256\n        - TLS_ECDHE_RSA_WITH_AES_512_GCM\n",
			`c.yaml:10: vhost "a": tls.cipher_suites: unknown cipher suite "TLS_ECDHE_RSA_WITH_AES_512_GCM"`},
		{"suite crypto/tls lacks", "      cipher_suites: [DHE-RSA-AES128-GCM-SHA256]\n",
			`c.yaml:8: vhost "a": tls.cipher_suites: unknown cipher suite "DHE-RSA-AES128-GCM-SHA256"`},
		{"TLS 1.3 suite", "      cipher_suites:\n        - ECDHE-ECDSA-AES128-GCM-SHA256\n        - TLS_AES_128_GCM_SHA256\n",
			`c.yaml:10: vhost "a": tls.cipher_suites: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite; crypto/tls does not let TLS 1.3 suites be configured`},
		{"suite twice under two names", "      cipher_suites:\n        - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n        - ecdhe-ecdsa-aes128-gcm-sha256\n",
			`c.yaml:10: vhost "a": tls.cipher_suites: "ecdhe-ecdsa-aes128-gcm-sha256" (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) is listed twice`},
		{"empty suites", "      cipher_suites: []\n", `c.yaml:8: vhost "a": tls.cipher_suites: empty`},
		{"unknown curve", "      curves:\n        - X25519\n        - brainpoolP256r1\n",
			`c.yaml:10: vhost "a": tls.curves: unknown curve "brainpoolP256r1"`},
		{"curve twice under two names", "      curves: [P-256, prime256v1]\n",
			`c.yaml:8: vhost "a": tls.curves: "prime256v1" (CurveP256) is listed twice`},
		{"empty curves", "      curves: []\n", `c.yaml:8: vhost "a": tls.curves: empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(profileVHost(tc.extra)), nil)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to start with %s", err, tc.want)
			}
		})
	}
}

// TestTLSProfileNames checks that IANA, OpenSSL and differently cased
// names resolve to the suites and curves they name, and that an unset list
// is the intermediate profile.
func TestTLSProfileNames(t *testing.T) {
	for _, tc := range []struct {
		name         string
		suites, crvs []string
		wantSuites   []uint16
		wantCurves   []tls.CurveID
	}{
		{name: "defaults", wantSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}, wantCurves: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}},
		{name: "IANA and OpenSSL names",
			suites:     []string{"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ecdhe-rsa-aes128-sha", "DES-CBC3-SHA", "TLS_RSA_WITH_RC4_128_SHA"},
			crvs:       []string{"secp384r1", "prime256v1", "x25519", "P-521", "SecP256r1MLKEM768"},
			wantSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, tls.TLS_RSA_WITH_RC4_128_SHA},
			wantCurves: []tls.CurveID{tls.CurveP384, tls.CurveP256, tls.X25519, tls.CurveP521, tls.SecP256r1MLKEM768}},
		{name: "only curves set", crvs: []string{"X25519MLKEM768", "x25519"},
			wantSuites: defaultCipherSuites, wantCurves: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseTLSProfile(&TLS{CipherSuites: tc.suites, Curves: tc.crvs})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.cipherSuites, tc.wantSuites) {
				t.Errorf("suites %v, want %v", names(p.cipherSuites), names(tc.wantSuites))
			}
			if !slices.Equal(p.curves, tc.wantCurves) {
				t.Errorf("curves %v, want %v", p.curves, tc.wantCurves)
			}
		})
	}
	// Every suite is found by both its names (TestCipherSuiteNames checks
	// the OpenSSL ones against openssl).
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		for _, name := range []string{s.Name, proxyheader.CipherSuiteName(s.ID)} {
			if got := suiteByName(name); got == nil || got.ID != s.ID {
				t.Errorf("%s resolves to %v, want %s", name, got, s.Name)
			}
		}
	}
}

func names(ids []uint16) []string {
	var out []string
	for _, id := range ids {
		out = append(out, tls.CipherSuiteName(id))
	}
	return out
}

// TestTLSProfileWarnings checks what `edgegate check` says about weak
// suites and lists that cannot apply, and that the default profile and a
// strong list draw no warning.
func TestTLSProfileWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		want        []string
	}{
		{name: "default"},
		{name: "strong list", extra: "      cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]\n      curves: [X25519MLKEM768, X25519]\n"},
		{name: "weak suites", extra: "      cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-SHA, AES128-GCM-SHA256, ECDHE-RSA-DES-CBC3-SHA, RC4-SHA]\n", want: []string{
			`vhost "a": tls.cipher_suites: TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA is weak: CBC with MAC-then-encrypt invites padding oracles (LUCKY13)`,
			`vhost "a": tls.cipher_suites: TLS_RSA_WITH_AES_128_GCM_SHA256 is weak: RSA key exchange has no forward secrecy (ROBOT)`,
			`vhost "a": tls.cipher_suites: TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA is weak: 3DES has 64-bit blocks (SWEET32)`,
			`vhost "a": tls.cipher_suites: TLS_RSA_WITH_RC4_128_SHA is weak: RC4 is broken and prohibited by RFC 7465; RSA key exchange has no forward secrecy (ROBOT)`,
		}},
		{name: "suites at TLS 1.3 only", extra: "      min_version: \"1.3\"\n      cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256]\n", want: []string{
			`vhost "a": tls.cipher_suites has no effect with min_version "1.3"`,
		}},
		{name: "only hybrid curves", extra: "      curves: [X25519MLKEM768]\n", want: []string{
			`vhost "a": tls.curves lists only post-quantum hybrids, which TLS 1.2 cannot use`,
		}},
		{name: "only hybrid curves at TLS 1.3 only", extra: "      min_version: \"1.3\"\n      curves: [X25519MLKEM768]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(profileVHost(tc.extra)), nil)
			if err != nil {
				t.Fatal(err)
			}
			got := TLSWarnings(cfg.VHosts[0])
			if len(got) != len(tc.want) {
				t.Fatalf("warnings:\n  %s\nwant %d", strings.Join(got, "\n  "), len(tc.want))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("warning %q\nwant it to start with %q", got[i], tc.want[i])
				}
			}
		})
	}
}
