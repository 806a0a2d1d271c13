package main_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// upstreamConn is what the test upstream learned about one connection.
type upstreamConn struct {
	header *proxyproto.Header
	sni    string // the name the client asked the upstream's TLS server for
	err    error
}

// tlsUpstream is a passthrough upstream on loopback: it reads edgegate's
// PROXY header, terminates the client's TLS itself, then answers each line
// "quit" with "bye" and a close, and every other line with itself.
type tlsUpstream struct {
	ln    net.Listener
	conns chan upstreamConn
	roots *x509.CertPool // what a client trusts to reach it
}

// newTLSUpstream starts an upstream whose certificate covers names.
func newTLSUpstream(t *testing.T, names ...string) *tlsUpstream {
	t.Helper()
	ca, err := testpki.NewCA("edgegate cli test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server(names...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &tlsUpstream{ln: ln, conns: make(chan upstreamConn, 64), roots: x509.NewCertPool()}
	u.roots.AddCert(ca.Cert)
	tc := &tls.Config{Certificates: []tls.Certificate{cert}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c, tc)
		}
	}()
	return u
}

// bufConn reads through the bufio.Reader that read the PROXY header, so
// TLS sees the stream whole.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (u *tlsUpstream) serve(c net.Conn, tc *tls.Config) {
	defer c.Close()
	// A safety net only: a test that leaves a connection open longer is
	// broken anyway.
	c.SetDeadline(time.Now().Add(2 * waitLimit))
	br := bufio.NewReader(c)
	var uc upstreamConn
	uc.header, uc.err = proxyproto.Read(br)
	if uc.err != nil {
		u.conns <- uc
		return
	}
	tlsConn := tls.Server(bufConn{c, br}, tc)
	if uc.err = tlsConn.Handshake(); uc.err != nil {
		u.conns <- uc
		return
	}
	uc.sni = tlsConn.ConnectionState().ServerName
	u.conns <- uc
	lines := bufio.NewReader(tlsConn)
	for {
		l, err := lines.ReadString('\n')
		if err != nil {
			return
		}
		if l == "quit\n" {
			tlsConn.Write([]byte("bye\n"))
			tlsConn.Close()
			return
		}
		if _, err := tlsConn.Write([]byte(l)); err != nil {
			return
		}
	}
}

// next returns the next connection the upstream accepted.
func (u *tlsUpstream) next(t *testing.T) upstreamConn {
	t.Helper()
	select {
	case uc := <-u.conns:
		return uc
	case <-time.After(waitLimit):
		t.Fatal("upstream got no connection")
		return upstreamConn{}
	}
}

// echoClient is a TLS client connected through edgegate to a tlsUpstream.
type echoClient struct {
	conn *tls.Conn
	r    *bufio.Reader
}

// dialEcho connects to edgegate at addr asking for sni and completes the
// TLS handshake with the upstream behind it.
func dialEcho(addr, sni string, roots *x509.CertPool) (*echoClient, error) {
	d := &net.Dialer{Timeout: waitLimit}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(2 * waitLimit))
	return &echoClient{conn: c, r: bufio.NewReader(c)}, nil
}

// roundTrip sends one line and returns what came back.
func (e *echoClient) roundTrip(line string) (string, error) {
	if _, err := e.conn.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := e.r.ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}
