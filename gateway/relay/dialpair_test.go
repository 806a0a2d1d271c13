package relay

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rawClient returns the gateway's end of a client connection as a bare
// descriptor (the pair owns it) and the client's end.
func rawClient(t *testing.T) (int, *net.TCPConn) {
	t.Helper()
	gw, client := tcpPair(t)
	fd, err := rawFD(gw)
	if err == nil {
		// A non-blocking duplicate (the flag is the socket's); the
		// net.Conn is closed.
		fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	gw.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return fd, client
}

// TestDialPairRelays: the loop finishes a connect DialStart began, writes
// the pending bytes first, then relays both ways; the client's bytes in
// pending count toward ToUpstream, the header's do not.
func TestDialPairRelays(t *testing.T) {
	p, err := NewParker(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, client := rawClient(t)
	up, err := DialStart(ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Result, 1)
	dialed := make(chan error, 1)
	pr := NewDialPair(fd, up, []byte("HDR|hello"), 5, 5*time.Second, time.Minute, func(r Result) { done <- r })
	pr.Dialed = func(err error) { dialed <- err }
	p.Park(pr)
	// Bytes the client sends while the connect is in progress follow.
	client.Write([]byte("|more"))
	client.CloseWrite()
	uc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	got, _ := io.ReadAll(uc)
	if string(got) != "HDR|hello|more" {
		t.Fatalf("upstream got %q", got)
	}
	uc.Write([]byte("answer"))
	uc.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(client)
	if string(reply) != "answer" {
		t.Fatalf("client got %q", reply)
	}
	if err := <-dialed; err != nil {
		t.Fatalf("Dialed(%v), want nil", err)
	}
	r := <-done
	if r.DialErr != nil || r.ToUpstream != int64(len("hello|more")) || r.ToClient != int64(len("answer")) {
		t.Fatalf("result %+v", r)
	}
}

// TestDialPairRefused: an upstream that refuses ends the pair with
// DialErr, and the client is closed without a byte (FIN, not RST, though
// it had sent bytes nobody read).
func TestDialPairRefused(t *testing.T) {
	p, err := NewParker(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close() // nobody listens there now
	fd, client := rawClient(t)
	client.Write([]byte("queued"))
	up, err := DialStart(addr)
	if err != nil {
		// Refused at once: nothing to park, and nothing left open.
		return
	}
	done := make(chan Result, 1)
	dialed := make(chan error, 1)
	pr := NewDialPair(fd, up, []byte("HDR|hello"), 5, 5*time.Second, time.Minute, func(r Result) { done <- r })
	pr.Dialed = func(err error) { dialed <- err }
	p.Park(pr)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(client)
	if len(b) != 0 || err != nil {
		t.Fatalf("client read %q, %v; want a plain close with no byte", b, err)
	}
	if err := <-dialed; err == nil {
		t.Fatal("Dialed(nil) for a refused connect")
	}
	r := <-done
	if r.DialErr == nil || r.ToUpstream != 0 || r.Idled {
		t.Fatalf("result %+v, want a dial error", r)
	}
}

// TestDialable: literal IPs and ports are dialed raw; names and Unix
// sockets are not.
func TestDialable(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8443": true, "[::1]:443": true, "[fe80::1%eth0]:443": false,
		"localhost:443": false, "unix:/run/x.sock": false, "127.0.0.1:0": false,
	} {
		ap, ok := Dialable(addr)
		if ok != want || (ok && ap != netip.MustParseAddrPort(addr)) {
			t.Errorf("Dialable(%q) = %v, %v; want %v", addr, ap, ok, want)
		}
	}
}
