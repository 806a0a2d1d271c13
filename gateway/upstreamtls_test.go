package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// nginxTLSOrigin is nginx as an origin whose application port speaks TLS
// only, after a PROXY header: it answers with the PROXY source and whether
// edgegate presented a client certificate, and logs both.
const nginxTLSOrigin = `
    log_format edge_tls '$proxy_protocol_addr|$proxy_protocol_port|$ssl_protocol|$ssl_client_verify|$ssl_client_s_dn|$ssl_server_name|$request';
    server {
        listen {{addr0}} ssl proxy_protocol;
        ssl_certificate {{cert}};
        ssl_certificate_key {{key}};
        ssl_client_certificate {{clientca}};
        ssl_verify_client optional;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        access_log {{dir}}/access.log edge_tls;
        location / {
            default_type text/plain;
            return 200 "tls origin $proxy_protocol_addr:$proxy_protocol_port $ssl_client_verify\n";
        }
    }
    server {
        listen {{addr1}};
        access_log off;
        location = /status { stub_status; }
    }
`

// gathered returns the value of the sample of metric name with labels from
// reg (0 and false when there is none).
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestNginxUpstreamTLS puts edgegate's mtls vhosts in front of a real nginx
// whose port takes a PROXY header and then TLS only (listen ssl
// proxy_protocol), as nginx's proxy_ssl_* would reach it (PROXY v1: on an
// ssl listener nginx reads at most 108 bytes of header, less than a v2
// header with the TLS TLVs of an mtls vhost): the header goes
// first in cleartext, then edgegate's TLS handshake (verifying nginx's
// certificate against upstream.tls.ca and presenting a client certificate
// when one is configured), then the client's cleartext. The client's
// address reaches nginx's response and log. A vhost that trusts the wrong
// CA closes its client after the handshake and counts upstream_error.
func TestNginxUpstreamTLS(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	originCA, err := testpki.NewCA("origin CA")
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, err := testpki.NewCA("not the origin's CA")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	originCAFile, wrongCAFile := write("origin-ca.pem", originCA.PEM), write("wrong-ca.pem", wrongCA.PEM)
	srvCert, err := originCA.Server("origin.internal")
	if err != nil {
		t.Fatal(err)
	}
	srvCertFile, srvKeyFile, err := testpki.WritePEM(dir, "origin", srvCert)
	if err != nil {
		t.Fatal(err)
	}
	edgeCert, err := originCA.Client("edgegate to origin")
	if err != nil {
		t.Fatal(err)
	}
	edgeCertFile, edgeKeyFile, err := testpki.WritePEM(dir, "edge", edgeCert)
	if err != nil {
		t.Fatal(err)
	}
	ng := runNginx(t, strings.NewReplacer("{{cert}}", srvCertFile, "{{key}}", srvKeyFile, "{{clientca}}", originCAFile).Replace(nginxTLSOrigin), 2)

	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[3]q}
    upstream:
      address: %[4]q
      proxy_protocol: v1
      tls: {ca: %[5]q, server_name: origin.internal, certificate: %[6]q, key: %[7]q}
  - name: nocert
    hosts: [nocert.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[3]q}
    upstream:
      address: %[4]q
      proxy_protocol: v1
      tls: {ca: %[5]q, server_name: origin.internal}
  - name: wrongca
    hosts: [wrongca.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[3]q}
    upstream:
      address: %[4]q
      proxy_protocol: v1
      tls: {ca: %[8]q, server_name: origin.internal}
