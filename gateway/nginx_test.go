package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// needBinary returns the path of an external program a test talks to. When
// it is missing the test is skipped, except in CI (CI=true), where a missing
// peer means the test would silently prove nothing, so it fails.
func needBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	// Debian installs nginx in /usr/sbin, which is not on every user's PATH.
	if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
		return "/usr/sbin/" + name
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (%v); CI must install it", name, err)
	}
	t.Skipf("%s not found (%v); skipping the end-to-end test with it", name, err)
	return ""
}

// clientSourceAddr is the loopback address end-to-end clients connect from.
// It differs from 127.0.0.1, where edgegate dials its upstream from, so an
// upstream that reports it can only have learnt it from the PROXY header.
const clientSourceAddr = "127.0.0.2"

// nginxBody is what nginx answers on every path of its PROXY listener.
const nginxBody = "hello from nginx\n"

// nginxUpstream is a real nginx on loopback, configured as an origin behind
// edgegate (startNginx: a PROXY-protocol listener that takes the client
// address from the header and logs it, and a plain listener with
// stub_status so a test can see how many connections nginx accepted), or
// with a test's own servers (runNginx).
type nginxUpstream struct {
	dir       string
	addr      string   // the PROXY listener, edgegate's upstream
	addrs     []string // every listener, in the order of {{addr0}}, ...
	statusURL string
	accessLog string
	errorLog  string
	exited    chan struct{}
	waitErr   error
}

// nginxConf wraps a test's http servers into a whole nginx configuration:
// a master in the foreground (the test's child) and one worker. Every path
// nginx writes is in the test's temp folder, so it runs as any user.
// (master_process off would be simpler, but nginx 1.22 crashes in that mode
// with inherited sockets.) {{addr0}}, {{addr1}}, ... are the listening
// addresses, {{dir}} the temp folder.
const nginxConf = `{{user}}daemon off;
worker_processes 1;
pid {{dir}}/nginx.pid;
lock_file {{dir}}/nginx.lock;
error_log {{dir}}/error.log info;
events { worker_connections 128; }
http {
    client_body_temp_path {{dir}}/body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;
{{servers}}
}
`

// nginxOrigin is nginx as an origin behind edgegate: a PROXY-protocol
// listener that takes the client address from the header and logs it, and
// a plain listener with stub_status.
const nginxOrigin = `
    log_format edge '$remote_addr|$remote_port|$proxy_protocol_addr|$proxy_protocol_port|$proxy_protocol_server_addr|$proxy_protocol_server_port|$realip_remote_addr|$host|$request|$status';
    server {
        listen {{addr0}} proxy_protocol;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        access_log {{dir}}/access.log edge;
        location / {
            default_type text/plain;
            return 200 "hello from nginx\n";
        }
    }
    server {
        listen {{addr1}};
        access_log off;
        location = /status { stub_status; }
    }
`

// startNginx starts nginx as an origin (nginxOrigin) on two loopback ports
// and stops it when the test ends, whatever the outcome.
func startNginx(t *testing.T) *nginxUpstream {
	t.Helper()
	return runNginx(t, nginxOrigin, 2)
}

