package bench

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// pkiFiles is the throwaway PKI of one harness run: a CA standing in for
// Cloudflare's origin-pull CA, an ECDSA P-256 server certificate for the mtls
// name, and a client certificate from the CA. Every system gets the same
// files.
type pkiFiles struct {
	caFile     string // the CA the systems verify clients against
	serverCert string // server chain, PEM
	serverKey  string // server key, PEM (PKCS #8)
	serverPEM  string // chain and key in one file, as HAProxy's crt wants
	roots      *x509.CertPool
	serverLeaf []byte // DER of the server certificate the clients expect
	client     tls.Certificate
}

func makePKI(dir string) (*pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make PKI folder: %w", err)
	}
	ca, err := testpki.NewCA("edgegate-bench origin-pull CA")
	if err != nil {
		return nil, err
	}
	srv, err := ca.Server(mtlsName)
	if err != nil {
		return nil, err
	}
	cli, err := ca.Client("edgegate-bench client")
	if err != nil {
		return nil, err
	}
	p := &pkiFiles{caFile: filepath.Join(dir, "ca.pem"), client: cli, roots: x509.NewCertPool(), serverLeaf: srv.Certificate[0]}
	p.roots.AddCert(ca.Cert)
	if err := os.WriteFile(p.caFile, ca.PEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA: %w", err)
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