`, p.certFile, p.keyFile, p.caFile, ng.addr, originCAFile, edgeCertFile, edgeKeyFile, wrongCAFile))
	gw := s.addr(t, "127.0.0.1:0")
	_, gwPort, _ := net.SplitHostPort(gw)

	get := func(sni, path string) (string, *net.TCPAddr, error) {
		var local *net.TCPAddr
		tr := &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientSourceAddr)}}
				c, err := d.DialContext(ctx, "tcp", gw)
				if err == nil {
					local = c.LocalAddr().(*net.TCPAddr)
				}
				return c, err
			},
		}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(sni, gwPort)+path, nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return "", local, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b), local, err
	}
	logLine := func(path string) []string {
		t.Helper()
		var fields []string
		eventually.Within(t, 10*time.Second, func() error {
			b, _ := os.ReadFile(ng.accessLog)
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Split(l, "|"); len(f) == 7 && f[6] == "GET "+path+" HTTP/1.1" {
					fields = f
					return nil
				}
			}
			return fmt.Errorf("nginx logged no %s:\n%s", path, b)
		})
		return fields
	}

	for _, tc := range []struct{ sni, path, verify, dn string }{
		{"app.example.test", "/with-client-cert", "SUCCESS", "CN=edgegate to origin"},
		{"nocert.example.test", "/without-client-cert", "NONE", ""},
	} {
		got, local, err := get(tc.sni, tc.path)
		if err != nil {
			t.Fatalf("%s: request through edgegate: %v", tc.sni, err)
		}
		client := net.JoinHostPort(clientSourceAddr, strconv.Itoa(local.Port))
		if want := "200 tls origin " + client + " " + tc.verify + "\n"; got != want {
			t.Errorf("%s: got %q; want %q", tc.sni, got, want)
		}
		f := logLine(tc.path)
		if f[0]+":"+f[1] != client || !strings.HasPrefix(f[2], "TLSv1.") || f[3] != tc.verify ||
			!strings.Contains(f[4], tc.dn) || f[5] != "origin.internal" {
			t.Errorf("%s: nginx logged %q; want PROXY source %s, TLS, client verify %s (%q) and SNI origin.internal", tc.sni, f, client, tc.verify, tc.dn)
		}
	}
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeProxied, 1)
	s.waitCount(t, "127.0.0.1:0", "nocert", OutcomeProxied, 1)

	if got, _, err := get("wrongca.example.test", "/wrong-ca"); err == nil {
		t.Fatalf("request through a vhost that does not trust the origin's CA got %q; want the connection closed", got)
	}
	s.waitCount(t, "127.0.0.1:0", "wrongca", OutcomeUpstreamError, 1)
	if v, _ := gathered(t, s.metrics.reg, "edgegate_upstream_tls_failures_total", map[string]string{"vhost": "wrongca", "server": ng.addr}); v != 1 {
		t.Errorf("edgegate_upstream_tls_failures_total{vhost=wrongca} = %v; want 1", v)
	}
	b, _ := os.ReadFile(ng.accessLog)
	if strings.Contains(string(b), "/wrong-ca") {
		t.Errorf("nginx served the request of a vhost that does not trust it:\n%s", b)
	}
}

// TestReloadKeepsPools: through Server.Reload, a vhost whose servers are
// unchanged keeps its pool (a server down stays down, with no new check
// needed), a changed one gets a new pool, the replaced pool's checkers stop
// before Reload returns, and Close stops the rest.
func TestReloadKeepsPools(t *testing.T) {
	const checker = "upstream.(*Pool).checkLoop("
	base := goroutinesIn(checker)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	config := func(level string, servers ...string) string {
		return yamlf(`
listen: [{address: "127.0.0.1:0"}]
log: {level: %s}
vhosts:
  - name: www
    hosts: [www.example.test]
    mode: passthrough
    upstream:
      servers: [%s]
      health_check: {interval: 20ms, timeout: 20ms, fall: 1, rise: 1}
`, level, strings.Join(servers, ", "))
	}
	srv := func(a string) string { return fmt.Sprintf("{address: %q}", a) }
	s := startServerIn(t, dir, config("info", srv(up.address()), srv(dead)))
	reload := func(text string) {
		t.Helper()
		path := filepath.Join(dir, "edgegate.yaml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.ReloadFile(path); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	upOf := func(addr string) float64 {
		v, _ := gathered(t, s.metrics.reg, "edgegate_upstream_server_up", map[string]string{"vhost": "www", "server": addr})
		return v
	}
	eventually.Within(t, 10*time.Second, func() error {
		if upOf(dead) != 0 {
			return fmt.Errorf("%s not marked down yet", dead)
		}
		return nil
	})
	pool := s.state.Load().vhosts["www"].pool
	waitGoroutines := func(want int) {
		t.Helper()
		// A goroutine just started may not show in a stack dump yet, and
		// one that has signalled its end may still show for a moment; a
		// checker that leaks stays, and fails the wait.
		eventually.Within(t, 10*time.Second, func() error {
			if n := goroutinesIn(checker) - base; n != want {
				return fmt.Errorf("%d checkers run; want %d", n, want)
			}
			return nil
		})
	}
	waitGoroutines(2)

	reload(config("debug", srv(up.address()), srv(dead)))
	if s.state.Load().vhosts["www"].pool != pool || upOf(dead) != 0 || pool.Servers()[1].Up() {
		t.Fatal("a reload that kept the servers did not keep the pool and its down server")
	}
	waitGoroutines(2)

	reload(config("debug", srv(up.address())))
	if s.state.Load().vhosts["www"].pool == pool {
		t.Fatal("a reload that changed the servers kept the old pool")
	}
	waitGoroutines(1) // the old pool's two stopped before Reload returned
	if _, ok := gathered(t, s.metrics.reg, "edgegate_upstream_server_up", map[string]string{"server": dead}); ok {
		t.Error("the dropped server's series is still exported")
	}
	s.Close()
	waitGoroutines(0)
}
