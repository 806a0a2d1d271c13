package clientauth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// clientPKI is one trust anchor with clients of every kind the mtls path must
// accept or refuse.
type clientPKI struct {
	root, other, inter *testpki.CA
	valid, viaInter    tls.Certificate
	selfSigned         tls.Certificate
	otherCA            tls.Certificate
	expired, future    tls.Certificate
	serverOnly         tls.Certificate
	noDigitalSig       tls.Certificate
}

func newClientPKI(t testing.TB) *clientPKI {
	t.Helper()
	must := func(c tls.Certificate, err error) tls.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var p clientPKI
	var err error
	if p.root, err = testpki.NewCA("test origin-pull CA"); err != nil {
		t.Fatal(err)
	}
	if p.other, err = testpki.NewCA("some other CA"); err != nil {
		t.Fatal(err)
	}
	if p.inter, err = p.root.Intermediate("test intermediate"); err != nil {
		t.Fatal(err)
	}
	p.valid = must(p.root.Client("origin-pull"))
	p.viaInter = must(p.inter.Client("via-intermediate"))
	p.selfSigned = must(testpki.SelfSigned("self"))
	p.otherCA = must(p.other.Client("other"))
	p.expired = must(p.root.Client("expired", testpki.Expired()))
	p.future = must(p.root.Client("future", testpki.NotYetValid()))
	p.serverOnly = must(p.root.Client("server-only", testpki.ServerAuthOnly()))
	// KeyUsage present, digitalSignature missing: the key may not sign a
	// CertificateVerify (OpenSSL refuses such a client certificate).
	p.noDigitalSig = must(p.root.Client("key-agreement-only", testpki.KeyUsage(x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement)))
	return &p
}

func (p *clientPKI) auth(pins ...[32]byte) *Verifier {
	roots := x509.NewCertPool()
	roots.AddCert(p.root.Cert)
	return &Verifier{Roots: roots, Pins: pins, Generation: NewTrustGeneration()}
}

func pinOf(c tls.Certificate) [32]byte {
	return sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
}

func TestClientAuthVerify(t *testing.T) {
	p := newClientPKI(t)
	now := time.Now()
	tests := []struct {
		name  string
		chain [][]byte
		pins  [][32]byte
		want  Reason
	}{
		{name: "valid", chain: p.valid.Certificate},
		{name: "valid via intermediate", chain: p.viaInter.Certificate},
		{name: "intermediate missing", chain: p.viaInter.Certificate[:1], want: RejectUnknownIssuer},
		{name: "self-signed", chain: p.selfSigned.Certificate, want: RejectUnknownIssuer},
		{name: "other CA", chain: p.otherCA.Certificate, want: RejectUnknownIssuer},
		{name: "other CA leaf with our root appended", chain: append(p.otherCA.Certificate[:1:1], p.root.Cert.Raw), want: RejectUnknownIssuer},
		{name: "expired", chain: p.expired.Certificate, want: RejectExpired},
		{name: "not yet valid", chain: p.future.Certificate, want: RejectNotYetValid},
		{name: "server auth only", chain: p.serverOnly.Certificate, want: RejectBadKeyUsage},
		{name: "key usage without digitalSignature", chain: p.noDigitalSig.Certificate, want: RejectBadKeyUsage},
		{name: "pin match", chain: p.valid.Certificate, pins: [][32]byte{pinOf(p.otherCA), pinOf(p.valid)}},
		{name: "pin match via intermediate", chain: p.viaInter.Certificate, pins: [][32]byte{pinOf(p.viaInter)}},
		{name: "pin mismatch", chain: p.valid.Certificate, pins: [][32]byte{pinOf(p.viaInter)}, want: RejectPinMismatch},
		{name: "pinned but other CA", chain: p.otherCA.Certificate, pins: [][32]byte{pinOf(p.otherCA)}, want: RejectUnknownIssuer},
		{name: "pinned but expired", chain: p.expired.Certificate, pins: [][32]byte{pinOf(p.expired)}, want: RejectExpired},
		{name: "empty chain", chain: nil, want: RejectNoCertificate},
		{name: "garbage", chain: [][]byte{[]byte("not a certificate")}, want: RejectBadCertificate},
		{name: "garbage after valid leaf", chain: [][]byte{p.valid.Certificate[0], {0x30, 0x03, 0x02, 0x01}}, want: RejectBadCertificate},
		{name: "chain too long", chain: repeat(p.valid.Certificate[0], maxClientChain+1), want: RejectBadCertificate},
	}
	for _, tc := range tests {
		for _, cached := range []bool{false, true} {
			name := tc.name
			if cached {
				name += "/cached"
			}
			t.Run(name, func(t *testing.T) {
				a := p.auth(tc.pins...)
				if cached {
					a.Cache = NewCache(16)
				}
				// Twice: the second call may be answered from the cache
				// and must give the same verdict.
				for i := range 2 {
					got, err := a.verifyDER(tc.chain, now)
					if got != tc.want {
						t.Fatalf("call %d: reason %q (err %v), want %q", i, got, err, tc.want)
					}
					if (err == nil) != (tc.want == "") {
						t.Fatalf("call %d: err = %v with reason %q", i, err, got)
					}
				}
				if cached {
					wantLen := 0
					if tc.want == "" {
						wantLen = 1
					}
					if n := a.Cache.Len(); n != wantLen {
						t.Fatalf("cache holds %d entries, want %d", n, wantLen)
					}
				}
			})
		}
	}
}

