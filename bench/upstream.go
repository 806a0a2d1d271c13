package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// What the upstreams answer. Every system under test forwards to the same
// upstreams, so the bytes and the work behind them are identical for all.
var (
	// passthroughReply is the passthrough upstream's fixed answer to a hello.
	passthroughReply = []byte("edgegate-bench passthrough upstream: hello received\n")
	// httpResponse is the mtls upstream's answer to each request.
	httpResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")
)

// upstreamKind says what an upstream does once it has read the PROXY header.
type upstreamKind int

const (
	// upConnect reads the hello, writes passthroughReply and closes: the
	// server side closes first, so TIME_WAIT never piles up on the client's
	// ephemeral ports during a connection flood.
	upConnect upstreamKind = iota
	// upBulk reads the hello, then discards whatever arrives and sends
	// bulkChunk over and over until the client goes away.
	upBulk
	// upIdle reads the hello, writes passthroughReply and keeps the
	// connection open until the client closes it.
	upIdle
	// upHTTP answers each HTTP/1.1 request with httpResponse, and closes
	// after a request that asks for Connection: close. A request for
	// /bulk (mtls-bulk) turns the connection into upBulk's two streams.
	upHTTP
)

var upstreamKindNames = [...]string{"connect", "bulk", "idle", "http"}

// bulkChunk is what the bulk upstream and client write per call.
var bulkChunk = bytes.Repeat([]byte("edgegate-bench bulk data 0123456789abcdef\n"), 1560)

// upstream is one cheap server behind the systems under test. It requires a
// PROXY header (v1 or v2) on every connection, which proves the connection
// came through a system configured as the scenario says.
type upstream struct {
	kind upstreamKind
	ln   net.Listener

	served  atomic.Int64 // connections that got their answer
	failed  atomic.Int64 // connections that broke the protocol
	noProxy atomic.Int64 // of those, without a PROXY header
	bytesIn atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startUpstream(kind upstreamKind) (*upstream, error) {
	return startUpstreamOn(kind, "127.0.0.1")
}

// startUpstreamOn starts an upstream on host (a free port), for systems that
// cannot reach the harness's loopback (those in a network namespace).
func startUpstreamOn(kind upstreamKind, host string) (*upstream, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("listen for %s upstream: %w", upstreamKindNames[kind], err)
	}
	u := &upstream{kind: kind, ln: ln, conns: map[net.Conn]struct{}{}}
	u.wg.Add(1)
	go u.acceptLoop()
	return u, nil
}

func (u *upstream) addr() string { return u.ln.Addr().String() }

// awaitOpen waits (up to a minute) until u holds at least n connections.
func (u *upstream) awaitOpen(ctx context.Context, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		u.mu.Lock()
		open := len(u.conns)
		u.mu.Unlock()
		switch {
		case open >= n:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("the upstream holds %d connections, want %d", open, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *upstream) acceptLoop() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or a transient error: back off briefly
			// instead of spinning.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			c.Close()
			continue
		}
		u.conns[c] = struct{}{}
		u.wg.Add(1)
		u.mu.Unlock()
		go u.serve(c)
	}
}

// close stops the upstream and every connection it still holds.
func (u *upstream) close() {
	u.mu.Lock()
	u.closed = true
	u.ln.Close()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

func (u *upstream) serve(c net.Conn) {
	defer func() {
		c.Close()
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
		u.wg.Done()
	}()
	// Generous: a system under heavy load may take a while to forward the
	// first bytes. Idle and bulk connections clear the deadline below.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReaderSize(c, 16<<10)
	if _, err := proxyproto.Read(r); err != nil {
		u.failed.Add(1)
		if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			u.noProxy.Add(1)
		}
		return
	}
	var err error
	switch u.kind {
	case upConnect, upIdle, upBulk:
		err = u.servePassthrough(c, r)
	case upHTTP:
		// A connection that came through a system may stay idle before
		// its first request (idle-connections, mtls fresh and resumed),
		// and ends when the system closes it.
		c.SetReadDeadline(time.Time{})
		err = u.serveHTTP(c, r)
	}
	if err != nil {
		u.failed.Add(1)
	}
}

func (u *upstream) servePassthrough(c net.Conn, r *bufio.Reader) error {
	n, err := readHello(r)
	u.bytesIn.Add(int64(n))
	if err != nil {
		return err
	}
	switch u.kind {
	case upConnect:
		if _, err := c.Write(passthroughReply); err != nil {
			return err
		}
		u.served.Add(1)
		return nil
	case upIdle:
		if _, err := c.Write(passthroughReply); err != nil {
			return err
		}
		u.served.Add(1)
		c.SetReadDeadline(time.Time{})
		_, err := io.Copy(io.Discard, r)
		return err
	}
	u.serveBulk(c, r)
	return nil
}

// serveBulk discards what arrives on c and sends bulkChunk over and over,
// until either side ends.
func (u *upstream) serveBulk(c net.Conn, r *bufio.Reader) {
	u.served.Add(1)
	c.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := c.Write(bulkChunk); err != nil {
				return
			}
		}
	}()
	n64, _ := io.Copy(io.Discard, r)
	u.bytesIn.Add(n64)
	c.Close()
	<-done
}

func (u *upstream) serveHTTP(c net.Conn, r *bufio.Reader) error {
	first := true
	for {
		closeAfter, bulk, err := readRequest(r)
		if err != nil {
			if !first && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
				return nil
			}
			return err
		}
		if bulk {
			u.serveBulk(c, r)
			return nil
		}
		if _, err := c.Write(httpResponse); err != nil {
			return err
		}
		u.served.Add(1)
		if closeAfter {
			return nil
		}
		first = false
	}
}

// bulkRequest starts mtls-bulk's streams: the HTTP upstream answers it by
// sending bulkChunk over and over while discarding what the client sends.
var bulkRequest = []byte("GET /bulk HTTP/1.1\r\nHost: " + mtlsName + "\r\nUser-Agent: edgegate-bench\r\n\r\n")

// readRequest reads one HTTP/1.1 request head (the harness never sends a
// body) and reports whether it asked for Connection: close, and whether
// it asked for /bulk.
func readRequest(r *bufio.Reader) (closeAfter, bulk bool, err error) {
	for n := 0; ; n++ {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return false, false, err
		}
		if n > 64 {
			return false, false, errors.New("request head too long")
		}
		if n == 0 && bytes.HasPrefix(line, []byte("GET /bulk ")) {
			bulk = true
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			if n == 0 {
				return false, false, errors.New("empty request line")
			}
			return closeAfter, bulk, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(line), []byte("Connection: close")) {
			closeAfter = true
		}
	}
}

// upstreams is the set every system forwards to, one per kind.
type upstreams struct {
	connect, bulk, idle, http *upstream
}

func startUpstreams() (*upstreams, error) {
	var us upstreams
	for _, p := range []struct {
		dst  **upstream
		kind upstreamKind
	}{{&us.connect, upConnect}, {&us.bulk, upBulk}, {&us.idle, upIdle}, {&us.http, upHTTP}} {
		u, err := startUpstream(p.kind)
		if err != nil {
			us.close()
			return nil, err
		}
		*p.dst = u
	}
	return &us, nil
}

func (us *upstreams) close() {
	for _, u := range []*upstream{us.connect, us.bulk, us.idle, us.http} {
		if u != nil {
			u.close()
		}
	}
}
