package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Parker relays connection pairs without a goroutine or a buffer for any
// of them. Each of its loops (one per core, each one goroutine) holds its
// pairs' sockets in an epoll set, edge-triggered, and moves bytes only when
// a socket says it can: splice from the readable side into a kernel pipe
// and from the pipe into the other side. A pipe is taken from a small pool
// when bytes arrive and given back once they are delivered, so an idle
// pair holds its two sockets and a few hundred bytes of bookkeeping, and
// nothing else.
//
// The semantics are Pipe's: both directions until both have ended, a
// half-close passed on, a reset or error ending both, and the idle timeout.
type Parker struct {
	loops []*loop
	next  atomic.Uint32
}

// NewParker starts n loops (at least 1). Close stops them.
func NewParker(n int) (*Parker, error) {
	p := &Parker{}
	for range max(n, 1) {
		l, err := newLoop()
		if err != nil {
			p.Close()
			return nil, err
		}
		p.loops = append(p.loops, l)
		go l.run()
	}
	return p, nil
}

// Close cuts the pairs still parked (their done functions run) and stops
// the loops. It returns when every loop has stopped.
func (p *Parker) Close() {
	for _, l := range p.loops {
		l.post(func(l *loop) { l.stopping = true })
	}
	for _, l := range p.loops {
		<-l.stopped
	}
}

// Pair is a client connection and its upstream connection, relayed by a
// Parker.
type Pair struct {
	// conns are the sides' connections when they came as net.Conn (nil
	// for a raw descriptor, which the loop closes itself).
	conns [2]net.Conn
	idle  time.Duration
	done  func(Result)

	// A pair made by NewDialPair is connecting until its upstream socket
	// becomes writable: pending (the PROXY header and the client's first
	// bytes, of which pendingClient are the client's) is written then, and
	// dialTimeout bounds the wait.
	connecting    bool
	pending       []byte
	pendingBuf    []byte // pending as given, released once written
	pendingClient int
	dialTimeout   time.Duration
	dialErr       error
	// Dialed, if set before Park, is called from the loop once the
	// connect of a NewDialPair pair has succeeded (nil) or failed.
	Dialed func(error)

	// A pair made by NewTLSPair: its client side is tls over sock.
	tls  *tls.Conn
	sock *Socket

	cut  atomic.Bool
	loop atomic.Pointer[loop]

	// Set before the pair is registered, then read by the loop.
	fds [2]int // client, upstream
	// Slot and finished change under the loop's mu; the rest is the
	// loop's alone.
	halves     [2]half
	first      int32 // the side that ended first (fromClient, fromUpstream)
	idled      bool
	last       time.Time
	slot       int32 // in the loop's table; -1 when not registered
	listed     bool  // in the loop's idle list
	prev, next *Pair // the loop's list of pairs with the same idle timeout
	finished   bool  // set under the loop's mu, by the loop (or by Park on a closed one)
}

// half is one direction: bytes from side src to side 1-src.
type half struct {
	pipe    *pipe // holds bytes read but not yet delivered; nil when none are
	pending int   // bytes in pipe
	// readable: src may hold bytes or its end. An event on src sets it, a
	// read that would block clears it, and no read is tried without it:
	// the epoll set is edge-triggered, so a socket that becomes readable
	// again reports it.
	readable bool
	eof      bool // src has ended; passed on once pending is delivered
	// hup: src has reported its FIN (EPOLLRDHUP without an error), so
	// every byte before it is queued: a read that leaves the queue empty
	// has reached the end, and no read is needed to learn it.
	hup bool
	// bulk: a read filled the loop's buffer, so src sends more than a
	// few bytes at a time: splice through a pipe from now on, rather than
	// copy through the buffer.
	bulk  bool
	done  bool // dst has been half-closed
	moved int64

	// A TLS pair's halves (parktls.go); their buffers are in the Socket.
	broken  bool // src ended with an error: both directions end once its cleartext is written
	closing bool // close_notify is written (to the client)
}