func repeat(b []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func TestClientAuthVerifyParsed(t *testing.T) {
	p := newClientPKI(t)
	a := p.auth()
	inter, err := x509.ParseCertificate(p.viaInter.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	if r, err := a.Verify([]*x509.Certificate{p.viaInter.Leaf, inter}, time.Now()); r != "" {
		t.Fatalf("Verify: %q %v", r, err)
	}
	if r, _ := a.Verify(nil, time.Now()); r != RejectNoCertificate {
		t.Fatalf("Verify(nil) = %q", r)
	}
	if r, _ := a.Verify([]*x509.Certificate{p.serverOnly.Leaf}, time.Now()); r != RejectBadKeyUsage {
		t.Fatalf("Verify(server only) = %q", r)
	}
	if r, _ := a.Verify([]*x509.Certificate{nil}, time.Now()); r != RejectBadCertificate {
		t.Fatalf("Verify(nil cert) = %q", r)
	}
	if r, _ := (&Verifier{}).verifyDER(p.valid.Certificate, time.Now()); r != RejectUnknownIssuer {
		t.Fatalf("zero Verifier accepted a chain: %q", r)
	}
}

// TestChainCache checks what the cache may and may not answer. A Verifier
// whose Roots trust nothing but which shares the Generation of a trusting one
// reveals whether an answer came from the cache.
func TestChainCache(t *testing.T) {
	p := newClientPKI(t)
	now := time.Now()
	cache := NewCache(4)
	good := p.auth()
	good.Cache = cache
	if r, err := good.verifyDER(p.viaInter.Certificate, now); r != "" {
		t.Fatalf("verify: %q %v", r, err)
	}
	blind := &Verifier{Roots: x509.NewCertPool(), Generation: good.Generation, Cache: cache}

	t.Run("hit", func(t *testing.T) {
		if r, err := blind.verifyDER(p.viaInter.Certificate, now); r != "" {
			t.Fatalf("same chain, same generation not served from cache: %q %v", r, err)
		}
	})
	t.Run("hit through Verify", func(t *testing.T) {
		inter, _ := x509.ParseCertificate(p.viaInter.Certificate[1])
		if r, err := blind.Verify([]*x509.Certificate{p.viaInter.Leaf, inter}, now); r != "" {
			t.Fatalf("parsed chain missed the cache: %q %v", r, err)
		}
	})
	t.Run("cached leaf with different extra certificate", func(t *testing.T) {
		chain := [][]byte{p.viaInter.Certificate[0], p.valid.Certificate[0]}
		if r, _ := blind.verifyDER(chain, now); r == "" {
			t.Fatal("changed chain served from cache")
		}
		if r, _ := blind.verifyDER(p.viaInter.Certificate[:1], now); r == "" {
			t.Fatal("leaf alone served from cache")
		}
		extra := append(append([][]byte{}, p.viaInter.Certificate...), p.selfSigned.Certificate[0])
		if r, _ := blind.verifyDER(extra, now); r == "" {
			t.Fatal("chain with appended certificate served from cache")
		}
	})
	t.Run("other generation", func(t *testing.T) {
		other := &Verifier{Roots: x509.NewCertPool(), Generation: NewTrustGeneration(), Cache: cache}
		if r, _ := other.verifyDER(p.viaInter.Certificate, now); r != RejectUnknownIssuer {
			t.Fatalf("new generation got %q, want unknown_issuer", r)
		}
	})
	t.Run("pins change with generation", func(t *testing.T) {
		pinned := p.auth(pinOf(p.valid))
		pinned.Cache = cache
		if r, _ := pinned.verifyDER(p.viaInter.Certificate, now); r != RejectPinMismatch {
			t.Fatalf("pinned vhost got %q, want pin_mismatch", r)
		}
	})
	t.Run("after expiry", func(t *testing.T) {
		later := p.viaInter.Leaf.NotAfter.Add(time.Second)
		if r, _ := blind.verifyDER(p.viaInter.Certificate, later); r == "" {
			t.Fatal("cached chain accepted after its leaf expired")
		}
		if r, _ := good.verifyDER(p.viaInter.Certificate, later); r != RejectExpired {
			t.Fatalf("after expiry got %q, want expired", r)
		}
		if cache.Len() != 0 {
			t.Fatalf("expired entry still cached (%d entries)", cache.Len())
		}
	})
	t.Run("before validity", func(t *testing.T) {
		if r, _ := good.verifyDER(p.viaInter.Certificate, now); r != "" {
			t.Fatal(r)
		}
		earlier := p.viaInter.Leaf.NotBefore.Add(-time.Second)
		if r, _ := good.verifyDER(p.viaInter.Certificate, earlier); r != RejectNotYetValid {
			t.Fatalf("before NotBefore got %q, want not_yet_valid", r)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		small := NewCache(2)
		a := p.auth()
		a.Cache = small
		for i := range 5 {
			c, err := p.root.Client("bounded")
			if err != nil {
				t.Fatal(err)
			}
			if r, err := a.verifyDER(c.Certificate, now); r != "" {
				t.Fatalf("client %d: %q %v", i, r, err)
			}
		}
		if small.Len() != 2 {
			t.Fatalf("cache of size 2 holds %d", small.Len())
		}
	})
}

func TestChainWindow(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: base, NotAfter: base.Add(90 * 24 * time.Hour)}
	inter := &x509.Certificate{NotBefore: base.Add(24 * time.Hour), NotAfter: base.Add(30 * 24 * time.Hour)}
	root := &x509.Certificate{NotBefore: base.Add(-time.Hour), NotAfter: base.Add(365 * 24 * time.Hour)}
	w := chainWindow([]*x509.Certificate{leaf, inter, root})
	if !w.notBefore.Equal(inter.NotBefore) || !w.notAfter.Equal(inter.NotAfter) {
		t.Fatalf("window %v..%v, want the intermediate's %v..%v", w.notBefore, w.notAfter, inter.NotBefore, inter.NotAfter)
	}
}

func TestChainKeyUnambiguous(t *testing.T) {
	// Moving a byte between two certificates must change the key.
	a := chainKey([][]byte{[]byte("ab"), []byte("c")}, 1)
	b := chainKey([][]byte{[]byte("a"), []byte("bc")}, 1)
	c := chainKey([][]byte{[]byte("abc")}, 1)
	d := chainKey([][]byte{[]byte("ab"), []byte("c")}, 2)
	if a == b || a == c || b == c || a == d {
		t.Fatal("chain keys collide")
	}
}

func TestParsePin(t *testing.T) {
	sum := sha256.Sum256([]byte("spki"))
	hexLower := hex.EncodeToString(sum[:])
	var colon []string
	for i := 0; i < len(hexLower); i += 2 {
		colon = append(colon, strings.ToUpper(hexLower[i:i+2]))
	}
	good := map[string]string{
		"hex":            hexLower,
		"hex upper":      strings.ToUpper(hexLower),
		"hex colons":     strings.Join(colon, ":"),
		"base64 std":     base64.StdEncoding.EncodeToString(sum[:]),
		"base64 raw":     base64.RawStdEncoding.EncodeToString(sum[:]),
		"base64 url":     base64.URLEncoding.EncodeToString(sum[:]),
		"base64 raw url": base64.RawURLEncoding.EncodeToString(sum[:]),
		"spaces":         "  " + hexLower + "\n",
	}
	for name, s := range good {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePin(s)
			if err != nil {
				t.Fatal(err)
			}
			if got != sum {
				t.Fatalf("ParsePin(%q) = %x, want %x", s, got, sum)
			}
		})
	}
	bad := map[string]string{
		"empty":          "",
		"short hex":      hexLower[:62],
		"long hex":       hexLower + "00",
		"non-hex":        "zz" + hexLower[2:],
		"bad colons":     strings.Join(colon[:31], ":") + ":" + colon[31] + ":",
		"odd colon":      hexLower[:3] + ":" + hexLower[3:],
		"sha1 base64":    base64.StdEncoding.EncodeToString(sum[:20]),
		"base64 garbage": "!!!!" + base64.StdEncoding.EncodeToString(sum[:])[4:],
	}
	for name, s := range bad {
		t.Run("bad "+name, func(t *testing.T) {
			if got, err := ParsePin(s); err == nil {
				t.Fatalf("ParsePin(%q) = %x, want error", s, got)
			}
		})
	}
}

