package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// TestRelayBothWays sends data each way with half-closes in both orders,
// in one write and in many small ones, and checks every byte arrives, in
// order, with the counts in the result.
func TestRelayBothWays(t *testing.T) {
	for _, rl := range relays(t) {
		for _, size := range []int{1, 100, 70 << 10, 8 << 20} {
			t.Run(fmt.Sprintf("%s/%d", rl.name, size), func(t *testing.T) {
				gwClient, client := tcpPair(t)
				gwUp, upstream := tcpPair(t)
				up, down := randomBytes(t, size), randomBytes(t, size/2+1)
				done := make(chan Result, 1)
				go func() { done <- rl.relay(gwClient, gwUp, time.Minute) }()
				var wg sync.WaitGroup
				var gotUp, gotDown []byte
				wg.Go(func() {
					writeChunks(client, up)
					client.CloseWrite()
					gotDown, _ = io.ReadAll(client)
				})
				wg.Go(func() {
					gotUp, _ = io.ReadAll(upstream)
					writeChunks(upstream, down)
					upstream.CloseWrite()
				})
				wg.Wait()
				r := <-done
				if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
					t.Fatalf("upstream got %d bytes (sha %x), want %d; client got %d, want %d", len(gotUp), sha256.Sum256(gotUp), len(up), len(gotDown), len(down))
				}
				if r.ToUpstream != int64(len(up)) || r.ToClient != int64(len(down)) || r.Idled || r.UpstreamClosedFirst {
					t.Fatalf("result %+v; want %d up, %d down, client first", r, len(up), len(down))
				}
			})
		}
	}
}

// TestRelayIdle: a pair silent for the idle timeout is closed, and says
// so; activity in either direction keeps it open.
func TestRelayIdle(t *testing.T) {
	for _, rl := range relays(t) {
		t.Run(rl.name, func(t *testing.T) {
			gwClient, client := tcpPair(t)
			gwUp, upstream := tcpPair(t)
			done := make(chan Result, 1)
			start := time.Now()
			go func() { done <- rl.relay(gwClient, gwUp, 400*time.Millisecond) }()
			// Keep it busy for longer than the timeout.
			for range 4 {
				time.Sleep(200 * time.Millisecond) // pacing: activity below the timeout
				client.Write([]byte("x"))
				io.ReadFull(upstream, make([]byte, 1))
			}
			r := <-done
			if !r.Idled || r.ToUpstream != 4 {
				t.Fatalf("result %+v; want idled after 4 bytes", r)
			}
			if d := time.Since(start); d < 1200*time.Millisecond {
				t.Fatalf("closed after %v, before the last activity's timeout", d)
			}
			if _, err := client.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("client read after the idle close: %v, want EOF", err)
			}
		})
	}
}

// TestParkHoldsNoGoroutine parks many idle pairs: no goroutine is added for
// them, each holds its two descriptors and nothing else, and Cut ends them.
func TestParkHoldsNoGoroutine(t *testing.T) {
	p, err := NewParker(2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 200
	var peers []net.Conn
	pairs := make([]*Pair, 0, n)
	results := make(chan Result, n)
	type conns struct{ a, b net.Conn }
	var gw []conns
	for range n {
		gwClient, client := tcpPair(t)
		gwUp, upstream := tcpPair(t)
		peers = append(peers, client, upstream)
		gw = append(gw, conns{gwClient, gwUp})
	}
	defer func() {
		for _, c := range peers {
			c.Close()
		}
	}()
	goroutines, fds := runtime.NumGoroutine(), fdCount(t)
	for _, c := range gw {
		pr := NewPair(c.a, c.b, time.Hour, func(r Result) { results <- r })
		pairs = append(pairs, pr)
		p.Park(pr)
	}
	// Parked pairs still relay.
	peers[0].Write([]byte("ping"))
	buf := make([]byte, 4)
	peers[1].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peers[1], buf); err != nil || string(buf) != "ping" {
		t.Fatalf("a parked pair relayed %q, %v", buf, err)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Fatalf("%d goroutines with %d pairs parked, %d before", g, n, goroutines)
	}
	// At most one pipe pair per loop in the pool beyond the sockets.
	if got := fdCount(t); got > fds+2*maxIdlePipes*2 {
		t.Fatalf("%d descriptors with %d pairs parked, %d before", got, n, fds)
	}
	for _, pr := range pairs {
		pr.Cut()
	}
	for range n {
		select {
		case <-results:
		case <-time.After(10 * time.Second):
			t.Fatal("Cut did not end every pair")
		}
	}
	eventually.Within(t, 10*time.Second, func() error {
		if got := fdCount(t); got > fds-2*n+2*maxIdlePipes*2 {
			return fmt.Errorf("%d descriptors after cutting %d pairs, %d before they were parked", got, n, fds)
		}
		return nil
	})
}

// TestCutBeforePark: a pair cut before its loop takes it ends as it is
// parked, and its connections are closed.
func TestCutBeforePark(t *testing.T) {
	p, err := NewParker(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	gwClient, client := tcpPair(t)
	gwUp, _ := tcpPair(t)
	done := make(chan Result, 1)
	pr := NewPair(gwClient, gwUp, time.Hour, func(r Result) { done <- r })
	pr.Cut()
	p.Park(pr)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a pair cut before Park was never ended")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read: %v, want EOF", err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeChunks writes b in pieces of varying size, to exercise partial
// reads and writes.
func writeChunks(c net.Conn, b []byte) {
	for i, size := 0, 1; len(b) > 0; i++ {
		n := min(size, len(b))
		if _, err := c.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
		size = size*3 + i
		if size > 1<<20 {
			size = 1
		}
	}
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}