// NewPair prepares client and upstream for Park. idle is the idle timeout;
// done is called once, from a loop's goroutine, when the relay has ended
// and both connections are closed. From NewPair on, the caller must neither
// use nor close the connections: Cut is how to end the pair early.
func NewPair(client, upstream net.Conn, idle time.Duration, done func(Result)) *Pair {
	return &Pair{conns: [2]net.Conn{client, upstream}, fds: [2]int{-1, -1}, idle: idle, done: done, slot: -1}
}

// NewDialPair prepares for Park a raw client socket and a raw upstream
// socket whose non-blocking connect is in progress. The loop finishes the
// connect: once the upstream socket is writable it writes pending (the
// PROXY header and the client's first bytes, the last pendingClient bytes
// of it, counted in ToUpstream) and relays as NewPair's pairs do. A connect
// that fails or takes longer than dialTimeout ends the pair with
// Result.DialErr set; the client socket is then closed without a byte, as
// CloseSilently does. The pair owns both descriptors and pending from here
// on (a buffer from PendingBuffer goes back to its pool).
func NewDialPair(client, upstream int, pending []byte, pendingClient int, dialTimeout, idle time.Duration, done func(Result)) *Pair {
	return &Pair{
		fds: [2]int{client, upstream}, idle: idle, done: done, slot: -1,
		connecting: true, pending: pending, pendingBuf: pending, pendingClient: pendingClient, dialTimeout: dialTimeout,
	}
}

// Park hands pr to one of p's loops and returns at once. It registers the
// pair's sockets in the loop's epoll set itself, so that parking costs
// the loop no wake-up of its own: the sockets' first events (a socket is
// writable when registered) introduce the pair to the loop.
func (p *Parker) Park(pr *Pair) {
	l := p.loops[int(p.next.Add(1))%len(p.loops)]
	pr.loop.Store(l)
	var err error
	if pr.sock != nil {
		pr.fds[0], err = pr.sock.park()
	}
	for side, c := range pr.conns {
		if c != nil && err == nil && pr.fds[side] < 0 {
			pr.fds[side], err = rawFD(c)
		}
	}
	l.mu.Lock()
	if l.closed {
		// No loop to finish it: the Parker is closed.
		pr.finished = true
		l.mu.Unlock()
		pr.closeSides()
		pr.done(pr.result())
		return
	}
	defer l.mu.Unlock()
	if err != nil || pr.cut.Load() {
		l.postLocked(func(l *loop) { l.finish(pr) })
		return
	}
	if n := len(l.free); n > 0 {
		pr.slot = l.free[n-1]
		l.free = l.free[:n-1]
		l.pairs[pr.slot] = pr
	} else {
		pr.slot = int32(len(l.pairs))
		l.pairs = append(l.pairs, pr)
	}
	for side, fd := range pr.fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: pr.slot, Pad: int32(side)}
		if err := rawEpollAdd(l.epfd, fd, &ev); err != nil {
			l.postLocked(func(l *loop) { l.finish(pr) })
			return
		}
	}
}

// Cut ends a pair at once (a drain deadline), closing both connections;
// its done function still runs. A pair not yet parked is cut as it is
// parked.
func (pr *Pair) Cut() {
	if pr.cut.Swap(true) {
		return
	}
	if l := pr.loop.Load(); l != nil {
		l.post(func(l *loop) { l.finish(pr) })
	}
}

