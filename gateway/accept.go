package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/gateway/relay"
	"github.com/edgegate/edgegate/gateway/upstream"
	"github.com/edgegate/edgegate/sni"
)

// acceptRaw is the accept loop of a TCP listener. It takes each connection
// as a bare descriptor (accept4, no net.Conn, no poller registration) and,
// on the loop's own goroutine, tries the fast path: the ClientHello is
// already in the socket (TCP_DEFER_ACCEPT queues a connection for accept
// only once its first bytes have arrived), so one read gets it; a
// passthrough vhost with an IP upstream is then dialed without blocking
// and the pair is parked in the relay, which finishes the connect. No
// goroutine, no net.Conn and no buffer is made for such a connection.
//
// Everything else takes the slow path on a goroutine of its own: an mtls
// vhost as a fileConn (serveMTLSFD); as a net.Conn, a hello not yet
// complete, a listener that takes an inbound PROXY header, an upstream
// named by host name or Unix socket.
func (s *Server) acceptRaw(l *listener) {
	rc, err := l.polled.SyscallConn()
	if err != nil {
		s.log.Error("listener has no descriptor; not serving it", "listener", l.name, "err", err)
		return
	}
	// Accepted sockets inherit TCP_NODELAY from the listening socket, so
	// no connection needs a setsockopt of its own.
	rc.Control(func(lfd uintptr) { unix.SetsockoptInt(int(lfd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) })
	local := fixedLocal(l.ln.Addr())
	var b acceptBackoff
	var fd int
	var client netip.AddrPort
	var aerr error
	accept := func(lfd uintptr) bool {
		fd, client, aerr = accept4(int(lfd))
		return aerr != unix.EAGAIN
	}
	var hb helloBuffers
	for {
		if err := rc.Read(accept); err != nil {
			// The listener was closed (Shutdown, a failed reload's
			// release): stop.
			return
		}
		if aerr != nil {
			if aerr == unix.ECONNABORTED || aerr == unix.EINTR {
				continue
			}
			s.backOff(l, &b, os.NewSyscallError("accept4", aerr))
			continue
		}
		s.accepted(l, fd, client, local, &hb)
	}
}

// pollable returns a duplicate of a TCP listener's socket registered in
// Go's poller, for acceptRaw to wait on (the RawConn of a net.TCPListener
// refuses Read), or nil if it cannot be made.
func pollable(tl *net.TCPListener) *os.File {
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	dup := -1
	rc.Control(func(fd uintptr) { dup, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if dup < 0 {
		return nil
	}
	// The socket is non-blocking (the flag is the socket's, shared by the
	// duplicate), so os.NewFile puts it in the poller.
	return os.NewFile(uintptr(dup), "listener")
}

// fixedLocal is a listener's address when it names one IP (every
// connection's local address), or the zero value for a wildcard one, whose
// connections' local addresses getsockname tells.
func fixedLocal(a net.Addr) netip.AddrPort {
	ap := addrPort(a)
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}
	}
	return ap
}

// accept4 takes one connection from a listening socket, non-blocking, and
// returns it with the client's address. It calls the system call itself:
// unix.Accept4 asks the listening socket its protocol (getsockopt) on
// every IPv4 connection, and allocates the address. It is a raw system
// call, as the relay's are (gateway/relay/rawsyscall.go): on a
// non-blocking socket it returns at once.
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	fd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, netip.AddrPort{}, errno
	}
	return int(fd), rawAddrPort(&rsa), nil
}

// rawAddrPort converts an IPv4 or IPv6 socket address (the zero value for
// any other).
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), port(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), port(a.Port))
	}
	return netip.AddrPort{}
}

