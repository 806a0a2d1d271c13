package bench

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// pkiFiles is the throwaway PKI of one harness run. The mtls job verifies
// clients against a CA shaped like Cloudflare's origin-pull CA (RSA-4096,
// SHA-512 signatures, the same subject fields and extensions); the
// ECDSA P-256 test CA of the first benchmarks stays for a variant. The
// server certificate (ECDSA P-256, from the test CA) is the same in every
// variant, so only the client's chain changes between them. Every system
// gets the same files.
type pkiFiles struct {
	caFile     string // the Cloudflare-shaped CA (flavorMTLS)
	testCAFile string // the ECDSA test CA (flavorMTLSTestCA)
	serverCert string // server chain, PEM
	serverKey  string // server key, PEM (PKCS #8)
	serverPEM  string // chain and key in one file, as HAProxy's crt wants
	serverLeaf []byte // DER of the server certificate the clients expect

	// client is the Cloudflare-shaped client: an RSA-2048 leaf the RSA CA
	// issued. clientECDSA is an ECDSA P-256 leaf from the same CA,
	// clientTest the ECDSA leaf of the ECDSA test CA.
	client, clientECDSA, clientTest tls.Certificate
	// hostile is another RSA-2048 leaf of the RSA CA, for the client that
	// defeats the cache; rogue an RSA-2048 leaf signed by a forged CA with
	// the RSA CA's name and key identifier but its own RSA-4096 key, so a
	// verifier spends a full RSA-4096 signature check before refusing it.
	hostile, rogue tls.Certificate
}

// Key sizes and names of the Cloudflare-shaped chain.
const (
	cfCABits     = 4096
	cfClientBits = 2048
)

// cachedRSAKeys holds the RSA-4096 keys of this process: generating one
// takes a second or more, and a harness run (or a test binary running the
// harness several times) needs the same two every time.
var cachedRSAKeys struct {
	sync.Mutex
	keys map[string]*rsa.PrivateKey
}

// rsaKey returns the process's RSA key called name of the given size,
// generating it on first use.
func rsaKey(name string, bits int) (*rsa.PrivateKey, error) {
	cachedRSAKeys.Lock()
	defer cachedRSAKeys.Unlock()
	if k, ok := cachedRSAKeys.keys[name]; ok {
		return k, nil
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate RSA-%d key %s: %w", bits, name, err)
	}
	if cachedRSAKeys.keys == nil {
		cachedRSAKeys.keys = map[string]*rsa.PrivateKey{}
	}
	cachedRSAKeys.keys[name] = k
	return k, nil
}

// cfName is the subject (and issuer) of the Cloudflare-shaped CA: the
// fields of Cloudflare's origin-pull CA, with a common name that says
// what it is.
var cfName = pkix.Name{
	Country:            []string{"US"},
	Organization:       []string{"edgegate-bench"},
	OrganizationalUnit: []string{"Origin Pull"},
	Locality:           []string{"San Francisco"},
	Province:           []string{"California"},
	CommonName:         "origin-pull.edgegate-bench.test",
}

// cfCA makes a self-signed CA shaped like Cloudflare's origin-pull CA:
// RSA-4096 signing with SHA-512, KeyUsage certSign and CRLSign (critical),
// CA:TRUE with pathlen 2 (critical), subject and authority key identifiers.
// skid, when set, is used instead of the key's own identifier (the forged
// CA copies the real one's).
func cfCA(key *rsa.PrivateKey, skid []byte) (*x509.Certificate, error) {
	if skid == nil {
		spki, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return nil, err
		}
		sum := sha1.Sum(spki)
		skid = sum[:]
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               cfName,
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            2,
		SubjectKeyId:          skid,
		AuthorityKeyId:        skid,
		SignatureAlgorithm:    x509.SHA512WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create Cloudflare-shaped CA: %w", err)
	}
	return x509.ParseCertificate(der)
}

