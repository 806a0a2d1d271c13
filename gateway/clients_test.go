package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// proxyHTTPUpstream is an HTTP origin that requires a PROXY header, as
// nginx with `listen ... proxy_protocol` does, and answers with the client
// address the header gave it. It records every connection it accepts.
type proxyHTTPUpstream struct {
	addr string

	mu    sync.Mutex
	peers []string // TCP peers in accept order (edgegate, or a test's probe)
}

// recordingListener notes each accepted connection's peer before the PROXY
// header is read.
type recordingListener struct {
	net.Listener
	u *proxyHTTPUpstream
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.u.mu.Lock()
		l.u.peers = append(l.u.peers, c.RemoteAddr().String())
		l.u.mu.Unlock()
	}
	return c, err
}

func newProxyHTTPUpstream(t *testing.T) *proxyHTTPUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &proxyHTTPUpstream{addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from upstream\nclient %s\n", r.RemoteAddr)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // the probes send no header
	}
	go srv.Serve(&proxyproto.Listener{
		Listener:          recordingListener{Listener: ln, u: u},
		ReadHeaderTimeout: 10 * time.Second,
	})
	t.Cleanup(func() { srv.Close() })
	return u
}

func (u *proxyHTTPUpstream) accepted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.peers)
}

// probe connects to the upstream directly and waits until it is accepted.
// One listening socket accepts in arrival order, so once the probe is in,
// every connection edgegate opened before it has been counted too.
func (u *proxyHTTPUpstream) probe(t *testing.T) {
	t.Helper()
	c, err := net.Dial("tcp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	me := c.LocalAddr().String()
	eventually.Within(t, 10*time.Second, func() error {
		u.mu.Lock()
		defer u.mu.Unlock()
		if !slices.Contains(u.peers, me) {
			return fmt.Errorf("upstream did not accept the probe connection from %s (accepted %d others)", me, len(u.peers))
		}
		return nil
	})
}

// clientCase is one row of the client certificate matrix run with curl
// and openssl: which certificate the client presents (none: no flag) to
// which vhost, and the refusal reason edgegate must count ("" for success).
type clientCase struct {
	client, sni, reason string
}

var clientMatrix = []clientCase{
	{"valid", "app.example.test", ""},
	{"intermediate", "app.example.test", ""},
	{"pinned", "pinned.example.test", ""},
	{"none", "app.example.test", "no_certificate"},
	{"self-signed", "app.example.test", "unknown_issuer"},
	{"other-ca", "app.example.test", "unknown_issuer"},
	{"expired", "app.example.test", "expired"},
	{"not-yet-valid", "app.example.test", "not_yet_valid"},
	{"server-auth-only", "app.example.test", "bad_key_usage"},
	{"no-digital-signature", "app.example.test", "bad_key_usage"},
	{"valid", "pinned.example.test", "pin_mismatch"},
}

// clientsFixture is edgegate (an mtls vhost and a pinned one) in front of a
// PROXY-reading HTTP origin, with every client certificate written as PEM
// files for the command-line clients.
type clientsFixture struct {
	p        *pki
	s        *Server
	up       *proxyHTTPUpstream
	port     string
	certs    map[string][2]string // client name: cert file, key file
	vhostFor map[string]string
}

func newClientsFixture(t *testing.T) *clientsFixture {
	t.Helper()
	p := newPKI(t)
	up := newProxyHTTPUpstream(t)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.addr, fmt.Sprintf(`
  - name: pinned
    hosts: [pinned.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q, spki_sha256: [%q]}
    upstream: {address: %q, proxy_protocol: v2}
`, p.certFile, p.keyFile, p.caFile, p.goodPin, up.addr)))
	_, port, _ := net.SplitHostPort(s.addr(t, "127.0.0.1:0"))
	f := &clientsFixture{p: p, s: s, up: up, port: port, certs: map[string][2]string{},
		vhostFor: map[string]string{"app.example.test": "app", "pinned.example.test": "pinned"}}
	for name, c := range p.clients {
		cert, key, err := testpki.WritePEM(p.dir, "client-"+name, c)
		if err != nil {
			t.Fatal(err)
		}
		f.certs[name] = [2]string{cert, key}
	}
	return f
}

