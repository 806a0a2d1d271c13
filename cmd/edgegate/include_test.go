package main_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// TestWatchCRLAndIncludes runs the real binary with watch: true and its
// vhost in an included file: a CRL rewritten in place refuses the client
// it now revokes after one reload (and still serves the other), and a file
// added to the included folder adds its vhost.
func TestWatchCRLAndIncludes(t *testing.T) {
	t.Parallel()
	ca, err := testpki.NewCA("edgegate include test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv, err := ca.Server("app.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := testpki.WritePEM(dir, "server", srv); err != nil {
		t.Fatal(err)
	}
	kept, _ := ca.Client("kept client")
	revoked, _ := ca.Client("client to be revoked")
	writeFile(t, dir, "ca.pem", string(ca.PEM))
	writeCRL := func(revoked ...tls.Certificate) {
		t.Helper()
		var leaves []*x509.Certificate
		for _, c := range revoked {
			leaves = append(leaves, c.Leaf)
		}
		der, err := ca.CRL(time.Now().Add(24*time.Hour), leaves...)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, "ca.crl", string(testpki.CRLPEM(der)))
	}
	writeCRL()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	if err := os.Mkdir(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "conf.d/app.yaml", yamlf(`
vhosts:
  - name: app
    hosts: [app.e2e.test]
    mode: mtls
    tls: {certificates: [{cert: server.crt, key: server.key}]}
    client_auth: {ca: ca.pem, crl: ca.crl}
    upstream: {address: %q}
`, newPlainEcho(t)))
	listen := freeAddr(t)
	cfg := writeFile(t, dir, "edgegate.yaml", yamlf(`
listen: [{address: %q}]
log: {level: info, format: json}
watch: true
include: conf.d/*.yaml
`, listen))
	p := startEdgegate(t, "run", "--config", cfg)
	p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))

	// served reports whether a client gets its line echoed back.
	served := func(cert tls.Certificate) bool {
		t.Helper()
		d := &net.Dialer{Timeout: waitLimit}
		c, err := tls.DialWithDialer(d, "tcp", listen, &tls.Config{ServerName: "app.e2e.test", RootCAs: roots, Certificates: []tls.Certificate{cert}})
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * waitLimit))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return false
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && got == "ping\n"
	}
	if !served(kept) || !served(revoked) {
		t.Fatal("a client no CRL revokes yet was refused")
	}

	writeCRL(revoked)
	p.stderr.waitJSON(t, "the reload for the new CRL", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 2.0
	})
	if served(revoked) {
		t.Fatal("the client the rewritten CRL revokes was served")
	}
	if !served(kept) {
		t.Fatal("the client the CRL does not revoke was refused")
	}
	p.stderr.waitJSON(t, "the refusal logged as revoked", func(r map[string]any) bool {
		return r["outcome"] == "closed_client_cert" && r["reason"] == "revoked"
	})

	writeFile(t, dir, "conf.d/www.yaml", yamlf(`
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:1"}}
`))
	p.stderr.waitJSON(t, "the reload for the added file", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 3.0 && r["vhosts"] == 2.0
	})

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}
