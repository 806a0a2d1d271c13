package relay

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Dial connects to an upstream address (host:port or unix:/path) within
// timeout.
func Dial(address string, timeout time.Duration) (net.Conn, error) {
	// No TCP keep-alive: timeouts.idle ends silent connections, and the
	// keep-alive setsockopt calls cost several percent of a short connection.
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	network, addr := "tcp", address
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		network, addr = "unix", path
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s: %w", address, err)
	}
	return c, nil
}

// DialStart begins a non-blocking TCP connect to addr, for NewDialPair,
// with none of net.Dialer's work around it (no resolver, no poller
// registration, no address lookups after the connect): socket,
// TCP_NODELAY, connect. It returns the socket with the connect in
// progress (or done); a connect that fails at once is an error and
// leaves nothing open.
func DialStart(addr netip.AddrPort) (int, error) {
	fd, err := rawConnectStart(addr)
	if err != nil {
		return -1, fmt.Errorf("dial upstream %s: %w", addr, err)
	}
	return fd, nil
}

// Dialable returns the address of an upstream that DialStart can reach (a
// literal IP and port, no zone), or false for one that needs Dial (a host
// name to resolve, a Unix socket).
func Dialable(address string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Addr().Zone() != "" || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// pendingSize is the capacity of the buffers PendingBuffer lends: a PROXY
// header and a hello of up to about 4 KB (a post-quantum hello is about 2).
const pendingSize = 4 << 10

var pendingBufs = sync.Pool{New: func() any { return new([pendingSize]byte) }}

// PendingBuffer returns an empty buffer with room for n bytes, for the
// pending bytes of NewDialPair: lent from a pool when n fits, and given back
// by the pair once they are written, so that a connection allocates none.
func PendingBuffer(n int) []byte {
	if n > pendingSize {
		return make([]byte, 0, n)
	}
	return pendingBufs.Get().(*[pendingSize]byte)[:0]
}

// releasePending gives back a buffer PendingBuffer lent (any other is left
// to the garbage collector).
func releasePending(b []byte) {
	if cap(b) == pendingSize {
		pendingBufs.Put((*[pendingSize]byte)(b[:pendingSize]))
	}
}

// NewTLSDialPair is NewDialPair for a terminated client: tc and sock are
// as for NewTLSPair, upstream a socket from DialStart whose connect is in
// progress, pending the PROXY header to write once it is connected. The
// loop finishes the connect, so that the goroutine which did the
// handshake neither waits for it nor registers the upstream socket in
// Go's poller. A connect that fails or times out ends the pair with
// Result.DialErr set, the client closed without a byte (no close_notify).
func NewTLSDialPair(tc *tls.Conn, sock *Socket, upstream int, pending []byte, dialTimeout, idle time.Duration, done func(Result)) *Pair {
	pr := NewDialPair(-1, upstream, pending, 0, dialTimeout, idle, done)
	pr.conns[0], pr.tls, pr.sock = tc, tc, sock
	// The header was not lent by PendingBuffer: not the pool's to take.
	pr.pendingBuf = nil
	return pr
}
