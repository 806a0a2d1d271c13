package relay

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of one loopback TCP connection.
func tcpPair(t testing.TB) (near, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a.(*net.TCPConn), d.(*net.TCPConn)
}

// TestPipeFirstToEnd: Result.UpstreamClosedFirst names the side that ended
// first, however the two copying goroutines are scheduled. The side that
// ends second ends because of the first (the relayed FIN, or its conns
// closed after a reset), and often returns first; run each case many times.
func TestPipeFirstToEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(client, upstream *net.TCPConn) // the peers' part
		want bool
	}{
		{"upstream FIN", func(client, upstream *net.TCPConn) {
			upstream.Close()
			io.ReadAll(client)
			client.Close()
		}, true},
		{"upstream RST", func(client, upstream *net.TCPConn) {
			upstream.SetLinger(0)
			upstream.Close()
			io.ReadAll(client)
			client.Close()
		}, true},
		{"client FIN", func(client, upstream *net.TCPConn) {
			client.CloseWrite()
			io.ReadAll(upstream)
			upstream.Close()
			io.ReadAll(client)
			client.Close()
		}, false},
		{"client RST", func(client, upstream *net.TCPConn) {
			client.SetLinger(0)
			client.Close()
			io.ReadAll(upstream)
			upstream.Close()
		}, false},
	} {
		for _, rl := range relays(t) {
			t.Run(rl.name+"/"+tc.name, func(t *testing.T) {
				for range 100 {
					gwClient, client := tcpPair(t)
					gwUp, upstream := tcpPair(t)
					client.SetDeadline(time.Now().Add(10 * time.Second))
					upstream.SetDeadline(time.Now().Add(10 * time.Second))
					go tc.end(client, upstream)
					r := rl.relay(gwClient, gwUp, time.Minute)
					if r.UpstreamClosedFirst != tc.want || r.Idled || r.ToClient != 0 || r.ToUpstream != 0 {
						t.Fatalf("relay = %+v; want UpstreamClosedFirst %v, nothing relayed", r, tc.want)
					}
				}
			})
		}
	}
}

// relayer is a way to relay two connections until both directions end.
type relayer struct {
	name  string
	relay func(client, upstream net.Conn, idle time.Duration) Result
}

// relays returns Pipe, and a Parker's Park waited for, so that every test
// of the relay's behaviour runs on both.
func relays(t testing.TB) []relayer {
	p, err := NewParker(2)
	if err != nil {
		panic(err)
	}
	if t != nil {
		t.Cleanup(p.Close)
	}
	return []relayer{
		{"pipe", Pipe},
		{"park", func(client, upstream net.Conn, idle time.Duration) Result {
			done := make(chan Result, 1)
			p.Park(NewPair(client, upstream, idle, func(r Result) { done <- r }))
			return <-done
		}},
	}
}
