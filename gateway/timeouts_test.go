package gateway

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestVHostIdleTimeout: a vhost's own timeouts.idle closes its silent
// connections while another vhost's, silent for longer, stay open under the
// global value; a vhost from an included file gets its own too.
func TestVHostIdleTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	upstreamEOF := make(chan error, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(60 * time.Second))
				_, err := io.Copy(io.Discard, c)
				upstreamEOF <- err
			}()
		}
	}()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf.d", "included.yaml"), []byte(yamlf(`
vhosts:
  - {name: included, hosts: [openssl13.example.test], mode: passthrough, upstream: {address: %q}, timeouts: {idle: 1s}}
`, ln.Addr().String())), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServerIn(t, dir, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {idle: 10m}
include: conf.d/*.yaml
vhosts:
  - {name: patient, hosts: [openssl12.example.test], mode: passthrough, upstream: {address: %[1]q}}
  - {name: quick, hosts: [go.example.test], mode: passthrough, upstream: {address: %[1]q}, timeouts: {idle: 1s}}
`, ln.Addr().String()))
	addr := s.addr(t, "127.0.0.1:0")
	const listener = "127.0.0.1:0"
	open := func(hello string) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := send(c, readHello(t, hello), false); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The patient connection goes silent first, so it has been silent
	// longer than the quick ones when they are cut.
	patient := open("openssl-tls12-sni.bin")
	waitActive(t, s, 1)
	quick := open("go-pq.bin")
	included := open("openssl-tls13-sni.bin")
	expectSilentClose(t, quick)
	expectSilentClose(t, included)
	s.waitCount(t, listener, "quick", OutcomeIdleTimeout, 1)
	s.waitCount(t, listener, "included", OutcomeIdleTimeout, 1)
	for range 2 {
		if err := <-upstreamEOF; err != nil {
			t.Fatalf("upstream side of a cut connection: %v", err)
		}
	}

	if got := s.count(listener, "patient", OutcomeIdleTimeout); got != 0 {
		t.Fatalf("the vhost under the global 10m idle timeout had %v connections cut for idling", got)
	}
	// Still open: a byte written now reaches the upstream, and the
	// connection ends when the client ends it, proxied.
	if _, err := patient.Write([]byte{0}); err != nil {
		t.Fatalf("the patient connection was cut: %v", err)
	}
	patient.(*net.TCPConn).CloseWrite()
	if err := <-upstreamEOF; err != nil {
		t.Fatalf("patient upstream: %v", err)
	}
	patient.Close()
	s.waitCount(t, listener, "patient", OutcomeProxied, 1)
}

// TestVHostHandshakeTimeout: an mtls vhost's own timeouts.handshake cuts a
// client that stalls mid-handshake long before the top-level value would.
func TestVHostHandshakeTimeout(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, nil)
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
timeouts: {handshake: 10m}
vhosts:
  - name: app
    hosts: [go.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q}
    upstream: {address: %q}
    timeouts: {handshake: 300ms}
`, p.certFile, p.keyFile, p.caFile, up.address()))
	c, err := net.Dial("tcp", s.addr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The hello, then nothing: the server's flight comes back, and the
	// handshake waits for a certificate that never comes.
	if err := send(c, readHello(t, "go-pq.bin"), false); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the stalled handshake was not ended: %v", err)
	}
	waitRejections(t, s, "app", "handshake_timeout", 1)
	s.waitCount(t, "127.0.0.1:0", "app", OutcomeHandshake, 1)
	up.expectNone(t)
}
