package gateway

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/relay"
	"golang.org/x/sys/unix"
)

// listener is one open listening socket and the settings it runs with;
// the settings are swapped on reload while the socket stays open.
type listener struct {
	name string
	ln   net.Listener
	cfg  atomic.Pointer[config.Listener]
	// polled is a duplicate of a TCP listener's socket in Go's poller,
	// where acceptRaw waits for connections (a net.TCPListener's own
	// RawConn cannot wait); nil for other listeners.
	polled *os.File
}

// close closes the listening socket (and its duplicate, which stops
// acceptRaw).
func (l *listener) close() {
	if l.polled != nil {
		l.polled.Close()
	}
	l.ln.Close()
}

// ListenFunc opens the listening socket of one configured listener.
type ListenFunc func(lc config.Listener) (net.Listener, error)

// Listen opens a listener's socket the way edgegate does by default:
// SO_REUSEPORT only when the listener sets reuse_port, so that an address
// another process already listens on is refused ("address already in
// use") rather than silently shared; and TCP_DEFER_ACCEPT, so that accept
// returns a connection only once its first bytes have arrived (see
// DeferAccept).
func Listen(lc config.Listener) (net.Listener, error) {
	return listenTCP(lc.Address, lc.ReusePort, DeferAccept)
}

// DeferAccept is the TCP_DEFER_ACCEPT of edgegate's listeners: the kernel
// completes the handshake but queues the connection for accept only when
// its first data arrives, or after this long (then timeouts.client_hello
// applies as usual). So a hello is readable at accept (no empty read and
// poller round trip), and a connection that never sends a byte, or whose
// bytes the eBPF guard drops, costs userspace nothing: it is never
// accepted, counted or logged.
const DeferAccept = 5 * time.Second

// listenTCP opens a listening TCP socket, with SO_REUSEPORT if reusePort
// and TCP_DEFER_ACCEPT if deferAccept is positive.
func listenTCP(addr string, reusePort bool, deferAccept time.Duration) (net.Listener, error) {
	lc := net.ListenConfig{
		// No TCP keep-alive on accepted connections: see relay.Dial.
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if reusePort {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
				}
				if serr == nil && deferAccept > 0 {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, int(deferAccept/time.Second))
				}
			})
			return errors.Join(err, serr)
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// acceptLoop accepts until the listener is closed. A TCP listener is
// served by acceptRaw (accept.go); any other kind (tests pass their own)
// through net.Listener, each connection on a goroutine of its own.
func (s *Server) acceptLoop(l *listener) {
	if l.polled != nil {
		s.acceptRaw(l)
		return
	}
	var b acceptBackoff
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.backOff(l, &b, err)
			continue
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		ss := &session{conn: c, start: time.Now(), listener: l.name, client: addrPort(c.RemoteAddr()), local: addrPort(c.LocalAddr())}
		ss.peer = ss.client.Addr()
		s.track(ss)
		if !s.admit(ss) {
			relay.CloseSilently(tc, false)
			s.finish(ss)
			s.untrack(ss)
			continue
		}
		go s.serveConn(tc, l, ss, nil)
	}
}

// admit applies the per-source limits to a new connection and counts it
// active; false (with the outcome set) when it must be closed.
func (s *Server) admit(ss *session) bool {
	if o, ok := s.admission.admit(ss.peer, &s.state.Load().cfg.Limits); !ok {
		ss.outcome = o
		return false
	}
	s.metrics.active.Inc()
	return true
}

// acceptBackoff paces accept after failures for a passing reason (no file
// descriptors left, no buffers): it backs off, counts and logs at most once
// a second rather than spinning. The wait starts again from 5ms only after
// a second without failure: a connection accepted now and then while
// descriptors run short does not reset it.
type acceptBackoff struct {
	wait     time.Duration
	lastFail time.Time
	lastLog  time.Time
}

func (s *Server) backOff(l *listener, b *acceptBackoff, err error) {
	s.metrics.acceptErrors.Inc()
	if b.wait == 0 || time.Since(b.lastFail) > b.wait+time.Second {
		b.wait = 5 * time.Millisecond
	} else if b.wait *= 2; b.wait > time.Second {
		b.wait = time.Second
	}
	if time.Since(b.lastLog) > time.Second {
		s.log.Error("accept failed; backing off", "listener", l.name, "err", err, "backoff", b.wait)
		b.lastLog = time.Now()
	}
	time.Sleep(b.wait)
	b.lastFail = time.Now()
}