// refusal runs one refused client and checks what edgegate did: counted
// the reason once, and never dialled the upstream.
func (f *clientsFixture) refusal(t *testing.T, tc clientCase, run func()) {
	t.Helper()
	vhost := f.vhostFor[tc.sni]
	before := f.up.accepted()
	rejected := testutil.ToFloat64(f.s.metrics.rejections.WithLabelValues(vhost, tc.reason))
	run()
	waitRejections(t, f.s, vhost, tc.reason, rejected+1)
	f.up.probe(t)
	if n := f.up.accepted() - before - 1; n != 0 {
		t.Errorf("upstream accepted %d connections for a refused client; want none", n)
	}
}

// runTool runs a client command with a deadline, feeding it stdin, and
// returns its stdout, stderr and exit code.
func runTool(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within 20s\nstdout:\n%s\nstderr:\n%s", name, out.String(), errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", name, err)
	}
	return out.String(), errb.String(), code
}

// curlTrailer follows the body on curl's stdout: the HTTP status (000 when
// no response came) and curl's own source port.
var curlTrailer = regexp.MustCompile(`\n--curl-- (\d{3}) (\d+)$`)

// TestCurlMTLS runs the client certificate matrix with curl at TLS 1.2 and
// 1.3: a valid certificate gets the origin's answer, which names curl's own
// source port (from the PROXY header); every refused one gets no HTTP
// status, and curl reports the connection ended, not a TLS alert.
func TestCurlMTLS(t *testing.T) {
	curl := needBinary(t, "curl")
	f := newClientsFixture(t)
	for _, version := range []struct {
		name  string
		flags []string
	}{
		{"TLS1.2", []string{"--tlsv1.2", "--tls-max", "1.2"}},
		{"TLS1.3", []string{"--tlsv1.3"}},
	} {
		for _, tc := range clientMatrix {
			t.Run(version.name+"/"+tc.client+"@"+tc.sni, func(t *testing.T) {
				path := "/" + version.name + "-" + tc.client
				args := append([]string{
					"-sS", "--max-time", "15", "--cacert", f.p.caFile,
					"--resolve", tc.sni + ":" + f.port + ":127.0.0.1", "--interface", clientSourceAddr,
					"-o", "-", "-w", "\n--curl-- %{http_code} %{local_port}",
				}, version.flags...)
				if files, ok := f.certs[tc.client]; ok {
					args = append(args, "--cert", files[0], "--key", files[1])
				}
				args = append(args, "https://"+tc.sni+":"+f.port+path)
				run := func() (body, status, localPort, stderr string, code int) {
					stdout, stderr, code := runTool(t, "", curl, args...)
					m := curlTrailer.FindStringSubmatchIndex(stdout)
					if m == nil {
						t.Fatalf("curl stdout lacks the -w trailer: %q (stderr %q)", stdout, stderr)
					}
					return stdout[:m[0]], stdout[m[2]:m[3]], stdout[m[4]:m[5]], stderr, code
				}
				if tc.reason == "" {
					body, status, localPort, stderr, code := run()
					if code != 0 || status != "200" {
						t.Fatalf("curl exit %d, status %s, stderr %q; want 200", code, status, stderr)
					}
					if want := "hello from upstream\nclient " + clientSourceAddr + ":" + localPort + "\n"; body != want {
						t.Fatalf("curl got %q; want %q (the origin names curl's own port)", body, want)
					}
					return
				}
				f.refusal(t, tc, func() {
					body, status, _, stderr, code := run()
					t.Logf("curl exit %d: %s", code, strings.TrimSpace(stderr))
					if status != "000" || body != "" {
						t.Errorf("curl got status %s, body %q; want no HTTP response", status, body)
					}
					if strings.Contains(strings.ToLower(stderr), "alert") {
						t.Errorf("curl reports a TLS alert: %q", stderr)
					}
					// TLS 1.2: the server's Finished never comes, OpenSSL
					// sees the stream end mid-handshake (35, SSL_ERROR_SYSCALL).
					// TLS 1.3: curl's handshake completed and it sent the
					// request; the answer is end-of-stream (52, or 56), not a
					// reset (55): the gateway drops the queued request before
					// it closes, so the kernel has no reason to send RST.
					want := map[string][]int{"TLS1.2": {35}, "TLS1.3": {52, 56}}[version.name]
					if !slices.Contains(want, code) {
						t.Errorf("curl exit %d (%q); want one of %v: the connection ended without a response", code, stderr, want)
					}
					if code == 35 && !strings.Contains(stderr, "SSL_ERROR_SYSCALL") {
						t.Errorf("curl handshake failure %q; want the stream to end (SSL_ERROR_SYSCALL)", stderr)
					}
				})
			})
		}
	}
}

