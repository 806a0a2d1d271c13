package relay

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is the TCP connection under a server-side crypto/tls.Conn that a
// Parker may relay once its handshake is done (NewTLSPair). Until then it
// is its *net.TCPConn: reads and writes wait in Go's poller. Once parked,
// neither ever waits, so that crypto/tls can run on a loop's goroutine:
//
//   - Read returns what the socket holds, or ErrWouldBlock when it holds
//     nothing. ErrWouldBlock is a temporary net.Error, and crypto/tls keeps
//     a record it has read in part and reads on at the next call after a
//     temporary error (readRecordOrCCS); any other error it keeps for good.
//   - Write writes what the socket takes and keeps the rest in out, to be
//     written when the socket is writable again; it reports everything
//     written, because crypto/tls treats a short write as the end of the
//     connection. The loop writes no more through the TLS connection while
//     out holds bytes, so out holds at most one write's records (a chunk's,
//     gathered into one write: see toTLS), and is released as soon as it
//     is empty.
type Socket struct {
	Conn
	parked bool
	fd     int
	out    []byte
	// While parked, the buffers of bytes on the move: out is in outBuf
	// when gathered, plain (the client's cleartext not yet written to the
	// upstream) in plainBuf.
	outBuf    *[tlsOut]byte
	gathering bool
	plain     []byte
	plainBuf  *[tlsChunk]byte
}

// NewSocket returns c as a Socket, for tls.Server (directly or under a
// wrapper that calls Socket's Read and Write).
func NewSocket(c Conn) *Socket { return &Socket{Conn: c, fd: -1} }

// Conn is what a Socket needs of a client's connection: a *net.TCPConn,
// or another net.Conn over a TCP socket that can half-close and give its
// descriptor.
type Conn interface {
	net.Conn
	CloseWrite() error
	SyscallConn() (syscall.RawConn, error)
}

