package relay

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of the data path, made as raw system calls: each is on
// a non-blocking descriptor and returns at once, so the Go scheduler need
// not be told (entersyscall/exitsyscall). Told, it lets sysmon take the P
// away from a loop whose loopback connect or close runs long (the
// receiving side's TCP work happens inside it), and that hand-off, with the
// thread wake-ups around it, cost more per connection than the calls
// themselves (perf: nanosleep, futex and sched_yield, about 7% of the
// process's CPU in passthrough-connect). Nothing here may block.

// errno returns nil for 0, else the error as the unix package gives it.
func errno(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Splice moves up to n bytes from in to out without blocking.
func rawSplice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(r), errno(e)
}

// RawRead is read(2) on a non-blocking descriptor.
func RawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), errno(e)
}

// rawWrite is write(2) on a non-blocking descriptor.
func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), errno(e)
}

// RawClose closes a socket or pipe that has no SO_LINGER timeout (with one,
// close waits).
func RawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// rawShutdownWrite sends a socket's FIN.
func rawShutdownWrite(fd int) {
	unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
}

// rawIoctlInt is an ioctl(2) that returns an int (SIOCINQ, SIOCOUTQ).
func rawIoctlInt(fd int, req uint) (int, error) {
	var v int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&v)))
	return int(v), errno(e)
}

// rawEpollAdd registers fd in an epoll set.
func rawEpollAdd(epfd, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno(e)
}

// rawEpollPoll returns the events ready in an epoll set, without waiting.
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(r), errno(e)
}

// rawRecv is recvfrom(2) on a non-blocking socket.
func rawRecv(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	return int(r), errno(e)
}

// rawRecvDiscard reads and drops what a socket holds, up to len(p).
func rawRecvDiscard(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_DONTWAIT, 0, 0)
	return int(r), errno(e)
}

// rawConnectStart makes a non-blocking TCP socket with TCP_NODELAY and
// starts its connect to addr (EINPROGRESS is not an error).
func rawConnectStart(addr netip.AddrPort) (int, error) {
	ip := addr.Addr().Unmap()
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	var sa unsafe.Pointer
	var salen uintptr
	family := unix.AF_INET
	p := addr.Port()
	port := [2]byte{byte(p >> 8), byte(p)}
	if ip.Is4() {
		sa4.Family = unix.AF_INET
		sa4.Addr = ip.As4()
		sa4.Port = *(*uint16)(unsafe.Pointer(&port))
		sa, salen = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		family = unix.AF_INET6
		sa6.Family = unix.AF_INET6
		sa6.Addr = ip.As16()
		sa6.Port = *(*uint16)(unsafe.Pointer(&port))
		sa, salen = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, &opError{"socket", e}
	}
	fd := int(r)
	one := int32(1)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
		RawClose(fd)
		return -1, &opError{"TCP_NODELAY", e}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), salen); e != 0 && e != unix.EINPROGRESS {
		RawClose(fd)
		return -1, &opError{"connect", e}
	}
	return fd, nil
}

// opError names the system call that failed.
type opError struct {
	op  string
	err unix.Errno
}

func (e *opError) Error() string { return e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }
