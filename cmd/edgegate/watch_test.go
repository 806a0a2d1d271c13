package main_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// newPlainEcho is an mtls upstream: it reads edgegate's PROXY header, then
// echoes every byte of the cleartext back.
func newPlainEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * waitLimit))
				br := bufio.NewReader(c)
				if _, err := proxyproto.Read(br); err != nil {
					return
				}
				br.WriteTo(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// mtlsClient is a client of the mtls vhost with a valid client certificate.
type mtlsClient struct {
	conn *tls.Conn
	r    *bufio.Reader
}

func dialMTLS(t *testing.T, addr string, roots *x509.CertPool, cert tls.Certificate) *mtlsClient {
	t.Helper()
	d := &net.Dialer{Timeout: waitLimit}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: "app.e2e.test", RootCAs: roots, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatalf("mtls handshake: %v", err)
	}
	c.SetDeadline(time.Now().Add(2 * waitLimit))
	mc := &mtlsClient{conn: c, r: bufio.NewReader(c)}
	// A TLS 1.3 client is done before the server has checked its
	// certificate; one echo proves it was accepted.
	mc.echo(t, "hello")
	return mc
}

func (m *mtlsClient) echo(t *testing.T, line string) {
	t.Helper()
	if _, err := m.conn.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("mtls write: %v", err)
	}
	got, err := m.r.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("mtls echo: %q, %v; want %q", got, err, line)
	}
}

// leaf is the certificate the gateway presented.
func (m *mtlsClient) leaf() []byte { return m.conn.ConnectionState().PeerCertificates[0].Raw }

// TestWatchReloadsCertificates: with watch: true, replacing the server
// certificate and key (the certificate first, the key a moment later, as an
// ACME client does) makes new connections see the new certificate after
// exactly one reload, while a connection opened before keeps working. A
// broken key file is then refused and logged, and the last good
// certificate keeps being served.
func TestWatchReloadsCertificates(t *testing.T) {
	t.Parallel()
	ca, err := testpki.NewCA("edgegate watch test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first, err := ca.Server("app.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := testpki.WritePEM(dir, "server", first)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("origin-pull client")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "ca.pem", string(ca.PEM))
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	listen, metrics := freeAddr(t), freeAddr(t)
	cfg := writeFile(t, dir, "edgegate.yaml", yamlf(`
listen: [{address: %q}]
metrics: {listen: %q}
log: {level: info, format: json}
watch: true
vhosts:
  - name: app
    hosts: [app.e2e.test]
    mode: mtls
    tls:
      certificates: [{cert: server.crt, key: server.key}]
    client_auth: {ca: ca.pem}
    upstream: {address: %q, proxy_protocol: v2}
`, listen, metrics, newPlainEcho(t)))
	p := startEdgegate(t, "run", "--config", cfg)
	p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))

	held := dialMTLS(t, listen, roots, client)
	defer held.conn.Close()
	if !bytes.Equal(held.leaf(), first.Certificate[0]) {
		t.Fatal("the gateway presented a certificate other than the configured one")
	}

	// Renew: new certificate, then, a moment later, its key. Between the
	// two writes the pair does not match; a reload then would be refused.
	second, err := ca.Server("app.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	staging := t.TempDir()
	newCert, newKey, err := testpki.WritePEM(staging, "server", second)
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, newCert, certFile)
	time.Sleep(300 * time.Millisecond) // the gap between the two writes, not a wait for edgegate
	copyFile(t, newKey, keyFile)

	p.stderr.waitJSON(t, "the reload to generation 2", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 2.0
	})
	if ok, refused := reloadRecords(t, p); ok != 1 || refused != 0 {
		t.Errorf("after the renewal the log has %d reloads and %d refusals; want one reload (debounced) and none refused", ok, refused)
	}
	c := dialMTLS(t, listen, roots, client)
	if !bytes.Equal(c.leaf(), second.Certificate[0]) {
		t.Error("a new connection after the reload did not get the renewed certificate")
	}
	c.conn.Close()
	held.echo(t, "still here after the renewal")
	if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 2 {
		t.Errorf("/healthz after the renewal: %d %+v, want generation 2", code, h)
	}

	// A broken key: refused, logged, the renewed certificate stays.
	if err := os.WriteFile(keyFile, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := p.stderr.waitJSON(t, "the refused reload", msgIs("reload refused; keeping the running configuration"))
	if e, _ := rec["err"].(string); !strings.HasPrefix(e, fmt.Sprintf("%s:%d: ", cfg, 10)) || !strings.Contains(e, "private key") {
		t.Errorf("refusal err %q, want %s:10 (the certificates line) and the private key", e, cfg)
	}
	c = dialMTLS(t, listen, roots, client)
	if !bytes.Equal(c.leaf(), second.Certificate[0]) {
		t.Error("after the refused reload a new connection did not get the last good certificate")
	}
	c.conn.Close()
	held.echo(t, "still here after the refusal")
	if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 2 {
		t.Errorf("/healthz after the refused reload: %d %+v, want generation 2", code, h)
	}
	if ok, refused := reloadRecords(t, p); ok != 1 || refused != 1 {
		t.Errorf("the log has %d reloads and %d refusals, want 1 and 1", ok, refused)
	}
	_, page := httpGet(t, "http://"+metrics+"/metrics")
	if v, _ := metricValue(page, "edgegate_config_reload_total", `result="error"`); v != 1 {
		t.Errorf("edgegate_config_reload_total{result=\"error\"} = %v, want 1", v)
	}

	held.conn.Close()
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

// copyFile rewrites dst in place with src's bytes (as an ACME client that
// does not rename would).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if filepath.Clean(src) == filepath.Clean(dst) {
		t.Fatal("test bug: copying a file onto itself")
	}
}