// ErrWouldBlock is what a parked Socket's Read returns when the socket
// holds no bytes: a temporary net.Error, which crypto/tls does not keep.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "relay: socket would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// Read reads the socket; see Socket.
func (s *Socket) Read(p []byte) (int, error) {
	if !s.parked {
		return s.Conn.Read(p)
	}
	for {
		n, err := RawRead(s.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, ErrWouldBlock
		case err != nil:
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes to the socket; see Socket.
func (s *Socket) Write(p []byte) (int, error) {
	if !s.parked {
		return s.Conn.Write(p)
	}
	if s.gathering {
		// A chunk's records, written at once by flush.
		s.out = append(s.out, p...)
		return len(p), nil
	}
	if len(s.out) == 0 {
		n, err := writeFD(s.fd, p)
		if err != nil {
			return n, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
		}
		p = p[n:]
		if len(p) == 0 {
			return n, nil
		}
		// Room for this write's records and no more: out is let go once
		// written, and a write is at most one buffer's worth.
		s.out = make([]byte, 0, len(p))
	}
	s.out = append(s.out, p...)
	return len(p), nil
}

// flush writes what Write kept back, as far as the socket takes it, and
// lets the buffer go once it is all written.
func (s *Socket) flush() error {
	n, err := writeFD(s.fd, s.out)
	s.out = s.out[n:]
	if len(s.out) == 0 {
		s.out = nil
		if s.outBuf != nil {
			recordBufs.Put(s.outBuf)
			s.outBuf = nil
		}
	}
	return err
}

// gather makes the records crypto/tls writes next wait in out, in a pooled
// buffer, until flush writes them all at once. out is empty.
func (s *Socket) gather() {
	if s.outBuf == nil {
		s.outBuf = recordBufs.Get().(*[tlsOut]byte)
	}
	s.out = s.outBuf[:0]
	s.gathering = true
}

// writeFD writes p to a non-blocking socket until it is all written or the
// socket is full (not an error).
func writeFD(fd int, p []byte) (int, error) {
	total := 0
	for total < len(p) {
		n, err := rawWrite(fd, p[total:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return total, nil
		case err != nil:
			return total, err
		}
		total += n
	}
	return total, nil
}

// readFD reads a non-blocking socket; ok is false when it holds nothing.
func readFD(fd int, p []byte) (n int, ok bool, err error) {
	for {
		n, err := RawRead(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, false, nil
		}
		return n, true, err
	}
}

// NewTLSPair prepares for Park a terminated client connection and its
// upstream connection. tc is a server-side crypto/tls.Conn whose handshake
// is complete, over sock (directly or through a wrapper calling sock's
// Read and Write); upstream is a plain TCP or Unix connection. The loop
// decrypts the client's bytes and encrypts the upstream's itself, on its
// goroutine, when a socket says it can move some, so that an idle pair
// holds no goroutine and no buffer. The rules are Pipe's: the client's end
// of stream (close_notify, or a FIN at a record boundary) half-closes the
// upstream, the upstream's end of stream sends the client close_notify,
// and the idle timeout. done and the ownership of the connections are as
// for NewPair.
func NewTLSPair(tc *tls.Conn, sock *Socket, upstream net.Conn, idle time.Duration, done func(Result)) *Pair {
	pr := NewPair(tc, upstream, idle, done)
	pr.tls, pr.sock = tc, sock
	return pr
}

// park turns sock non-blocking for the loop: from here on it is the loop's.
func (s *Socket) park() (int, error) {
	fd, err := rawFD(s.Conn)
	if err != nil {
		return -1, err
	}
	s.fd, s.parked = fd, true
	return fd, nil
}

// tlsChunk is how much cleartext a TLS pair moves per turn each way: four
// full records. The client's records are decrypted into one buffer of it
// and written to the upstream in one write; as much of the upstream's
// bytes is read at once, encrypted into records gathered in one buffer
// (tlsOut) and written to the client in one write. Both buffers come from
// pools while bytes move and go back as soon as they are written.
const (
	tlsChunk = 64 << 10
	tlsOut   = tlsChunk + 4*(5+1+16) + 1024 // the records' headers, content types and tags
)

var (
	plainBufs  = sync.Pool{New: func() any { return new([tlsChunk]byte) }}
	recordBufs = sync.Pool{New: func() any { return new([tlsOut]byte) }}
)

// progressTLS moves what it can both ways for a pair whose client side is
// crypto/tls: a chunk each way in turns, so that a direction that always
// has bytes (a bulk download) does not hold up the other (the upload)
// until its socket fills, and until both would block or wait for room.
func (l *loop) progressTLS(pr *Pair) {
	for !pr.finished {
		more := l.fromTLS(pr)
		if pr.finished {
			return
		}
		if !l.toTLS(pr) && !more {
			return
		}
	}
}

// fromTLS moves a chunk of the client's bytes to the upstream: decrypts
// what the client's socket holds, up to tlsChunk of cleartext, and writes
// it to the upstream in one write. Cleartext the upstream cannot take yet
// stays in the Socket's plain, and nothing more is decrypted until it is
// written (EPOLLOUT on the upstream resumes). It reports whether it
// stopped with a full chunk, before the client's socket would block.
func (l *loop) fromTLS(pr *Pair) (more bool) {
	hf := &pr.halves[0]
	s := pr.sock
	up := pr.fds[1]
	for turn := false; !hf.done && !pr.finished; turn = true {
		if len(s.plain) > 0 {
			n, err := writeFD(up, s.plain)
			if n > 0 {
				s.plain = s.plain[n:]
				hf.moved += int64(n)
				pr.touch(l)
			}
			if err != nil {
				l.fail(pr, 1)
				return false
			}
			if len(s.plain) > 0 {
				return false
			}
		}
		if s.plainBuf != nil {
			plainBufs.Put(s.plainBuf)
			s.plainBuf, s.plain = nil, nil
		}
		if hf.eof {
			hf.done = true
			if hf.broken {
				l.fail(pr, 0)
				return false
			}
			if pr.halves[1].done {
				l.finish(pr)
				return false
			}
			rawShutdownWrite(up)
			return false
		}
		if turn {
			return more
		}
		// Decrypt up to a chunk: crypto/tls gives a record's cleartext
		// per Read, and reads the socket only when it holds no whole
		// record.
		s.plainBuf = plainBufs.Get().(*[tlsChunk]byte)
		var err error
		n := 0
		for n < len(s.plainBuf) && err == nil {
			var m int
			m, err = pr.tls.Read(s.plainBuf[n:])
			n += m
		}
		s.plain = s.plainBuf[:n]
		switch {
		case err == nil:
			more = true
		case errors.Is(err, ErrWouldBlock):
			if n == 0 {
				plainBufs.Put(s.plainBuf)
				s.plainBuf, s.plain = nil, nil
				// A post-handshake message (a KeyUpdate) may have made
				// crypto/tls answer; toTLS writes what waits in out.
				return false // EPOLLIN on the client resumes
			}
		default:
			// io.EOF: close_notify, or a FIN at a record boundary. Anything
			// else (a bad record, a FIN inside one, a reset) ends both
			// directions once what was decrypted is delivered.
			hf.eof, hf.broken = true, err != io.EOF
			if pr.first == 0 {
				pr.first = fromClient
			}
		}
	}
	return false
}

// toTLS moves a chunk of the upstream's bytes to the client: reads up to
// tlsChunk from the upstream's socket and writes it through crypto/tls,
// whose records are gathered (Socket.gather) and written to the client in
// one write. Records the client's socket does not take yet wait in the
// Socket, and nothing more is read from the upstream until they are
// written (EPOLLOUT on the client resumes). The upstream's end of stream
// sends close_notify, as Pipe's CloseWrite does. It reports whether it
// stopped after a chunk, before the upstream's socket would block.
func (l *loop) toTLS(pr *Pair) (more bool) {
	hf := &pr.halves[1]
	s := pr.sock
	for turn := false; !pr.finished; turn = true {
		if len(s.out) > 0 {
			if err := s.flush(); err != nil {
				l.fail(pr, 0)
				return false
			}
			if len(s.out) > 0 {
				return false
			}
		}
		if hf.done {
			return false
		}
		if hf.eof {
			if !hf.closing {
				hf.closing = true
				pr.tls.CloseWrite()
				continue
			}
			hf.done = true
			if pr.halves[0].done {
				l.finish(pr)
			}
			return false
		}
		if turn {
			// The read may not have emptied the upstream's socket: the
			// next turn reads until it would block (edge-triggered).
			return true
		}
		buf := plainBufs.Get().(*[tlsChunk]byte)
		n, ok, err := readFD(pr.fds[1], buf[:])
		if !ok {
			plainBufs.Put(buf)
			return false // EPOLLIN on the upstream resumes
		}
		if err != nil || n == 0 {
			plainBufs.Put(buf)
			if pr.first == 0 {
				pr.first = fromUpstream
			}
			if err != nil {
				l.fail(pr, 1)
				return false
			}
			hf.eof = true
			continue
		}
		s.gather()
		_, err = pr.tls.Write(buf[:n])
		s.gathering = false
		plainBufs.Put(buf)
		if err != nil {
			l.fail(pr, 0)
			return false
		}
		hf.moved += int64(n)
		pr.touch(l)
	}
	return false
}
