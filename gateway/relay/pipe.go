// Package relay moves a connection's bytes once edgegate has decided where
// they go: it dials the upstream, copies both directions (spliced in the
// kernel between TCP sockets) with half-close and an idle timeout, and
// closes client connections without a byte when they are refused.
package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// closeWriter is a conn that can half-close (send FIN, keep reading).
type closeWriter interface {
	CloseWrite() error
}

// Result is what Pipe saw of a connection.
type Result struct {
	ToUpstream, ToClient int64
	// Idled is set when the connection was closed for timeouts.idle.
	Idled bool
	// UpstreamClosedFirst is set when the upstream ended its direction (FIN
	// or reset) before the client ended its own.
	UpstreamClosedFirst bool
	// DialErr is set when a pair made by NewDialPair could not connect to
	// its upstream (refused, unreachable, timed out): nothing reached the
	// upstream and the client was closed without a byte.
	DialErr error
}

// Pipe copies bytes both ways between client and upstream until both
// directions have ended, propagating a half-close from each side to the
// other. Between two *net.TCPConn (or a TCP and a Unix conn) io.Copy uses
// splice, so passthrough bytes never enter user space.
//
// A connection on which no byte moves either way for idle is closed. The
// copy loops wake every idle/4 (a read deadline) to check, so a connection
// is cut between idle and 1.25×idle after its last byte; the check resumes a
// copy after the deadline, which loses nothing (a timed-out read took no
// bytes).
func Pipe(client, upstream net.Conn, idle time.Duration) Result {
	p := &pipeState{idle: idle, tick: idle / 4}
	p.touch()
	var r Result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.ToClient = p.copyHalf(client, upstream, fromUpstream)
	}()
	r.ToUpstream = p.copyHalf(upstream, client, fromClient)
	wg.Wait()
	client.Close()
	upstream.Close()
	r.Idled = p.idled.Load()
	r.UpstreamClosedFirst = p.first.Load() == fromUpstream && !r.Idled
	return r
}

// The directions, for pipeState.first.
const (
	fromClient   = 1
	fromUpstream = 2
)

type pipeState struct {
	idle, tick time.Duration
	last       atomic.Int64 // unix nanoseconds of the last byte seen either way
	idled      atomic.Bool
	first      atomic.Int32 // the side that ended its direction first
}

func (p *pipeState) touch() { p.last.Store(time.Now().UnixNano()) }

// copyHalf copies src to dst until src ends, then half-closes dst. An error
// (reset, idle timeout) closes both conns, which ends the other half too.
// from names src's side. The side that ended first is recorded before
// anything is passed on or closed: the other half ends because of it, and
// may get there first.
func (p *pipeState) copyHalf(dst, src net.Conn, from int32) int64 {
	var total int64
	for {
		src.SetReadDeadline(time.Now().Add(p.tick))
		n, err := copyAvailable(dst, src)
		total += n
		if n > 0 {
			p.touch()
		}
		if err == nil {
			// src sent FIN: pass it on and leave the other direction open.
			p.first.CompareAndSwap(0, from)
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			return total
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Since(time.Unix(0, p.last.Load())) < p.idle {
				continue
			}
			p.idled.Store(true)
		} else if !errors.Is(err, net.ErrClosed) {
			// A reset or another failure of this half. net.ErrClosed is
			// the other half having closed both conns: it recorded why.
			p.first.CompareAndSwap(0, from)
		}
		src.Close()
		dst.Close()
		return total
	}
}

// copyAvailable is io.Copy, except between TCP sockets, where it first waits
// for src to be readable and then splices exactly the bytes queued. A
// splice that waits for data holds a kernel pipe (two descriptors) all the
// while, so an idle passthrough connection would hold six descriptors
// instead of two; waiting in the poller first holds none. It returns
// (0, nil) at end of stream, like io.Copy, and the deadline's error when
// src stays silent.
func copyAvailable(dst, src net.Conn) (int64, error) {
	tsrc, ok := src.(*net.TCPConn)
	if !ok {
		return io.Copy(dst, src)
	}
	rc, err := tsrc.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}
	var total int64
	for {
		queued, eof, err := waitReadable(rc)
		if err != nil {
			return total, err
		}
		if eof {
			return total, nil
		}
		var n int64
		if queued <= smallCopy {
			// A pipe costs more syscalls than it saves on a few bytes.
			n, err = copyQueued(dst, tsrc, queued)
		} else {
			// A LimitedReader over the *net.TCPConn still splices.
			n, err = io.Copy(dst, &io.LimitedReader{R: tsrc, N: int64(queued)})
		}
		total += n
		if err != nil {
			return total, err
		}
	}
}

// smallCopy is the most bytes copied through user space rather than
// spliced: one read and one write, against a splice's two and its pipe.
const smallCopy = 16 << 10

var copyBufs = sync.Pool{New: func() any { return new([smallCopy]byte) }}

// copyQueued reads the queued bytes (they are there: the read does not
// block) and writes them to dst.
func copyQueued(dst io.Writer, src *net.TCPConn, queued int) (int64, error) {
	buf := copyBufs.Get().(*[smallCopy]byte)
	defer copyBufs.Put(buf)
	n, err := src.Read(buf[:queued])
	if n > 0 {
		if _, werr := dst.Write(buf[:n]); werr != nil {
			return 0, werr
		}
	}
	if err == io.EOF {
		err = nil
	}
	return int64(n), err
}

// waitReadable blocks (in the poller, honouring the read deadline) until the
// socket has bytes queued or has reached end of stream, and says how many
// bytes are queued.
func waitReadable(rc syscall.RawConn) (queued int, eof bool, err error) {
	var peekErr error
	var one [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// Bytes queued is the common case and costs one ioctl; only an
		// empty queue needs the peek that tells "nothing yet" from the end.
		if q, e := unix.IoctlGetInt(int(fd), unix.SIOCINQ); e == nil && q > 0 {
			queued = q
			return true
		}
		n, _, e := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case e == syscall.EAGAIN || e == syscall.EINTR:
			return false // not yet: wait for readability
		case e != nil:
			peekErr = e
		case n == 0:
			eof = true
		default:
			// Bytes arrived between the ioctl and the peek: count them
			// all, or the first of them would go on alone (a one-byte
			// TLS record, for a terminated connection).
			queued = 1
			if q, e := unix.IoctlGetInt(int(fd), unix.SIOCINQ); e == nil && q > 1 {
				queued = q
			}
		}
		return true
	})
	if err == nil {
		err = peekErr
	}
	return queued, eof, err
}