// rawFD returns the descriptor of c, which must stay open (the loop is the
// only one to close it).
func rawFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("relay: %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// loop is one goroutine and its epoll set.
type loop struct {
	epfd, wake int // the epoll set; an eventfd that interrupts its wait
	// set is epfd in Go's network poller: the loop waits there, like any
	// goroutine reading a socket, rather than in epoll_wait on a thread
	// of its own that would hold a P until the scheduler takes it back.
	set   *os.File
	setRC syscall.RawConn
	// buf carries the bytes of copyOnce.
	buf []byte
	// Owned by the loop's goroutine, for wait.
	events   []unix.EpollEvent
	n        int                // events ready
	poll     func(uintptr) bool // pollSet
	deadline time.Time          // the poller's deadline for set

	mu     sync.Mutex
	tasks  []func(*loop) // from other goroutines, run by the loop
	closed bool          // the loop has stopped: its descriptors are gone
	pairs  []*Pair       // by slot: registered by Park, removed by finish
	free   []int32       // slots to reuse

	// Owned by the loop's goroutine.
	lists    map[time.Duration]*pairList
	pipes    []*pipe   // idle, empty
	pipeUse  time.Time // when the pool was last used
	stopping bool
	stopped  chan struct{}
}

// pairList is a loop's pairs with one idle timeout, least recently active
// first, so expiry only looks at the head.
type pairList struct{ head, tail *Pair }

type pipe struct{ r, w int }

// maxIdlePipes bounds the pipes a loop keeps for reuse; each is two
// descriptors and up to 64 KiB of kernel memory while full. Pipes not used
// for pipeLinger are closed, so a quiet gateway holds only its sockets.
const (
	maxIdlePipes = 8
	pipeLinger   = time.Second
)

// maxIdleLists bounds the empty idle lists a loop keeps (one per idle
// timeout in use, so few): making one again for the next pair allocates.
const maxIdleLists = 16

// wakeSlot marks the eventfd's events.
const wakeSlot = -1

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("relay: epoll add: %w", err)
	}
	set := os.NewFile(uintptr(epfd), "relay-epoll")
	rc, err := set.SyscallConn()
	if err != nil {
		set.Close()
		unix.Close(wake)
		return nil, fmt.Errorf("relay: epoll in the poller: %w", err)
	}
	l := &loop{epfd: epfd, wake: wake, set: set, setRC: rc, lists: map[time.Duration]*pairList{}, stopped: make(chan struct{})}
	l.events = make([]unix.EpollEvent, 128)
	l.buf = make([]byte, smallCopy)
	l.poll = l.pollSet
	return l, nil
}

// wait returns the next events, waiting in Go's poller until the epoll
// set has some or the next idle deadline. The poller's deadline is moved
// only when it would wake the loop too late (not at all, or after the
// deadline now due): waking early costs one more look at the lists, while
// resetting the poller's timer on every wake costs each wake.
func (l *loop) wait() int {
	var deadline time.Time
	if ms := l.timeout(); ms >= 0 {
		deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
	}
	if set := l.deadline; set.IsZero() != deadline.IsZero() || deadline.Before(set) || (!set.IsZero() && !time.Now().Before(set)) {
		l.set.SetReadDeadline(deadline)
		l.deadline = deadline
	}
	l.n = 0
	err := l.setRC.Read(l.poll)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		panic(fmt.Sprintf("relay: waiting for the epoll set: %v", err))
	}
	return l.n
}

// pollSet takes the events ready in the epoll set without waiting; it is
// the function setRC.Read calls (a method value made once, so waiting
// allocates nothing).
func (l *loop) pollSet(fd uintptr) bool {
	var err error
	l.n, err = rawEpollPoll(int(fd), l.events)
	if err != nil && err != unix.EINTR {
		panic(fmt.Sprintf("relay: epoll_wait: %v", err))
	}
	return l.n > 0
}

// post runs f on the loop's goroutine.
func (l *loop) post(f func(*loop)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.postLocked(f)
}

func (l *loop) postLocked(f func(*loop)) {
	if l.closed {
		return
	}
	l.tasks = append(l.tasks, f)
	one := [8]byte{1}
	unix.Write(l.wake, one[:])
}