// runNginx starts nginx with servers, the http servers of its
// configuration, on listeners loopback ports; the last must serve
// stub_status at /status. The test opens the listening sockets itself and
// hands them to nginx the way nginx hands them to a new binary on upgrade
// (the NGINX environment variable names inherited descriptors), so no port
// can be taken between choosing it and nginx binding it, and a request sent
// before nginx is ready waits in the backlog instead of being refused.
func runNginx(t *testing.T, servers string, listeners int) *nginxUpstream {
	t.Helper()
	bin := needBinary(t, "nginx")
	dir := t.TempDir()
	var files []*os.File
	var addrs []string
	inherited := ""
	repl := []string{"{{dir}}", dir}
	for i := range listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close() // nginx keeps the socket through f's descriptor
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
		addrs = append(addrs, ln.Addr().String())
		inherited += strconv.Itoa(3+i) + ";"
		repl = append(repl, fmt.Sprintf("{{addr%d}}", i), ln.Addr().String())
	}
	n := &nginxUpstream{
		dir:       dir,
		addr:      addrs[0],
		addrs:     addrs,
		statusURL: "http://" + addrs[len(addrs)-1] + "/status",
		accessLog: filepath.Join(dir, "access.log"),
		errorLog:  filepath.Join(dir, "error.log"),
		exited:    make(chan struct{}),
	}
	// As root, the worker would otherwise run as nobody and could not
	// read the temp folder; as anyone else nginx cannot switch users.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	conf := strings.NewReplacer("{{user}}", user, "{{servers}}", servers).Replace(nginxConf)
	conf = strings.NewReplacer(repl...).Replace(conf)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command(bin, "-p", dir, "-c", confFile, "-e", n.errorLog)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.ExtraFiles = files // descriptors 3, 4, ... in nginx
	cmd.Env = append(os.Environ(), "NGINX="+inherited)
	// If the test binary dies, nginx's master goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		// SIGQUIT is nginx's graceful stop; SIGKILL if it does not come.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			n.dumpLogs(t)
		}
	})
	// The first stub_status answer is the signal that nginx took its
	// configuration and serves.
	if _, err := n.status(); err != nil {
		t.Fatalf("nginx does not answer: %v", err)
	}
	return n
}

func (n *nginxUpstream) dumpLogs(t *testing.T) {
	for _, f := range []string{"stderr.log", "error.log", "access.log"} {
		b, _ := os.ReadFile(filepath.Join(n.dir, f))
		t.Logf("nginx %s:\n%s", f, b)
	}
}

// status returns stub_status's count of connections nginx accepted (this
// request's own connection included). It gives up if nginx exits.
func (n *nginxUpstream) status() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() {
		select {
		case <-n.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.statusURL, nil)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		select {
		case <-n.exited:
			return 0, fmt.Errorf("nginx exited (%v): %w", n.waitErr, err)
		default:
			return 0, err
		}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	// "Active connections: 1 \nserver accepts handled requests\n 5 5 7 \n..."
	lines := strings.Split(string(b), "\n")
	if len(lines) < 3 {
		return 0, fmt.Errorf("unexpected stub_status answer %q", b)
	}
	f := strings.Fields(lines[2])
	if len(f) < 1 {
		return 0, fmt.Errorf("unexpected stub_status answer %q", b)
	}
	return strconv.Atoi(f[0])
}

func (n *nginxUpstream) accepts(t *testing.T) int {
	t.Helper()
	a, err := n.status()
	if err != nil {
		t.Fatalf("nginx stub_status: %v", err)
	}
	return a
}

// accessLine is one line of the edge log_format.
type accessLine struct {
	remoteAddr, remotePort string // after real_ip_header proxy_protocol
	ppAddr, ppPort         string // the PROXY header's source
	ppServer               string // the PROXY header's destination, host:port
	realipRemoteAddr       string // the TCP peer nginx saw: edgegate
	host, request, status  string
}

func (n *nginxUpstream) lines(t *testing.T) []accessLine {
	t.Helper()
	b, err := os.ReadFile(n.accessLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []accessLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "|")
		if len(f) != 10 {
			t.Fatalf("nginx access log line %q: %d fields, want 10", l, len(f))
		}
		out = append(out, accessLine{
			remoteAddr: f[0], remotePort: f[1], ppAddr: f[2], ppPort: f[3],
			ppServer: net.JoinHostPort(f[4], f[5]), realipRemoteAddr: f[6],
			host: f[7], request: f[8], status: f[9],
		})
	}
	return out
}

// waitLine waits for the access log line of request ("GET /x HTTP/1.1"):
// nginx writes it just after the response, so the client can be first.
func (n *nginxUpstream) waitLine(t *testing.T, request string) accessLine {
	t.Helper()
	var line accessLine
	eventually.Within(t, 10*time.Second, func() error {
		lines := n.lines(t)
		for _, l := range lines {
			if l.request == request {
				line = l
				return nil
			}
		}
		return fmt.Errorf("nginx logged no %q (%d lines)", request, len(lines))
	})
	return line
}

