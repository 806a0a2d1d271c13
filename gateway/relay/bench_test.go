package relay

import (
	"io"
	"testing"
	"time"
)

// BenchmarkRelayBulk relays b.N bytes from client to upstream (64 KiB
// writes) through each relay; compare the two in one run:
//
//	go test -run X -bench RelayBulk -benchmem ./gateway/relay/
func BenchmarkRelayBulk(b *testing.B) {
	for _, rl := range relays(nil) {
		b.Run(rl.name, func(b *testing.B) {
			gwClient, client := tcpPair(b)
			gwUp, upstream := tcpPair(b)
			done := make(chan Result, 1)
			go func() { done <- rl.relay(gwClient, gwUp, time.Minute) }()
			chunk := make([]byte, 64<<10)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for range b.N {
					client.Write(chunk)
				}
				client.CloseWrite()
			}()
			io.Copy(io.Discard, upstream)
			b.StopTimer()
			upstream.Close()
			client.Close()
			<-done
		})
	}
}
