package relay

import (
	"net"
	"syscall"
)

// CloseSilently ends a connection without writing a byte: FIN, or RST when
// reset is set (SO_LINGER 0). Closing a socket with unread bytes queued
// makes the kernel send RST, which a client can tell from a plain close (a
// TLS 1.3 client sends its request right after its Finished). So the FIN
// goes first (shutdown), and whatever the client already sent is read and
// dropped, without waiting for more, before the close.
func CloseSilently(c *net.TCPConn, reset bool) {
	if reset {
		c.SetLinger(0)
		c.Close()
		return
	}
	c.CloseWrite()
	discardQueued(c)
	c.Close()
}

// discardQueued reads and drops the bytes already in c's receive queue
// (at most 256 KiB), never blocking.
func discardQueued(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var buf [16 << 10]byte
	for range 16 {
		n := 0
		rc.Read(func(fd uintptr) bool {
			n, _, _ = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_DONTWAIT)
			return true
		})
		if n <= 0 {
			return
		}
	}
}

// CloseFD is CloseSilently (without reset) for a bare non-blocking socket.
func CloseFD(fd int) {
	rawShutdownWrite(fd)
	discardQueuedFD(fd)
	RawClose(fd)
}

// discardQueuedFD is discardQueued for a raw non-blocking socket.
func discardQueuedFD(fd int) {
	var buf [16 << 10]byte
	for range 16 {
		n, err := rawRecvDiscard(fd, buf[:])
		if err != nil || n <= 0 {
			return
		}
	}
}