// probe sends one request straight to the PROXY listener, as edgegate
// would, and waits for its access log line. nginx accepts one listening
// socket's connections in arrival order, so once the probe is logged any
// connection edgegate opened before it has been accepted (and counted by
// stub_status), and any request it carried has been served.
func (n *nginxUpstream) probe(t *testing.T, path string) {
	t.Helper()
	c, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "PROXY TCP4 192.0.2.1 127.0.0.1 1234 443\r\nGET %s HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n", path)
	b, err := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		t.Fatalf("nginx probe got %q, %v", b, err)
	}
	n.waitLine(t, "GET "+path+" HTTP/1.1")
}

// nginxGatewayConfig is edgegate in front of nginx: the same nginx behind
// three mtls vhosts, with PROXY v2 (app), v1 (v1) and a pinned client key.
func nginxGatewayConfig(p *pki, upstream string) string {
	return mtlsConfig(p, "127.0.0.1:0", upstream, fmt.Sprintf(`
  - name: v1
    hosts: [v1.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[3]q}
    upstream: {address: %[4]q, proxy_protocol: v1}
  - name: pinned
    hosts: [pinned.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[1]q, key: %[2]q}]}
    client_auth: {ca: %[3]q, spki_sha256: [%[5]q]}
    upstream: {address: %[4]q, proxy_protocol: v2}
`, p.certFile, p.keyFile, p.caFile, upstream, p.goodPin))
}

// waitRejections waits until edgegate_mtls_rejections_total for vhost and
// reason reaches want; the counter moves just after the client sees the
// close.
func waitRejections(t *testing.T, s *Server, vhost, reason string, want float64) {
	t.Helper()
	eventually.Within(t, 10*time.Second, func() error {
		if got := testutil.ToFloat64(s.metrics.rejections.WithLabelValues(vhost, reason)); got != want {
			return fmt.Errorf("edgegate_mtls_rejections_total{vhost=%q,reason=%q} = %v, want %v", vhost, reason, got, want)
		}
		return nil
	})
}

// vhostOf names the vhost serving a test server name.
var vhostOf = map[string]string{
	"app.example.test":    "app",
	"v1.example.test":     "v1",
	"pinned.example.test": "pinned",
}

