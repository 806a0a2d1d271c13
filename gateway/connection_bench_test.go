package gateway

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPassthroughConnection makes one passthrough connection per
// operation through a real gateway on loopback: connect, the go-pq
// ClientHello, the upstream's two-byte answer, close, as the harness's
// passthrough-connect does. The client and the upstream use bare blocking
// system calls that allocate nothing, so allocs/op is the gateway's own
// heap allocations per connection:
//
//	go test -run X -bench PassthroughConnection -benchmem ./gateway/
func BenchmarkPassthroughConnection(b *testing.B) {
	hello := readHello(b, "go-pq.bin")
	up, upAddr := rawListener(b)
	answer := []byte("ok")
	go func() {
		buf := make([]byte, 64<<10)
		for {
			fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(up), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
			if e != 0 {
				return
			}
			// The PROXY v2 header (16 bytes and the addresses), then the
			// hello: read until the hello's last byte is in.
			got := 0
			for got < len(hello)+16 {
				n, err := unix.Read(int(fd), buf[got:])
				if n <= 0 || err != nil {
					break
				}
				got += n
				if got >= 16 && got >= 16+int(buf[14])<<8+int(buf[15])+len(hello) {
					break
				}
			}
			unix.Write(int(fd), answer)
			unix.Close(int(fd))
		}
	}()
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s := startServerLogging(b, b.TempDir(), yamlf(`
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - {name: go, hosts: [go.example.test], mode: passthrough, upstream: {address: %q, proxy_protocol: v2}}
`, upAddr.String()), log)
	gw := netip.MustParseAddrPort(s.addr(b, "127.0.0.1:0"))
	sa := &unix.SockaddrInet4{Port: int(gw.Port()), Addr: gw.Addr().As4()}
	buf := make([]byte, 64)
	connect := func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sa); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Write(fd, hello); err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			n, err := unix.Read(fd, buf[got:])
			if n <= 0 || err != nil {
				break
			}
			got += n
		}
		if got != len(answer) {
			b.Fatalf("client got %d bytes, want %d", got, len(answer))
		}
	}
	for range 100 {
		connect() // warm up: pools, the relay's pipes, the metrics' children
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		connect()
	}
}

// rawListener is a blocking listening socket on loopback made with bare
// system calls, closed when the benchmark ends.
func rawListener(b *testing.B) (int, netip.AddrPort) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		unix.Shutdown(fd, unix.SHUT_RDWR)
		unix.Close(fd)
	})
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	return fd, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
}
