package gateway

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/gateway/relay"
)

// clientConn is a client's TCP connection on the slow path: a
// *net.TCPConn, or the fileConn an mtls connection the accept loop routed
// becomes.
type clientConn interface {
	net.Conn
	CloseWrite() error
	SyscallConn() (syscall.RawConn, error)
}

// fileConn is an accepted socket made a net.Conn through os.NewFile, which
// costs one fcntl and one epoll_ctl. net.FileConn, the only way to a
// *net.TCPConn from a descriptor, costs thirteen more system calls per
// connection, counted with strace (a duplicate descriptor, registered in
// the poller and the original deregistered and closed, two fcntl, its type,
// both its addresses, TCP_NODELAY again and four setsockopt for keepalive):
// about 4% of a full mtls handshake's CPU in the harness's profiles. An
// mtls connection the accept loop routed takes this one; its errors read
// as a *net.TCPConn's would (net.ErrClosed once closed), it inherits
// TCP_NODELAY from the listener, and like a fast-path connection it has no
// TCP keepalive (the vhost's idle timeout ends a dead one).
//
// Its reads and writes are raw system calls on the non-blocking socket
// (relay/rawsyscall.go says why), waiting in Go's poller only when the
// socket would block: through os.File they would be blocking system calls
// to the scheduler (entersyscall), each of which wakes sysmon from its
// deep sleep when the process was idle, and sysmon then polls every 20 µs
// for a millisecond (perf: nanosleep and futex, about a tenth of the
// process's CPU in mtls-full at partial load).
type fileConn struct {
	f             *os.File
	rc            syscall.RawConn
	local, remote netip.AddrPort
}

// newFileConn makes fd, a connected non-blocking TCP socket, a fileConn
// that owns it; nil (fd closed) when Go's poller cannot take it, so
// that it could not wait for the client.
func newFileConn(fd int, local, remote netip.AddrPort) *fileConn {
	f := os.NewFile(uintptr(fd), "tcp")
	rc, err := f.SyscallConn()
	if err != nil || f.SetDeadline(time.Time{}) != nil {
		f.Close()
		return nil
	}
	return &fileConn{f: f, rc: rc, local: local, remote: remote}
}

func (c *fileConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = relay.RawRead(int(fd), p)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.waitError("read", err)
	case errno != nil:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *fileConn) Write(p []byte) (int, error) {
	total := 0
	var errno error
	err := c.rc.Write(func(fd uintptr) bool {
		for total < len(p) {
			var n int
			n, errno = rawWrite(int(fd), p[total:])
			switch errno {
			case nil:
				total += n
			case unix.EINTR:
			case unix.EAGAIN:
				errno = nil
				return false // wait until the socket is writable
			default:
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return total, c.waitError("write", err)
	case errno != nil:
		return total, c.opError("write", os.NewSyscallError("write", errno))
	}
	return total, nil
}

// rawWrite is write(2) as a raw system call, for a non-blocking socket.
func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// waitError is opError for an error of the poller's wait: the deadline
// (os.ErrDeadlineExceeded, a timeout) or the file closed meanwhile, the
// only two it returns for a pollable socket.
func (c *fileConn) waitError(op string, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		err = net.ErrClosed
	}
	return c.opError(op, err)
}

// Close closes the socket.
func (c *fileConn) Close() error { return c.opError("close", c.f.Close()) }

// CloseWrite shuts down the sending side (a FIN), as TCPConn.CloseWrite.
func (c *fileConn) CloseWrite() error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return c.opError("close", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return c.opError("close", err)
	}
	return c.opError("close", os.NewSyscallError("shutdown", serr))
}

// LocalAddr returns the address the client connected to.
func (c *fileConn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.local) }

// RemoteAddr returns the client's address.
func (c *fileConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

func (c *fileConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *fileConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *fileConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// SyscallConn returns the socket's raw connection.
func (c *fileConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// opError turns an os.File error into the *net.OpError a *net.TCPConn
// returns; end of stream and nil pass unchanged.
func (c *fileConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// closeSilently is relay.CloseSilently for either kind of clientConn.
func closeSilently(c clientConn, reset bool) {
	if tc, ok := c.(*net.TCPConn); ok {
		relay.CloseSilently(tc, reset)
		return
	}
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if reset {
				unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				return
			}
			unix.Shutdown(int(fd), unix.SHUT_WR)
			discardQueuedFD(int(fd))
		})
	}
	c.Close()
}

// discardQueuedFD reads and drops the bytes already in a non-blocking
// socket's receive queue (at most 256 KiB), as relay.CloseFD does before
// closing: a close with unread bytes would send a reset.
func discardQueuedFD(fd int) {
	var buf [16 << 10]byte
	for range 16 {
		n, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT)
		if err != nil || n <= 0 {
			return
		}
	}
}