func (l *loop) run() {
	defer close(l.stopped)
	events := l.events
	prs := make([]*Pair, len(events))
	for {
		n := l.wait()
		// Pairs are looked up once per batch; one the batch finishes is
		// known by its finished flag, whoever has its slot since.
		l.mu.Lock()
		for i, ev := range events[:n] {
			prs[i] = nil
			if ev.Fd != wakeSlot {
				prs[i] = l.pairs[ev.Fd]
			}
		}
		l.mu.Unlock()
		for i, ev := range events[:n] {
			if ev.Fd == wakeSlot {
				l.runTasks()
			} else if pr := prs[i]; pr != nil {
				l.service(pr, int(ev.Pad), ev.Events)
			}
			prs[i] = nil
		}
		l.expire(time.Now())
		if l.stopping {
			l.mu.Lock()
			left := slices.Clone(l.pairs)
			l.mu.Unlock()
			for _, pr := range left {
				if pr != nil {
					l.finish(pr)
				}
			}
			for _, p := range l.pipes {
				unix.Close(p.r)
				unix.Close(p.w)
			}
			l.mu.Lock()
			l.closed = true
			unix.Close(l.wake)
			l.set.Close()
			l.mu.Unlock()
			return
		}
	}
}

func (l *loop) runTasks() {
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, f := range tasks {
		f(l)
	}
}

// service moves what it can after an event on pr's side: its reading half
// (side → other) and its writing half (other → side).
func (l *loop) service(pr *Pair, side int, events uint32) {
	if pr.finished {
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		pr.halves[side].readable = true
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLERR) == unix.EPOLLRDHUP {
		pr.halves[side].hup = true
	}
	if !pr.listed {
		// The pair's first event: Park registered it.
		pr.listed = true
		pr.last = time.Now()
		l.list(pr.timeout()).push(pr)
	}
	if pr.connecting {
		if side == 0 || !l.connected(pr, events) {
			// An event on the client (side 0): its bytes wait in its
			// socket until the upstream is connected; connected reads
			// them then.
			return
		}
	}
	if pr.tls != nil {
		// Both directions, in turns (parktls.go).
		l.progressTLS(pr)
	} else {
		l.progress(pr, side)
		if !pr.finished {
			l.progress(pr, 1-side)
		}
	}
	if !pr.finished && events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 && pr.halves[side].eof {
		// The peer on side reset after it had finished sending: nothing
		// more can be delivered to it.
		l.fail(pr, side)
	}
}

// progress moves bytes of half h (from side h to side 1-h) until one of
// its sockets would block, then half-closes the destination once the
// source has ended and everything is delivered.
func (l *loop) progress(pr *Pair, h int) {
	hf := &pr.halves[h]
	src, dst := pr.fds[h], pr.fds[1-h]
	for !hf.done && !pr.finished {
		if hf.pending > 0 {
			n, err := rawSplice(hf.pipe.r, dst, hf.pending)
			if err == unix.EAGAIN {
				return // EPOLLOUT on dst resumes
			}
			if err != nil {
				l.fail(pr, 1-h)
				return
			}
			hf.pending -= int(n)
			hf.moved += int64(n)
			pr.touch(l)
			if hf.pending > 0 {
				continue
			}
			l.putPipe(hf.pipe)
			hf.pipe = nil
		}
		if hf.eof {
			hf.done = true
			if pr.halves[1-h].done || (h == 1 && pr.clientSettled()) {
				// Both directions are over, or the upstream ended first
				// and the client has everything: closing sends dst its
				// FIN, no shutdown needed.
				l.finish(pr)
				return
			}
			rawShutdownWrite(dst)
			return
		}
		if !hf.readable {
			return // an event on src resumes
		}
		if !hf.bulk {
			if !l.copyOnce(pr, h) {
				return
			}
			continue
		}
		if hf.pipe == nil {
			p, err := l.getPipe()
			if err != nil {
				l.fail(pr, h)
				return
			}
			hf.pipe = p
		}
		n, err := rawSplice(src, hf.pipe.w, 1<<20)
		switch {
		case err == unix.EAGAIN:
			hf.readable = false
			l.putPipe(hf.pipe)
			hf.pipe = nil
			return // EPOLLIN on src resumes
		case err != nil:
			l.fail(pr, h)
			return
		case n == 0:
			hf.ended(pr, h)
			l.putPipe(hf.pipe)
			hf.pipe = nil
		default:
			hf.pending = int(n)
		}
	}
}

