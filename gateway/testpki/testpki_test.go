package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"
)

func verifyClient(t *testing.T, root *CA, c tls.Certificate, now time.Time) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("parse chain cert: %v", err)
		}
		inter.AddCert(ic)
	}
	_, err := c.Leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err
}

func TestClientCertificates(t *testing.T) {
	ca, err := NewCA("test origin-pull CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name    string
		issuer  *CA
		opts    []ClientOption
		reason  x509.InvalidReason // -1: valid
		unknown bool
	}{
		{name: "valid", issuer: ca, reason: -1},
		{name: "expired", issuer: ca, opts: []ClientOption{Expired()}, reason: x509.Expired},
		{name: "not yet valid", issuer: ca, opts: []ClientOption{NotYetValid()}, reason: x509.Expired},
		{name: "server auth only", issuer: ca, opts: []ClientOption{ServerAuthOnly()}, reason: x509.IncompatibleUsage},
		{name: "rsa key", issuer: ca, opts: []ClientOption{RSAKey(2048)}, reason: -1},
		{name: "other CA", issuer: other, unknown: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.issuer.Client("client-"+tc.name, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Leaf == nil || !bytes.Equal(c.Leaf.Raw, c.Certificate[0]) {
				t.Fatal("Leaf not set to the first certificate of the chain")
			}
			if got := c.Leaf.Subject.CommonName; got != "client-"+tc.name {
				t.Errorf("CN = %q", got)
			}
			err = verifyClient(t, ca, c, now)
			var inv x509.CertificateInvalidError
			var ua x509.UnknownAuthorityError
			switch {
			case tc.unknown:
				if !errors.As(err, &ua) {
					t.Fatalf("verify error = %v, want unknown authority", err)
				}
			case tc.reason < 0:
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
			default:
				if !errors.As(err, &inv) || inv.Reason != tc.reason {
					t.Fatalf("verify error = %v, want reason %d", err, tc.reason)
				}
			}
		})
	}
}

func TestNotYetValidIsInFuture(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Client("future", NotYetValid())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotBefore.After(time.Now()) {
		t.Fatalf("NotBefore %v is not in the future", c.Leaf.NotBefore)
	}
	e, err := ca.Client("past", Expired())
	if err != nil {
		t.Fatal(err)
	}
	if !e.Leaf.NotAfter.Before(time.Now()) {
		t.Fatalf("NotAfter %v is not in the past", e.Leaf.NotAfter)
	}
}

func TestIntermediateChain(t *testing.T) {
	root, err := NewCA("root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("intermediate")
	if err != nil {
		t.Fatal(err)
	}
	c, err := inter.Client("leaf")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || !bytes.Equal(c.Certificate[1], inter.Cert.Raw) {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(c.Certificate))
	}
	if err := verifyClient(t, root, c, time.Now()); err != nil {
		t.Fatalf("verify via intermediate: %v", err)
	}
	// Without the intermediate the leaf must not verify: proves the chain
	// really runs through it.
	c.Certificate = c.Certificate[:1]
	if err := verifyClient(t, root, c, time.Now()); err == nil {
		t.Fatal("leaf verified without its intermediate")
	}
	// A second level carries both intermediates, nearest first.
	inter2, err := inter.Intermediate("intermediate 2")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := inter2.Client("leaf 2")
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.Certificate) != 3 || !bytes.Equal(c2.Certificate[1], inter2.Cert.Raw) || !bytes.Equal(c2.Certificate[2], inter.Cert.Raw) {
		t.Fatal("two-level chain is not leaf, intermediate 2, intermediate")
	}
	if err := verifyClient(t, root, c2, time.Now()); err != nil {
		t.Fatalf("verify via two intermediates: %v", err)
	}
}

func TestServerCertificates(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ca.Server("app.example.com", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ec.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("Server key is %T, want ECDSA", ec.PrivateKey)
	}
	r, err := ca.ServerRSA("app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := r.PrivateKey.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("ServerRSA key is %T, want RSA 2048", r.PrivateKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, host := range []string{"app.example.com", "127.0.0.1"} {
		if _, err := ec.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("verify server cert for %s: %v", host, err)
		}
	}
	if _, err := ec.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate verified for client auth")
	}
}

// TestHandshake proves the certificates work in a real mutual TLS handshake
// over loopback, not only in x509.Verify.
func TestHandshake(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("client")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		ServerName:   "app.example.com",
		RootCAs:      pool,
		Certificates: []tls.Certificate{cli},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// TLS 1.3 sends the client certificate after the client's handshake
	// returns; a read waits for the server to finish.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if cn := <-got; cn != "client" {
		t.Fatalf("server saw %q, want client CN", cn)
	}
}

func TestSelfSigned(t *testing.T) {
	c, err := SelfSigned("scanner")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Leaf.CheckSignature(c.Leaf.SignatureAlgorithm, c.Leaf.RawTBSCertificate, c.Leaf.Signature); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}
	if len(c.Certificate) != 1 {
		t.Fatalf("chain length %d", len(c.Certificate))
	}
}

func TestWritePEM(t *testing.T) {
	root, err := NewCA("root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.Intermediate("inter")
	if err != nil {
		t.Fatal(err)
	}
	c, err := inter.Client("client")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := WritePEM(dir, "client", c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("load written pair: %v", err)
	}
	if len(back.Certificate) != 2 || !bytes.Equal(back.Certificate[1], inter.Cert.Raw) {
		t.Fatal("written chain lost the intermediate")
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, _, err := WritePEM(dir, "empty", tls.Certificate{}); err == nil {
		t.Error("WritePEM accepted an empty certificate")
	}
}

func TestSPKISHA256(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ca.Client("a")
	b, _ := ca.Client("b")
	want := sha256.Sum256(a.Leaf.RawSubjectPublicKeyInfo)
	if got := SPKISHA256(a.Leaf); !bytes.Equal(got, want[:]) {
		t.Fatalf("SPKISHA256 = %x, want %x", got, want)
	}
	if bytes.Equal(SPKISHA256(a.Leaf), SPKISHA256(b.Leaf)) {
		t.Fatal("two fresh keys share a pin")
	}
}

// TestCRL: a CRL lists the serials revoked, verifies against its CA and no
// other, numbers increase, and a next update in the past makes it expired.
func TestCRL(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ca.Client("a")
	b, _ := ca.Client("b")
	der, err := ca.CRL(time.Now().Add(time.Hour), a.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL does not verify against its CA: %v", err)
	}
	if l.CheckSignatureFrom(other.Cert) == nil {
		t.Fatal("CRL verifies against another CA")
	}
	if len(l.RevokedCertificateEntries) != 1 || l.RevokedCertificateEntries[0].SerialNumber.Cmp(a.Leaf.SerialNumber) != 0 ||
		l.RevokedCertificateEntries[0].SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Fatalf("CRL revokes %v; want a's serial only", l.RevokedCertificateEntries)
	}
	expired, err := ca.CRL(time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e, err := x509.ParseRevocationList(expired)
	if err != nil {
		t.Fatal(err)
	}
	if !e.NextUpdate.Before(time.Now()) || !e.ThisUpdate.Before(e.NextUpdate) || e.Number.Cmp(l.Number) <= 0 {
		t.Fatalf("expired CRL: this %v next %v number %v (previous %v)", e.ThisUpdate, e.NextUpdate, e.Number, l.Number)
	}
	if blk, _ := pem.Decode(CRLPEM(der)); blk == nil || blk.Type != "X509 CRL" || !bytes.Equal(blk.Bytes, der) {
		t.Fatal("CRLPEM does not wrap the DER as an X509 CRL block")
	}
}
