package gateway

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// listener is one open listening socket and the settings it runs with;
// the settings are swapped on reload while the socket stays open.
type listener struct {
	name string
	ln   net.Listener
	cfg  atomic.Pointer[Listener]
}

// ListenTCP opens a listening TCP socket the way edgegate does by default.
// SO_REUSEPORT lets several edgegate processes share a port on one host.
func ListenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{
		// No TCP keep-alive on accepted connections: see dialUpstream.
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// acceptLoop accepts until the listener is closed. When accept fails for
// a passing reason (no file descriptors left, no buffers), it backs off,
// counts it and logs it at most once a second rather than spinning.
func (s *Server) acceptLoop(l *listener) {
	var backoff time.Duration
	var lastLog time.Time
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.metrics.acceptErrors.Inc()
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			if time.Since(lastLog) > time.Second {
				s.log.Error("accept failed; backing off", "listener", l.name, "err", err, "backoff", backoff)
				lastLog = time.Now()
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		ss := &session{start: time.Now(), listener: l.name, client: addrPort(c.RemoteAddr()), local: addrPort(c.LocalAddr())}
		if !ok {
			c.Close()
			continue
		}
		s.track(c, ss)
		peer := ss.client.Addr()
		ss.peer = peer
		if o, ok := s.admission.admit(peer, &s.state.Load().cfg.Limits); !ok {
			ss.outcome = o
			closeSilently(tc, false)
			s.finish(ss)
			s.untrack(c)
			continue
		}
		go func() {
			defer s.untrack(c)
			defer s.admission.release(peer)
			s.serveConn(tc, l, ss)
		}()
	}
}

// bufferedConn is a conn whose first bytes are read through a bufio.Reader
// (after a PROXY header was read from it).
type bufferedConn struct {
	*net.TCPConn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// errUntrustedProxy and errBadProxyHeader are the two ways inbound PROXY
// handling refuses a connection.
var (
	errUntrustedProxy = errors.New("PROXY header expected from a trusted proxy only")
	errBadProxyHeader = errors.New("bad or missing PROXY header")
)

// readInboundProxy reads the PROXY header that a trusted load balancer puts
// before the client's bytes. It returns the client's and the original
// destination's addresses, and a conn to read the rest of the stream from.
func readInboundProxy(c *net.TCPConn, lc *Listener, timeout time.Duration) (src, dst netip.AddrPort, rest net.Conn, err error) {
	peer := addrPort(c.RemoteAddr())
	trusted := false
	for _, p := range lc.trusted {
		if p.Contains(peer.Addr()) {
			trusted = true
			break
		}
	}
	if !trusted {
		return peer, addrPort(c.LocalAddr()), c, errUntrustedProxy
	}
	br := bufio.NewReaderSize(c, 512)
	c.SetReadDeadline(time.Now().Add(timeout))
	h, err := proxyproto.Read(br)
	c.SetReadDeadline(time.Time{})
	rest = &bufferedConn{TCPConn: c, r: br}
	if err != nil {
		return peer, addrPort(c.LocalAddr()), rest, errBadProxyHeader
	}
	if h.Command.IsLocal() {
		// A balancer's health check: it speaks for itself.
		return peer, addrPort(c.LocalAddr()), rest, nil
	}
	s, d := addrPort(h.SourceAddr), addrPort(h.DestinationAddr)
	if !s.IsValid() {
		return peer, addrPort(c.LocalAddr()), rest, errBadProxyHeader
	}
	return s, d, rest, nil
}

// addrPort converts a TCP address to netip form, unmapping v4-in-v6.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