// copyOnce moves what src holds, up to the loop's buffer, through the
// buffer: a read and a write, against a splice's two system calls and its
// pipe, which is cheaper for the few bytes most connections send at a
// time. A read that fills the buffer turns the half to splicing. What dst
// does not take goes into a pipe, to be spliced out as the splice path's
// bytes are. It reports whether the half may go on.
func (l *loop) copyOnce(pr *Pair, h int) bool {
	hf := &pr.halves[h]
	n, err := rawRecv(pr.fds[h], l.buf)
	switch {
	case err == unix.EAGAIN:
		hf.readable = false
		return false // EPOLLIN on src resumes
	case err != nil:
		l.fail(pr, h)
		return false
	case n == 0:
		hf.ended(pr, h)
		return true
	case n == len(l.buf):
		hf.bulk = true
	case hf.hup:
		// The queue is empty and the FIN was behind these bytes.
		hf.ended(pr, h)
	default:
		// The queue is empty: new bytes raise a new event.
		hf.readable = false
	}
	b := l.buf[:n]
	w, err := rawWrite(pr.fds[1-h], b)
	if err == unix.EAGAIN {
		w, err = 0, nil
	}
	if err != nil {
		l.fail(pr, 1-h)
		return false
	}
	if w > 0 {
		hf.moved += int64(w)
		pr.touch(l)
	}
	if w == n {
		return true
	}
	// An empty pipe takes far more than the buffer holds.
	p, err := l.getPipe()
	if err == nil {
		var m int
		if m, err = rawWrite(p.w, b[w:]); err == nil && m < n-w {
			err = unix.EAGAIN
		}
		if err != nil {
			unix.Close(p.r)
			unix.Close(p.w)
		}
	}
	if err != nil {
		l.fail(pr, h)
		return false
	}
	hf.pipe, hf.pending = p, n-w
	return true
}

// ended records that half h's source has ended.
func (hf *half) ended(pr *Pair, h int) {
	hf.eof = true
	if pr.first == 0 {
		pr.first = int32(h) + 1
	}
}

// clientSettled reports, once the upstream has ended and everything it
// sent is in the client's socket, whether the pair may end at once, as
// nginx ends it, rather than half-close the client and wait for its FIN: so
// when no byte from the client is waiting to be read or delivered, and the
// client has acknowledged every byte sent to it (SIOCOUTQ 0). Closing a
// socket with unread bytes sends RST and drops what its send queue holds,
// and bytes the client sends after the close are answered with RST, which
// drops what is still unacknowledged: with both queues empty neither can
// cut a byte of the answer. Otherwise (a large answer still in flight, a
// slow reader) the client is half-closed and the pair waits for its end.
//
// What it trades: bytes the client sends after the upstream's end no
// longer reach the upstream (its read side may still be open). A TLS
// stream ends with the server's close_notify; the client's only bytes
// after it are its own close_notify, which the upstream does not need.
func (pr *Pair) clientSettled() bool {
	c := &pr.halves[0]
	if c.readable || c.pending > 0 || c.eof || pr.connecting {
		return false
	}
	fd := pr.fds[0]
	out, err := rawIoctlInt(fd, unix.SIOCOUTQ)
	if err != nil || out != 0 {
		return false
	}
	in, err := rawIoctlInt(fd, unix.SIOCINQ)
	return err == nil && in == 0
}

