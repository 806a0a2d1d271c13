package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// endingUpstream reads the PROXY header and the bytes the test sends, then
// ends the connection the way its fields say. It reports what it read.
type endingUpstream struct {
	ln   net.Listener
	got  chan upstreamConn
	want int // bytes to read after the header before acting

	waitEOF bool   // read until the client's half-close first
	reply   []byte // written before closing
	reset   bool   // close with RST (SO_LINGER 0) instead of FIN
}

func newEndingUpstream(t testing.TB, u *endingUpstream) *endingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.ln, u.got = ln, make(chan upstreamConn, 64)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c.(*net.TCPConn))
		}
	}()
	return u
}

func (u *endingUpstream) serve(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	var uc upstreamConn
	if uc.header, uc.err = proxyproto.Read(br); uc.err == nil {
		uc.data = make([]byte, u.want)
		_, uc.err = io.ReadFull(br, uc.data)
	}
	if uc.err == nil && u.waitEOF {
		var rest []byte
		rest, uc.err = io.ReadAll(br)
		uc.data = append(uc.data, rest...)
	}
	if len(u.reply) > 0 {
		c.Write(u.reply)
	}
	if u.reset {
		c.SetLinger(0)
	}
	c.Close()
	u.got <- uc
}

// TestUpstreamClosed: a connection whose upstream hangs up (FIN or RST)
// before sending a byte back ends as upstream_closed, in the counter and in
// its log line, in both modes, and the client gets nothing; a connection
// where the upstream answered, or where the client ended first, is
// proxied. Each case runs several times: which side ended first must not
// depend on which goroutine the scheduler runs first.
func TestUpstreamClosed(t *testing.T) {
	const rounds = 20
	p := newPKI(t)
	hello := readHello(t, "go-pq.bin") // SNI go.example.test
	ping := []byte("PING\n")
	for _, tc := range []struct {
		name         string
		mode         string
		up           endingUpstream
		clientCloses bool   // the client half-closes after sending
		reply        string // what the client must receive
		want         Outcome
	}{
		{"passthrough/upstream closes without a byte", "passthrough", endingUpstream{}, false, "", OutcomeUpstreamClosed},
		{"passthrough/upstream resets without a byte", "passthrough", endingUpstream{reset: true}, false, "", OutcomeUpstreamClosed},
		{"passthrough/upstream answers and closes first", "passthrough", endingUpstream{reply: []byte("PONG")}, false, "PONG", OutcomeProxied},
		{"passthrough/client closes first, upstream answers", "passthrough", endingUpstream{waitEOF: true, reply: []byte("PONG")}, true, "PONG", OutcomeProxied},
		{"passthrough/client closes first, upstream silent", "passthrough", endingUpstream{waitEOF: true}, true, "", OutcomeProxied},
		{"mtls/upstream closes without a byte", "mtls", endingUpstream{}, false, "", OutcomeUpstreamClosed},
		{"mtls/upstream resets without a byte", "mtls", endingUpstream{reset: true}, false, "", OutcomeUpstreamClosed},
		{"mtls/upstream answers and closes first", "mtls", endingUpstream{reply: []byte("PONG")}, false, "PONG", OutcomeProxied},
		{"mtls/client closes first, upstream answers", "mtls", endingUpstream{waitEOF: true, reply: []byte("PONG")}, true, "PONG", OutcomeProxied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := hello
			if tc.mode == "mtls" {
				sent = ping
			}
			tc.up.want = len(sent)
			up := newEndingUpstream(t, &tc.up)
			s, logs := startServerLogged(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v2}}
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q}
    upstream: {address: %q, proxy_protocol: v2}
`, up.ln.Addr(), p.certFile, p.keyFile, p.caFile, up.ln.Addr()))
			addr := s.addr(t, "127.0.0.1:0")
			vhost := map[string]string{"passthrough": "go", "mtls": "app"}[tc.mode]

			for range rounds {
				var got []byte
				var err error
				if tc.mode == "passthrough" {
					got, err = passthroughExchange(t, addr, hello, tc.clientCloses)
				} else {
					got, err = mtlsExchange(t, addr, p, ping, tc.clientCloses)
				}
				if string(got) != tc.reply || err != nil {
					t.Fatalf("client got %q, %v; want %q and end-of-stream", got, err, tc.reply)
				}
				uc := <-up.got
				if uc.err != nil || uc.header == nil || !bytes.Equal(uc.data, sent) {
					t.Fatalf("upstream read header %v, %d bytes, %v; want the PROXY header and the %d bytes sent", uc.header, len(uc.data), uc.err, len(sent))
				}
			}
			s.waitCount(t, "127.0.0.1:0", vhost, tc.want, rounds)
			for _, rec := range logs.waitConnections(t, rounds) {
				if rec["outcome"] != string(tc.want) || rec["vhost"] != vhost || rec["mode"] != tc.mode {
					t.Fatalf("log line %v; want outcome %q for vhost %q", rec, tc.want, vhost)
				}
				if toClient := rec["bytes_to_client"].(float64); toClient != float64(len(tc.reply)) {
					t.Fatalf("log line %v: bytes_to_client %v, want %d", rec, toClient, len(tc.reply))
				}
				if tc.want == OutcomeUpstreamClosed && rec["level"] != "INFO" {
					t.Fatalf("log line %v: upstream_closed is logged at info, not as noise", rec)
				}
			}
		})
	}
}

// passthroughExchange sends a captured ClientHello (and half-closes, if
// told), then reads until the gateway ends the connection.
func passthroughExchange(t *testing.T, addr string, hello []byte, closeWrite bool) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	return io.ReadAll(c)
}

// mtlsExchange completes an mtls handshake with a valid certificate, sends
// msg (and half-closes, if told), then reads until the gateway ends the
// stream: a close_notify reads as end-of-stream.
func mtlsExchange(t *testing.T, addr string, p *pki, msg []byte, closeWrite bool) ([]byte, error) {
	t.Helper()
	c, _, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
		Certificates: []tls.Certificate{p.clients["valid"]}})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		c.CloseWrite()
	}
	got, err := io.ReadAll(c)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return got, err
}

// nginxMismatch is nginx as an operator may set it up behind edgegate: TLS
// servers for passthrough with and without proxy_protocol on their listen
// line, a cleartext one with it for mtls vhosts, and stub_status.
const nginxMismatch = `
    access_log off;
    ssl_certificate {{cert}};
    ssl_certificate_key {{key}};
    server {
        listen {{addr0}} ssl proxy_protocol;
        location / { default_type text/plain; return 200 "hello from nginx\n"; }
    }
    server {
        listen {{addr1}} ssl;
        location / { default_type text/plain; return 200 "hello from nginx\n"; }
    }
    server {
        listen {{addr2}} proxy_protocol;
        location / { default_type text/plain; return 200 "hello from nginx\n"; }
    }
    server {
        listen {{addr3}};
        location = /status { stub_status; }
    }
`

// haproxyMismatch is the same for HAProxy: TLS frontends with and without
// accept-proxy.
const haproxyMismatch = `
frontend expects_proxy
    mode http
    bind fd@3 ssl crt {{bundle}} accept-proxy
    http-request return status 200 content-type text/plain string "hello from haproxy\n"
frontend no_proxy
    mode http
    bind fd@4 ssl crt {{bundle}}
    http-request return status 200 content-type text/plain string "hello from haproxy\n"
`

// TestProxyHeaderMismatch puts edgegate in front of a real nginx and a real
// HAProxy whose listeners do or do not match edgegate's
// upstream.proxy_protocol, as operators get it wrong. Both read v1 and v2
// alike where they expect a header. Where a header is expected and none
// comes, they hang up without a byte (nginx logs "broken header"): that is
// upstream_closed, in passthrough (the ClientHello is left unread, so the
// kernel resets) and mtls (the request is read whole: FIN). Where a header
// comes that is not expected, HAProxy hangs up too (upstream_closed), but
// nginx reads it as a cleartext HTTP request and answers 400: the TLS
// client cannot use that, yet bytes came back, so edgegate counts it
// proxied.
func TestProxyHeaderMismatch(t *testing.T) {
	p := newPKI(t)
	ng := runNginx(t, strings.NewReplacer("{{cert}}", p.certFile, "{{key}}", p.keyFile).Replace(nginxMismatch), 4)
	hap := runHAProxy(t, strings.ReplaceAll(haproxyMismatch, "{{bundle}}", haproxyBundle(t, p)), 2)
	s, logs := startServerLogged(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - {name: nginx-v2, hosts: [nginx-v2.example.test], mode: passthrough, upstream: {address: %[1]q, proxy_protocol: v2}}
  - {name: nginx-v1, hosts: [nginx-v1.example.test], mode: passthrough, upstream: {address: %[1]q, proxy_protocol: v1}}
  - {name: nginx-none, hosts: [nginx-none.example.test], mode: passthrough, upstream: {address: %[1]q, proxy_protocol: "off"}}
  - {name: nginx-unexpected, hosts: [nginx-unexpected.example.test], mode: passthrough, upstream: {address: %[2]q, proxy_protocol: v2}}
  - name: nginx-mtls-v2
    hosts: [other.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[4]q, key: %[5]q}]}
    client_auth: {ca: %[6]q}
    upstream: {address: %[3]q, proxy_protocol: v2}
  - name: nginx-mtls-none
    hosts: [app.example.test]
    mode: mtls
    tls: {certificates: [{cert: %[4]q, key: %[5]q}]}
    client_auth: {ca: %[6]q}
    upstream: {address: %[3]q, proxy_protocol: "off"}
  - {name: haproxy-v2, hosts: [haproxy-v2.example.test], mode: passthrough, upstream: {address: %[7]q, proxy_protocol: v2}}
  - {name: haproxy-v1, hosts: [haproxy-v1.example.test], mode: passthrough, upstream: {address: %[7]q, proxy_protocol: v1}}
  - {name: haproxy-none, hosts: [haproxy-none.example.test], mode: passthrough, upstream: {address: %[7]q, proxy_protocol: "off"}}
  - {name: haproxy-unexpected, hosts: [haproxy-unexpected.example.test], mode: passthrough, upstream: {address: %[8]q, proxy_protocol: v2}}
`, ng.addrs[0], ng.addrs[1], ng.addrs[2], p.certFile, p.keyFile, p.caFile, hap[0], hap[1]))
	gw := s.addr(t, "127.0.0.1:0")
	for i, tc := range []struct {
		vhost        string
		mtls         bool
		want         Outcome
		answer       string // the body the client gets, "" for none
		cleartext400 bool   // the upstream answers the TLS client in clear text
		brokenHeader bool   // nginx logs "broken header"
	}{
		{vhost: "nginx-v2", want: OutcomeProxied, answer: "hello from nginx\n"},
		{vhost: "nginx-v1", want: OutcomeProxied, answer: "hello from nginx\n"},
		{vhost: "nginx-none", want: OutcomeUpstreamClosed, brokenHeader: true},
		{vhost: "nginx-unexpected", want: OutcomeProxied, cleartext400: true},
		{vhost: "nginx-mtls-v2", mtls: true, want: OutcomeProxied, answer: "hello from nginx\n"},
		{vhost: "nginx-mtls-none", mtls: true, want: OutcomeUpstreamClosed, brokenHeader: true},
		{vhost: "haproxy-v2", want: OutcomeProxied, answer: "hello from haproxy\n"},
		{vhost: "haproxy-v1", want: OutcomeProxied, answer: "hello from haproxy\n"},
		{vhost: "haproxy-none", want: OutcomeUpstreamClosed},
		{vhost: "haproxy-unexpected", want: OutcomeUpstreamClosed},
	} {
		t.Run(tc.vhost, func(t *testing.T) {
			sni := tc.vhost + ".example.test"
			cfg := &tls.Config{ServerName: sni, RootCAs: p.roots}
			if tc.mtls {
				sni = map[string]string{"nginx-mtls-v2": "other.example.test", "nginx-mtls-none": "app.example.test"}[tc.vhost]
				cfg = &tls.Config{ServerName: sni, RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}}
			}
			broken := strings.Count(readFile(t, ng.errorLog), "broken header")
			c, rc, err := dialTLS(t, gw, cfg)
			var reply []byte
			switch {
			case tc.cleartext400:
				if err == nil || !strings.Contains(err.Error(), "does not look like a TLS handshake") {
					t.Fatalf("handshake error %v; want the upstream's cleartext answer", err)
				}
				c.Close()
			case tc.want == OutcomeUpstreamClosed && !tc.mtls:
				// Nothing came back: not even a ServerHello.
				expectRefused(t, c, rc, err)
			case err != nil:
				t.Fatalf("handshake: %v", err)
			default:
				fmt.Fprintf(c, "GET /mismatch HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
				reply, err = io.ReadAll(c)
				c.Close()
				if err != nil {
					t.Fatalf("client read %q, %v; want end-of-stream", reply, err)
				}
				switch {
				case tc.answer == "" && len(reply) > 0:
					t.Fatalf("client got %q; want nothing", reply)
				case tc.answer != "" && (!strings.HasPrefix(string(reply), "HTTP/1.1 200") || !strings.HasSuffix(string(reply), "\r\n\r\n"+tc.answer)):
					t.Fatalf("client got %q; want a 200 with %q", reply, tc.answer)
				}
			}

			s.waitCount(t, "127.0.0.1:0", tc.vhost, tc.want, 1)
			rec := logs.waitConnections(t, i+1)[i]
			if rec["vhost"] != tc.vhost || rec["outcome"] != string(tc.want) {
				t.Fatalf("log line %v; want vhost %q, outcome %q", rec, tc.vhost, tc.want)
			}
			if toClient := rec["bytes_to_client"].(float64); (toClient == 0) != (tc.want == OutcomeUpstreamClosed) {
				t.Fatalf("log line %v: bytes_to_client %v", rec, toClient)
			}
			// nginx writes its error line before it closes, so before
			// edgegate counts the connection.
			if got := strings.Count(readFile(t, ng.errorLog), "broken header") - broken; (got == 1) != tc.brokenHeader || got > 1 {
				t.Fatalf("nginx logged %d new \"broken header\" lines; want %v", got, tc.brokenHeader)
			}
		})
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