// port reads a port in network byte order.
func port(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// sockaddrPort converts a socket address from getsockname.
func sockaddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// helloBuffers are an accept loop's buffers for the hellos it reads, reused
// from one connection to the next: buf for the read (limits.max_hello_size
// bytes), scratch for sni's parse of them, rd to read buf.
type helloBuffers struct {
	buf, scratch []byte
	rd           bytes.Reader
}

// accepted starts one connection's path on the accept loop's goroutine,
// with the loop's hello buffers (resized when a reload changed
// limits.max_hello_size).
func (s *Server) accepted(l *listener, fd int, client, local netip.AddrPort, hb *helloBuffers) {
	ss := &session{start: time.Now(), listener: l.name, client: client, local: local}
	ss.peer = ss.client.Addr()
	if !local.IsValid() {
		if lsa, err := unix.Getsockname(fd); err == nil {
			ss.local = sockaddrPort(lsa)
		}
	}
	s.track(ss)
	if !s.admit(ss) {
		closeSilentlyFD(fd, false)
		s.finish(ss)
		s.untrack(ss)
		return
	}
	if l.cfg.Load().AcceptProxyProtocol {
		go s.serveFD(fd, l, ss, nil, nil)
		return
	}
	st := s.state.Load()
	if len(hb.buf) != st.cfg.Limits.MaxHelloSize {
		hb.buf = make([]byte, st.cfg.Limits.MaxHelloSize)
		hb.scratch = make([]byte, st.cfg.Limits.MaxHelloSize)
	}
	buf := hb.buf
	n, err := relay.RawRead(fd, buf)
	if err == unix.EAGAIN {
		// Accepted before any byte came (TCP_DEFER_ACCEPT's wait ended).
		go s.serveFD(fd, l, ss, nil, nil)
		return
	}
	if err != nil {
		n = 0 // a reset: the hello read below sees an early end
	}
	hb.rd.Reset(buf[:n])
	hello, _, herr := sni.ReadFromBuffer(&hb.rd, st.cfg.Limits.MaxHelloSize, hb.scratch)
	if herr != nil && n > 0 && errors.Is(herr, sni.ErrClosed) {
		// An incomplete hello: the rest is still to come.
		go s.serveFD(fd, l, ss, nil, bytes.Clone(buf[:n]))
		return
	}
	helloWait := time.Since(ss.start).Seconds()
	if herr != nil {
		s.metrics.unrouted.hello.Observe(helloWait)
		ss.outcome, ss.err = helloOutcome(herr), herr
		s.endRaw(ss, fd, false)
		return
	}
	v := s.lookup(ss, st, hello, helloWait)
	if v == nil {
		s.endRaw(ss, fd, st.routes.unmatchedReset)
		return
	}
	if v.mode == modeMTLS {
		go s.serveMTLSFD(fd, ss, st, bytes.Clone(buf[:n]))
		return
	}
	if !v.upAddr.IsValid() || s.parker == nil {
		go s.serveFD(fd, l, ss, st, bytes.Clone(buf[:n]))
		return
	}
	s.passthroughRaw(ss, fd, buf[:n])
}

// serveFD is the slow path: the connection becomes a net.Conn and goes the
// way serveConn takes it, on its own goroutine. pre is what the fast path
// read from it already. A connection the fast path routed already (st is
// the state it was routed under) goes straight to its vhost's mode.
func (s *Server) serveFD(fd int, l *listener, ss *session, st *state, pre []byte) {
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		ss.outcome, ss.err = OutcomeClosedEarly, err
		s.end(ss)
		return
	}
	tc := c.(*net.TCPConn)
	s.setConn(ss, tc)
	if st == nil {
		s.serveConn(tc, l, ss, pre)
		return
	}
	if !s.dispatch(ss, st, tc, pre) {
		s.end(ss)
	}
}

// serveMTLSFD is the slow path of an mtls connection the accept loop has
// routed (st is the state it was routed under, hello what it read): the
// socket becomes a fileConn, cheaper than serveFD's net.Conn, and goes to
// terminate on its own goroutine.
func (s *Server) serveMTLSFD(fd int, ss *session, st *state, hello []byte) {
	c := newFileConn(fd, ss.local, ss.client)
	if c == nil {
		ss.outcome, ss.err = OutcomeClosedEarly, errors.New("accepted socket not pollable")
		s.end(ss)
		return
	}
	s.setConn(ss, c)
	if !s.terminate(ss, st, c, hello) {
		s.end(ss)
	}
}

// passthroughRaw is passthrough on the fast path: the PROXY header and the
// hello go to a freshly started connect to the vhost's one server, and the
// relay finishes it. (A vhost with several servers takes the slow path,
// which tries the next one when a dial fails.)
func (s *Server) passthroughRaw(ss *session, fd int, hello []byte) {
	v := ss.vhost
	// The PROXY header and the hello go to the upstream in one write:
	// room for both, and for the header's TLVs (SNI, unique ID).
	pending, reset, ok := passthroughHeader(ss, relay.PendingBuffer(maxPassthroughHeader+len(ss.sni)+len(hello)))
	if !ok {
		s.endRaw(ss, fd, reset)
		return
	}
	w := v.pool.Walk(ss.client.Addr())
	srv := w.Next()
	if srv == nil {
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, fmt.Errorf("vhost %s: %w", v.name, upstream.ErrNoServer)
		s.endRaw(ss, fd, false)
		return
	}
	dialStart := time.Now()
	up, err := relay.DialStart(v.upAddr)
	if err != nil {
		srv.Report(err)
		ss.outcome, ss.err = OutcomeUpstreamUnreachable, err
		s.endRaw(ss, fd, false)
		return
	}
	pending = append(pending, hello...)
	pr := relay.NewDialPair(fd, up, pending, len(hello), v.timeouts.UpstreamDial.D(), v.timeouts.Idle.D(), func(r relay.Result) {
		if r.DialErr != nil {
			ss.outcome, ss.err = OutcomeUpstreamUnreachable, r.DialErr
		} else {
			s.relayed(ss, 0, r)
		}
		s.end(ss)
	})
	pr.Dialed = func(err error) {
		srv.Report(err)
		if err == nil {
			ss.server = srv
			s.metrics.of(v).connect.Observe(time.Since(dialStart).Seconds())
		}
	}
	s.park(ss, pr)
}

// maxPassthroughHeader is the size of a passthrough PROXY header without
// its SNI: v2 with IPv6 addresses (52 bytes), the SNI TLV's type and
// length, and the unique ID TLV (3 + 32 bytes).
const maxPassthroughHeader = 52 + 3 + 3 + 32

// endRaw ends a connection of the fast path that goes no further: its
// socket closed without a byte (RST when reset), then end.
func (s *Server) endRaw(ss *session, fd int, reset bool) {
	closeSilentlyFD(fd, reset)
	s.end(ss)
}

// closeSilentlyFD is relay.CloseSilently for a bare descriptor.
func closeSilentlyFD(fd int, reset bool) {
	if reset {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		relay.RawClose(fd)
		return
	}
	relay.CloseFD(fd)
}
