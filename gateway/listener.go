package gateway

import (
	"context"
	"errors"
	"net"
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
		ss := &session{conn: c, start: time.Now(), listener: l.name, client: addrPort(c.RemoteAddr()), local: addrPort(c.LocalAddr())}
		if !ok {
			c.Close()
			continue
		}
		s.track(c, ss)
		peer := ss.client.Addr()
		ss.peer = peer
		if o, ok := s.admission.admit(peer, &s.state.Load().cfg.Limits); !ok {
			ss.outcome = o
			relay.CloseSilently(tc, false)
			s.finish(ss)
			s.untrack(c)
			continue
		}
		go s.serveConn(tc, l, ss)
	}
}