// cfLeaf issues a client-auth leaf for key from ca, signed with SHA-512 as
// Cloudflare's CA signs its client certificate.
func cfLeaf(ca *x509.Certificate, caKey crypto.Signer, cn string, key crypto.Signer) (tls.Certificate, error) {
	now := time.Now()
	ku := x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:       serial(),
		Subject:            pkix.Name{Country: []string{"US"}, Organization: []string{"edgegate-bench"}, CommonName: cn},
		NotBefore:          now.Add(-time.Hour),
		NotAfter:           now.Add(365 * 24 * time.Hour),
		KeyUsage:           ku,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		SignatureAlgorithm: x509.SHA512WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue %s: %w", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n.Add(n, big.NewInt(1))
}

func makePKI(dir string) (*pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make PKI folder: %w", err)
	}
	test, err := testpki.NewCA("edgegate-bench ECDSA test CA")
	if err != nil {
		return nil, err
	}
	srv, err := test.Server(mtlsName)
	if err != nil {
		return nil, err
	}
	p := &pkiFiles{caFile: filepath.Join(dir, "ca.pem"), testCAFile: filepath.Join(dir, "test-ca.pem"), serverLeaf: srv.Certificate[0]}
	if p.clientTest, err = test.Client("edgegate-bench ECDSA client"); err != nil {
		return nil, err
	}

	caKey, err := rsaKey("ca", cfCABits)
	if err != nil {
		return nil, err
	}
	rogueKey, err := rsaKey("rogue ca", cfCABits)
	if err != nil {
		return nil, err
	}
	clientKey, err := rsaKey("client", cfClientBits)
	if err != nil {
		return nil, err
	}
	ca, err := cfCA(caKey, nil)
	if err != nil {
		return nil, err
	}
	rogue, err := cfCA(rogueKey, ca.SubjectKeyId)
	if err != nil {
		return nil, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	for _, l := range []struct {
		dst   *tls.Certificate
		ca    *x509.Certificate
		caKey crypto.Signer
		cn    string
		key   crypto.Signer
	}{
		{&p.client, ca, caKey, "edgegate-bench origin-pull client", clientKey},
		{&p.clientECDSA, ca, caKey, "edgegate-bench origin-pull client (ECDSA)", ecKey},
		{&p.hostile, ca, caKey, "edgegate-bench hostile client", clientKey},
		{&p.rogue, rogue, rogueKey, "edgegate-bench forged client", clientKey},
	} {
		if *l.dst, err = cfLeaf(l.ca, l.caKey, l.cn, l.key); err != nil {
			return nil, err
		}
	}

	if err := writeFile(p.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))); err != nil {
		return nil, err
	}
	if err := writeFile(p.testCAFile, string(test.PEM)); err != nil {
		return nil, err
	}
	if p.serverCert, p.serverKey, err = testpki.WritePEM(dir, "server", srv); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(p.serverCert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(p.serverKey)
	if err != nil {
		return nil, err
	}
	p.serverPEM = filepath.Join(dir, "server-with-key.pem")
	if err := os.WriteFile(p.serverPEM, append(certPEM, keyPEM...), 0o600); err != nil {
		return nil, fmt.Errorf("write HAProxy certificate: %w", err)
	}
	return p, nil
}

// junkCerts returns n distinct throwaway self-signed ECDSA certificates
// (DER). The hostile client appends one to its chain on every handshake:
// the chain is new each time, so no cache can answer it, while the leaf
// that decides acceptance stays the same. Building one costs about as much
// as an ECDSA signature, far less than issuing a leaf from an RSA-4096 CA.
func junkCerts(n int) ([][]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	now := time.Now()
	for i := range out {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i) + 1),
			Subject:      pkix.Name{CommonName: fmt.Sprintf("edgegate-bench junk %d", i)},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
		}
		if out[i], err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key); err != nil {
			return nil, fmt.Errorf("junk certificate: %w", err)
		}
	}
	return out, nil
}