// TestNginxMTLS puts edgegate in front of a real nginx that reads the PROXY
// header as an operator would configure it. Clients with a valid
// certificate get nginx's answer, and nginx logs the client's own address
// and port, not edgegate's; every refused client gets no byte after its
// last flight, no TLS alert, and nginx accepts no connection and logs no
// line for it.
func TestNginxMTLS(t *testing.T) {
	p := newPKI(t)
	ng := startNginx(t)
	s := startServer(t, nginxGatewayConfig(p, ng.addr))
	gw := s.addr(t, "127.0.0.1:0")
	_, gwPort, _ := net.SplitHostPort(gw)
	logged := 0
	proxied := map[string]float64{}

	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		vname := strings.ReplaceAll(tls.VersionName(version), " ", "")
		for _, tc := range []struct{ client, sni string }{
			{"valid", "app.example.test"},
			{"valid", "v1.example.test"},
			{"intermediate", "app.example.test"},
			{"pinned", "pinned.example.test"},
		} {
			t.Run(vname+"/"+tc.client+"@"+tc.sni, func(t *testing.T) {
				var local *net.TCPAddr
				tr := &http.Transport{
					DisableKeepAlives: true,
					TLSClientConfig: &tls.Config{
						RootCAs: p.roots, MinVersion: version, MaxVersion: version,
						Certificates: []tls.Certificate{p.clients[tc.client]},
					},
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
				path := "/" + vname + "-" + tc.client + "-" + vhostOf[tc.sni]
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(tc.sni, gwPort)+path, nil)
				resp, err := (&http.Client{Transport: tr}).Do(req)
				if err != nil {
					t.Fatalf("request through edgegate: %v", err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != nginxBody || err != nil {
					t.Fatalf("got %d %q (%v); want 200 %q from nginx", resp.StatusCode, body, err, nginxBody)
				}
				if resp.TLS == nil || resp.TLS.Version != version {
					t.Fatalf("response not over %s: %+v", vname, resp.TLS)
				}

				l := ng.waitLine(t, "GET "+path+" HTTP/1.1")
				logged++
				clientPort := strconv.Itoa(local.Port)
				if l.remoteAddr != clientSourceAddr || l.remotePort != clientPort {
					t.Errorf("nginx $remote_addr:$remote_port = %s:%s; want the client %s", l.remoteAddr, l.remotePort, local)
				}
				if l.ppAddr != clientSourceAddr || l.ppPort != clientPort {
					t.Errorf("nginx PROXY source %s:%s; want the client %s", l.ppAddr, l.ppPort, local)
				}
				if l.ppServer != gw {
					t.Errorf("nginx PROXY destination %s; want edgegate's listener %s", l.ppServer, gw)
				}
				if l.realipRemoteAddr != "127.0.0.1" {
					t.Errorf("nginx $realip_remote_addr = %s; want edgegate at 127.0.0.1", l.realipRemoteAddr)
				}
				if l.host != tc.sni || l.status != "200" {
					t.Errorf("nginx logged host %q status %s; want %q 200", l.host, l.status, tc.sni)
				}
				proxied[vhostOf[tc.sni]]++
				s.waitCount(t, "127.0.0.1:0", vhostOf[tc.sni], OutcomeProxied, proxied[vhostOf[tc.sni]])
			})
		}

		for _, tc := range []struct{ client, sni, reason string }{
			{"none", "app.example.test", "no_certificate"},
			{"self-signed", "app.example.test", "unknown_issuer"},
			{"other-ca", "app.example.test", "unknown_issuer"},
			{"expired", "app.example.test", "expired"},
			{"not-yet-valid", "app.example.test", "not_yet_valid"},
			{"server-auth-only", "app.example.test", "bad_key_usage"},
			{"no-digital-signature", "app.example.test", "bad_key_usage"},
			{"none", "v1.example.test", "no_certificate"},
			{"valid", "pinned.example.test", "pin_mismatch"},
		} {
			t.Run(vname+"/"+tc.client+"@"+tc.sni, func(t *testing.T) {
				vhost := vhostOf[tc.sni]
				cfg := &tls.Config{ServerName: tc.sni, RootCAs: p.roots, MinVersion: version, MaxVersion: version}
				if c, ok := p.clients[tc.client]; ok {
					cfg.Certificates = []tls.Certificate{c}
				}
				lines := len(ng.lines(t))
				accepts := ng.accepts(t)
				rejected := testutil.ToFloat64(s.metrics.rejections.WithLabelValues(vhost, tc.reason))

				c, rc, err := dialTLS(t, gw, cfg)
				expectRefused(t, c, rc, err)
				waitRejections(t, s, vhost, tc.reason, rejected+1)

				probe := "/probe-" + vname + "-" + tc.client + "-" + vhost
				ng.probe(t, probe)
				logged++
				// Since the first status request nginx accepted the probe
				// and the second status request, nothing else: edgegate
				// never dialled it.
				if got := ng.accepts(t); got != accepts+2 {
					t.Errorf("nginx accepted %d connections during a refused handshake; want none", got-accepts-2)
				}
				if got := ng.lines(t)[lines:]; len(got) != 1 || got[0].request != "GET "+probe+" HTTP/1.1" {
					t.Errorf("nginx access log gained %v for a refused client; want only the probe", got)
				}
			})
		}
	}
	if got := len(ng.lines(t)); got != logged {
		t.Fatalf("nginx access log has %d lines; want %d, one per accepted request and probe", got, logged)
	}
}