// TestOpenSSLMTLS runs the client certificate matrix with openssl s_client
// at TLS 1.2 and 1.3, reading its -msg trace of every record: a valid
// certificate gets the origin's HTTP answer; a refused one receives no
// record at all after the client's Finished (no alert, no session ticket, no
// HTTP response) and the connection just ends.
func TestOpenSSLMTLS(t *testing.T) {
	openssl := needBinary(t, "openssl")
	f := newClientsFixture(t)
	for _, version := range []string{"1_2", "1_3"} {
		for _, tc := range clientMatrix {
			t.Run("TLS"+version+"/"+tc.client+"@"+tc.sni, func(t *testing.T) {
				args := []string{"s_client", "-connect", "127.0.0.1:" + f.port, "-servername", tc.sni,
					"-bind", clientSourceAddr + ":0", "-CAfile", f.p.caFile, "-verify_return_error", "-msg", "-ign_eof", "-tls" + version}
				if files, ok := f.certs[tc.client]; ok {
					// -cert_chain sends the intermediate along with the leaf.
					args = append(args, "-cert", files[0], "-key", files[1], "-cert_chain", files[0])
				}
				request := "GET /openssl HTTP/1.1\r\nHost: " + tc.sni + "\r\nConnection: close\r\n\r\n"
				if tc.reason == "" {
					stdout, stderr, code := runTool(t, request, openssl, args...)
					if code != 0 || !strings.Contains(stdout, "HTTP/1.1 200 OK") || !strings.Contains(stdout, "hello from upstream\nclient "+clientSourceAddr+":") {
						t.Fatalf("openssl exit %d; want the origin's 200\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
					}
					return
				}
				f.refusal(t, tc, func() {
					stdout, stderr, code := runTool(t, request, openssl, args...)
					t.Logf("openssl exit %d: %s", code, lastLine(stderr))
					if code == 0 {
						t.Errorf("openssl exit 0; want a failure")
					}
					if strings.Contains(strings.ToLower(stderr), "alert") {
						t.Errorf("openssl reports a TLS alert: %q", stderr)
					}
					checkSilentAfterFinished(t, stdout)
					if t.Failed() {
						t.Logf("openssl exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
					}
				})
			})
		}
	}
}

// checkSilentAfterFinished reads s_client -msg output and asserts the
// client sent its Finished and then received nothing: no record ("<<<"
// lines: alerts, tickets, application data) and no HTTP response.
func checkSilentAfterFinished(t *testing.T, msg string) {
	t.Helper()
	lines := strings.Split(msg, "\n")
	finished := -1
	for i, l := range lines {
		if strings.HasPrefix(l, ">>> ") && strings.HasSuffix(l, "Finished") {
			finished = i
		}
		if strings.HasPrefix(l, "<<< ") && strings.Contains(l, "Alert") {
			t.Errorf("openssl received a TLS alert: %q", l)
		}
	}
	if finished < 0 {
		t.Fatalf("openssl never sent its Finished; the refusal must come after the client's certificate\n%s", msg)
	}
	for _, l := range lines[finished+1:] {
		if strings.HasPrefix(l, "<<< ") {
			t.Errorf("openssl received a record after its Finished: %q", l)
		}
		if strings.HasPrefix(l, "HTTP/") {
			t.Errorf("openssl received an HTTP response: %q", l)
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
