package clientauth

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// revocations builds a Revocations from DER CRLs checked against cas.
func revocations(t *testing.T, cas []*x509.Certificate, ders ...[]byte) *Revocations {
	t.Helper()
	var r Revocations
	for _, der := range ders {
		ls, err := ParseCRLs(der)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if err := r.Add(l, cas); err != nil {
				t.Fatal(err)
			}
		}
	}
	return &r
}

// TestParseCRLs: DER, PEM with one or several CRLs and openssl's text after
// them parse; anything else is refused with a reason.
func TestParseCRLs(t *testing.T) {
	ca, err := testpki.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ca.CRL(time.Now().Add(time.Hour))
	b, _ := ca.CRL(time.Now().Add(time.Hour))
	for name, tc := range map[string]struct {
		data []byte
		n    int
		err  string
	}{
		"DER":             {a, 1, ""},
		"PEM":             {testpki.CRLPEM(a), 1, ""},
		"two PEM":         {append(testpki.CRLPEM(a), testpki.CRLPEM(b)...), 2, ""},
		"trailing text":   {append(testpki.CRLPEM(a), "Certificate Revocation List (CRL):\n"...), 1, ""},
		"empty":           {nil, 0, "empty file"},
		"garbage":         {[]byte("not a CRL\n"), 0, "not a CRL (DER or PEM)"},
		"certificate PEM": {ca.PEM, 0, `PEM block 1 is "CERTIFICATE", not "X509 CRL"`},
		"truncated PEM":   {testpki.CRLPEM(a)[:60], 0, "PEM block 1 does not decode"},
	} {
		t.Run(name, func(t *testing.T) {
			ls, err := ParseCRLs(tc.data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(ls) != tc.n {
				t.Fatalf("%d CRLs, %v; want %d", len(ls), err, tc.n)
			}
		})
	}
}

// TestRevocationsAdd: a CRL is taken only from a CA it names as issuer and
// whose key signed it.
func TestRevocationsAdd(t *testing.T) {
	p := newClientPKI(t)
	crl, _ := p.other.CRL(time.Now().Add(time.Hour))
	l, _ := x509.ParseRevocationList(crl)
	var r Revocations
	if err := r.Add(l, []*x509.Certificate{p.root.Cert}); err == nil || !strings.Contains(err.Error(), "signed by no CA of client_auth.ca") {
		t.Fatalf("a CRL of a CA not configured: %v", err)
	}
	// Same name, another key: a forgery, or a CA replaced.
	impostor, _ := testpki.NewCA("some other CA")
	if err := r.Add(l, []*x509.Certificate{impostor.Cert}); err == nil || !strings.Contains(err.Error(), "a CA of that name is there") {
		t.Fatalf("a CRL signed by another key of the same name: %v", err)
	}
	if err := r.Add(l, []*x509.Certificate{p.root.Cert, p.other.Cert}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRevoked: a revoked leaf, or a leaf under a revoked
// intermediate, is refused as revoked; the rest of the CA's leaves pass; a
// leaf of another CA with the same serial is not confused with it; a chain
// cached before a CRL revoked it is refused by a Verifier that shares the
// cache and holds the new CRL.
func TestVerifyRevoked(t *testing.T) {
	p := newClientPKI(t)
	now := time.Now()
	roots := x509.NewCertPool()
	roots.AddCert(p.root.Cert)
	cas := []*x509.Certificate{p.root.Cert, p.inter.Cert}
	crl, _ := p.root.CRL(now.Add(time.Hour), p.valid.Leaf)
	rev := revocations(t, cas, crl)

	a := &Verifier{Roots: roots, Revoked: rev, Generation: NewTrustGeneration(), Cache: NewCache(16)}
	if r, err := a.verifyDER(p.valid.Certificate, now); r != RejectRevoked || !strings.Contains(err.Error(), "revoked by the CRL of") {
		t.Fatalf("revoked leaf: %q, %v", r, err)
	}
	if a.Cache.Len() != 0 {
		t.Fatal("a revoked chain was cached")
	}
	if r, err := a.verifyDER(p.viaInter.Certificate, now); r != "" {
		t.Fatalf("a leaf the CRL does not list: %q, %v", r, err)
	}
	other := &Verifier{Roots: roots, Revoked: revocations(t, cas, must(p.root.CRL(now.Add(time.Hour), p.inter.Cert)))}
	if r, err := other.verifyDER(p.viaInter.Certificate, now); r != RejectRevoked || !strings.Contains(err.Error(), "intermediate") {
		t.Fatalf("a leaf under a revoked intermediate: %q, %v", r, err)
	}

	// A chain verified and cached, then a reload brings a CRL that revokes
	// it: the new Verifier shares generation and cache, and refuses it.
	fresh, _ := p.root.Client("fresh")
	before := &Verifier{Roots: roots, Revoked: rev, Generation: NewTrustGeneration(), Cache: NewCache(16)}
	if r, err := before.Verify([]*x509.Certificate{fresh.Leaf}, now); r != "" {
		t.Fatal(r, err)
	}
	if before.Cache.Len() != 1 {
		t.Fatal("the verified chain was not cached")
	}
	after := *before
	after.Revoked = revocations(t, cas, must(p.root.CRL(now.Add(time.Hour), p.valid.Leaf, fresh.Leaf)))
	if r, _ := after.Verify([]*x509.Certificate{fresh.Leaf}, now); r != RejectRevoked {
		t.Fatalf("a cached chain revoked by the new CRL: %q", r)
	}
	if r, _ := after.verifyDER(fresh.Certificate, now); r != RejectRevoked {
		t.Fatalf("a cached chain revoked by the new CRL, DER path: %q", r)
	}
	if r, _ := before.Verify([]*x509.Certificate{fresh.Leaf}, now); r != "" {
		t.Fatalf("the old Verifier (connections in flight) changed its verdict: %q", r)
	}
}

// TestRevokedMatchesIssuer: a serial is revoked only for certificates of
// the CA whose CRL lists it.
func TestRevokedMatchesIssuer(t *testing.T) {
	p := newClientPKI(t)
	rev := revocations(t, []*x509.Certificate{p.root.Cert}, must(p.root.CRL(time.Now().Add(time.Hour), p.valid.Leaf)))
	twin := *p.otherCA.Leaf
	twin.SerialNumber = p.valid.Leaf.SerialNumber
	if rev.Revoked(&twin) {
		t.Fatal("a certificate of another CA with a revoked serial counts as revoked")
	}
	if !rev.Revoked(p.valid.Leaf) || rev.Revoked(p.expired.Leaf) {
		t.Fatal("Revoked does not follow the CRL")
	}
	if (*Revocations)(nil).Revoked(p.valid.Leaf) {
		t.Fatal("no CRL revokes")
	}
}

// TestExpiredCRL: Expired names the CRLs past their next update.
func TestExpiredCRL(t *testing.T) {
	p := newClientPKI(t)
	now := time.Now()
	rev := revocations(t, []*x509.Certificate{p.root.Cert},
		must(p.root.CRL(now.Add(time.Hour))), must(p.root.CRL(now.Add(-time.Minute))))
	if got := rev.Expired(now); len(got) != 1 || !got[0].NextUpdate.Before(now) {
		t.Fatalf("expired CRLs: %v", got)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