// touch records activity: the pair moves to the back of its idle list.
func (pr *Pair) touch(l *loop) {
	pr.last = time.Now()
	if pr.listed {
		ls := l.list(pr.idle)
		ls.remove(pr)
		ls.push(pr)
	}
}

// fail ends a pair after an error on side (a reset, a refused write).
func (l *loop) fail(pr *Pair, side int) {
	if pr.first == 0 {
		pr.first = int32(side) + 1
	}
	l.finish(pr)
}

// finish closes both connections, gives back the pair's pipes and slot,
// and reports the result.
func (l *loop) finish(pr *Pair) {
	if pr.finished {
		return
	}
	for i := range pr.halves {
		if p := pr.halves[i].pipe; p != nil {
			// Undelivered bytes: the pipe cannot be reused.
			unix.Close(p.r)
			unix.Close(p.w)
			pr.halves[i].pipe = nil
		}
	}
	if pr.listed {
		l.list(pr.idle).remove(pr)
		pr.listed = false
	}
	if pr.pendingBuf != nil {
		releasePending(pr.pendingBuf)
		pr.pending, pr.pendingBuf = nil, nil
	}
	// Under mu, so that Park never registers a descriptor this closes.
	l.mu.Lock()
	pr.finished = true
	if pr.slot >= 0 {
		l.pairs[pr.slot] = nil
		l.free = append(l.free, pr.slot)
		pr.slot = -1
	}
	pr.closeSides()
	l.mu.Unlock()
	pr.done(pr.result())
}

// closeSides closes both sockets: through their net.Conn when they came as
// one, else directly. A client whose upstream could not be reached is
// closed without a byte, as CloseSilently does.
func (pr *Pair) closeSides() {
	if pr.connecting {
		switch {
		case pr.sock != nil:
			// A terminated client (NewTLSDialPair): no close_notify,
			// the socket closed as CloseFD does, through its Conn.
			if pr.fds[0] >= 0 {
				rawShutdownWrite(pr.fds[0])
				discardQueuedFD(pr.fds[0])
			}
			pr.sock.Conn.Close()
			pr.conns[0] = nil
		case pr.conns[0] == nil && pr.fds[0] >= 0:
			CloseFD(pr.fds[0])
		}
		pr.fds[0] = -1
	}
	for side, c := range pr.conns {
		if c != nil {
			c.Close()
		} else if pr.fds[side] >= 0 {
			RawClose(pr.fds[side])
		}
	}
}

// dialFailed ends a connecting pair whose connect failed.
func (l *loop) dialFailed(pr *Pair, err error) {
	pr.dialErr = err
	if pr.Dialed != nil {
		pr.Dialed(err)
	}
	l.finish(pr)
}

// timeout is the pair's deadline from its last activity: the dial timeout
// while connecting, then the idle timeout.
func (pr *Pair) timeout() time.Duration {
	if pr.connecting {
		return pr.dialTimeout
	}
	return pr.idle
}

// connected finishes a connecting pair's dial after an event on its
// upstream socket: on success it writes the pending bytes, moves the pair
// to its idle list and reports true (both halves may then progress); on a
// failed connect it finishes the pair. It reports false while the connect
// is still in progress.
func (l *loop) connected(pr *Pair, events uint32) bool {
	up := pr.fds[1]
	if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		errno, err := unix.GetsockoptInt(up, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && errno != 0 {
			err = syscall.Errno(errno)
		}
		if err == nil {
			err = errors.New("connection closed while connecting")
		}
		l.dialFailed(pr, err)
		return false
	}
	if events&unix.EPOLLOUT == 0 {
		return false
	}
	for len(pr.pending) > 0 {
		n, err := rawWrite(up, pr.pending)
		if err == unix.EAGAIN {
			// A fresh socket's buffer takes a hello; if not, the next
			// EPOLLOUT resumes.
			return false
		}
		if err != nil {
			l.dialFailed(pr, err)
			return false
		}
		if sent := len(pr.pending) - n; sent < pr.pendingClient {
			pr.halves[0].moved += int64(pr.pendingClient - sent)
			pr.pendingClient = sent
		}
		pr.pending = pr.pending[n:]
	}
	releasePending(pr.pendingBuf)
	pr.pending, pr.pendingBuf = nil, nil
	pr.connecting = false
	if pr.Dialed != nil {
		pr.Dialed(nil)
	}
	if pr.listed {
		l.list(pr.dialTimeout).remove(pr)
	}
	pr.last = time.Now()
	l.list(pr.idle).push(pr)
	pr.listed = true
	// The client's bytes that arrived while connecting: its edge has
	// passed, so read them now (a terminated pair: both ways, in turns).
	if pr.tls != nil {
		l.progressTLS(pr)
	} else {
		l.progress(pr, 0)
	}
	return !pr.finished
}

