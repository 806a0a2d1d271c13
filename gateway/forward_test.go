package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
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