func FuzzParsePin(f *testing.F) {
	f.Add("9A:1A:C2:B4:BE:15:F9:F2:7E:EE:20:A7:34:CB:A4:E9:89:8F:61:00:1B:3B:D7:C8:4B:69:B5:6A:3E:25:A2:B9")
	f.Add("mhrCtL4V+fJ+7iCnNMuk6YmPYQAbO9fIS2m1aj4lork=")
	f.Fuzz(func(t *testing.T, s string) {
		pin, err := ParsePin(s)
		if err != nil {
			return
		}
		// Whatever was accepted must denote the same digest as its hex form.
		again, err := ParsePin(hex.EncodeToString(pin[:]))
		if err != nil || again != pin {
			t.Fatalf("round trip of %q failed", s)
		}
	})
}

func FuzzClientAuthVerify(f *testing.F) {
	p := newClientPKI(f)
	f.Add(p.valid.Certificate[0], []byte{})
	f.Add(p.viaInter.Certificate[0], p.viaInter.Certificate[1])
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, []byte{})
	a := p.auth()
	a.Cache = NewCache(64)
	now := time.Now()
	f.Fuzz(func(t *testing.T, leaf, extra []byte) {
		chain := [][]byte{leaf}
		if len(extra) > 0 {
			chain = append(chain, extra)
		}
		r, err := a.verifyDER(chain, now)
		if (r == "") != (err == nil) {
			t.Fatalf("reason %q with err %v", r, err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	p := newClientPKI(b)
	now := time.Now()
	chain := p.valid.Certificate
	for _, tc := range []struct {
		name  string
		cache *Cache
	}{
		{"cache", NewCache(1024)},
		{"nocache", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a := p.auth()
			a.Cache = tc.cache
			b.ReportAllocs()
			for b.Loop() {
				if r, err := a.verifyDER(chain, now); r != "" {
					b.Fatal(r, err)
				}
			}
		})
	}
}