func (pr *Pair) result() Result {
	return Result{
		ToUpstream:          pr.halves[0].moved,
		ToClient:            pr.halves[1].moved,
		Idled:               pr.idled && pr.dialErr == nil,
		UpstreamClosedFirst: pr.first == fromUpstream && !pr.idled && pr.dialErr == nil,
		DialErr:             pr.dialErr,
	}
}

// timeout is how long the loop may wait, in milliseconds: until the
// earliest idle deadline, or for ever (-1).
func (l *loop) timeout() int {
	if l.stopping {
		return 0
	}
	ms := -1
	now := time.Now()
	if len(l.pipes) > 0 {
		ms = int(max(l.pipeUse.Add(pipeLinger).Sub(now), 0)/time.Millisecond) + 1
	}
	for idle, ls := range l.lists {
		if ls.head == nil {
			continue
		}
		d := max(ls.head.last.Add(idle).Sub(now), 0)
		if m := int(d/time.Millisecond) + 1; ms < 0 || m < ms {
			ms = m
		}
	}
	return ms
}

// expire ends the pairs idle for their timeout, and closes the pooled
// pipes when none has been used for pipeLinger.
func (l *loop) expire(now time.Time) {
	if len(l.pipes) > 0 && now.Sub(l.pipeUse) >= pipeLinger {
		for _, p := range l.pipes {
			unix.Close(p.r)
			unix.Close(p.w)
		}
		l.pipes = l.pipes[:0]
	}
	for idle, ls := range l.lists {
		for pr := ls.head; pr != nil && now.Sub(pr.last) >= idle; pr = ls.head {
			if pr.connecting {
				l.dialFailed(pr, fmt.Errorf("connect: timed out after %v", idle))
				continue
			}
			pr.idled = true
			l.finish(pr)
		}
		if ls.head == nil && len(l.lists) > maxIdleLists {
			delete(l.lists, idle)
		}
	}
}

func (l *loop) list(idle time.Duration) *pairList {
	ls := l.lists[idle]
	if ls == nil {
		ls = &pairList{}
		l.lists[idle] = ls
	}
	return ls
}

func (ls *pairList) push(pr *Pair) {
	pr.prev, pr.next = ls.tail, nil
	if ls.tail != nil {
		ls.tail.next = pr
	} else {
		ls.head = pr
	}
	ls.tail = pr
}

func (ls *pairList) remove(pr *Pair) {
	if pr.prev != nil {
		pr.prev.next = pr.next
	} else if ls.head == pr {
		ls.head = pr.next
	}
	if pr.next != nil {
		pr.next.prev = pr.prev
	} else if ls.tail == pr {
		ls.tail = pr.prev
	}
	pr.prev, pr.next = nil, nil
}

func (l *loop) getPipe() (*pipe, error) {
	l.pipeUse = time.Now()
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe keeps an empty pipe for reuse, or closes it.
func (l *loop) putPipe(p *pipe) {
	l.pipeUse = time.Now()
	if len(l.pipes) < maxIdlePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	unix.Close(p.r)
	unix.Close(p.w)
}
