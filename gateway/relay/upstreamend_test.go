package relay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// TestUpstreamEndEndsPair: when the upstream answers and closes, and the
// client has acknowledged the answer and sent nothing more, the parked
// pair ends at once, as nginx ends it: the client gets the answer and its
// end of stream, and the pair's result arrives while the client has not
// closed yet (before, the pair waited for the client's FIN).
func TestUpstreamEndEndsPair(t *testing.T) {
	p, err := NewParker(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 50 {
		gwClient, client := tcpPair(t)
		gwUp, upstream := tcpPair(t)
		client.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan Result, 1)
		p.Park(NewPair(gwClient, gwUp, time.Minute, func(r Result) { done <- r }))
		upstream.Write([]byte("reply"))
		upstream.Close()
		got, err := io.ReadAll(client)
		if err != nil || string(got) != "reply" {
			t.Fatalf("client read %q, %v; want the reply and EOF", got, err)
		}
		var r Result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the pair waited for the client's end after the upstream's")
		}
		if !r.UpstreamClosedFirst || r.ToClient != 5 || r.ToUpstream != 0 {
			t.Fatalf("result %+v; want upstream first, 5 bytes to the client", r)
		}
		client.Close()
	}
}

// TestUpstreamEndSlowReader: an answer the client has not read yet when
// the upstream ends it is delivered whole, and the client's bytes sent after
// that still reach the upstream: the relay half-closes the client rather
// than close it while its send queue holds bytes (a closed socket answers
// the client's next bytes with a reset, which drops the rest of the
// answer).
func TestUpstreamEndSlowReader(t *testing.T) {
	for _, rl := range relays(t) {
		t.Run(rl.name, func(t *testing.T) {
			for range 5 {
				gwClient, client := tcpPair(t)
				gwUp, upstream := tcpPair(t)
				// The answer waits in the gateway's socket: more than the
				// client's window, less than the gateway's send buffer.
				client.SetReadBuffer(64 << 10)
				gwClient.SetWriteBuffer(2 << 20)
				client.SetDeadline(time.Now().Add(20 * time.Second))
				upstream.SetDeadline(time.Now().Add(20 * time.Second))
				answer := randomBytes(t, 1<<20)
				done := make(chan Result, 1)
				go func() { done <- rl.relay(gwClient, gwUp, time.Minute) }()
				if _, err := upstream.Write(answer); err != nil {
					t.Fatal(err)
				}
				upstream.CloseWrite()
				gotUp := make(chan []byte, 1)
				go func() {
					b, _ := io.ReadAll(upstream)
					gotUp <- b
				}()
				// The gateway has the whole answer and its end.
				eventually.Within(t, 10*time.Second, func() error {
					if n := outq(t, upstream); n != 0 {
						return fmt.Errorf("%d bytes of the answer not yet acknowledged by the gateway", n)
					}
					return nil
				})
				client.Write([]byte("late request"))
				got, err := io.ReadAll(client)
				if err != nil || !bytes.Equal(got, answer) {
					t.Fatalf("client read %d bytes, %v; want the %d-byte answer and EOF", len(got), err, len(answer))
				}
				client.Close()
				if b := <-gotUp; string(b) != "late request" {
					t.Fatalf("upstream got %q after its end, want the client's late request", b)
				}
				<-done
			}
		})
	}
}

// outq is a socket's SIOCOUTQ: bytes sent, or to send, not yet acknowledged.
func outq(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRelaySmallWritesSlowReader: small writes, which the loop copies
// through its buffer rather than splicing, to a client that reads only
// once the sender has finished: what the client's socket cannot take waits
// in a pipe, and every byte arrives in order.
func TestRelaySmallWritesSlowReader(t *testing.T) {
	for _, rl := range relays(t) {
		t.Run(rl.name, func(t *testing.T) {
			gwClient, client := tcpPair(t)
			gwUp, upstream := tcpPair(t)
			client.SetReadBuffer(4 << 10)
			gwClient.SetWriteBuffer(4 << 10)
			client.SetDeadline(time.Now().Add(20 * time.Second))
			upstream.SetDeadline(time.Now().Add(20 * time.Second))
			answer := randomBytes(t, 64<<10)
			done := make(chan Result, 1)
			go func() { done <- rl.relay(gwClient, gwUp, time.Minute) }()
			// More than the client's socket and the gateway's hold, in
			// writes of 100 bytes, each read on its own when the relay
			// keeps up.
			for b := answer; len(b) > 0; b = b[min(100, len(b)):] {
				if _, err := upstream.Write(b[:min(100, len(b))]); err != nil {
					t.Fatal(err)
				}
			}
			upstream.CloseWrite()
			got, err := io.ReadAll(client)
			if err != nil || !bytes.Equal(got, answer) {
				t.Fatalf("client read %d bytes, %v; want the %d-byte answer and EOF", len(got), err, len(answer))
			}
			client.Close()
			if r := <-done; r.ToClient != int64(len(answer)) {
				t.Fatalf("result %+v; want %d bytes to the client", r, len(answer))
			}
		})
	}
}
