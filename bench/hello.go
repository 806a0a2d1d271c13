package bench

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Hello is one ClientHello as a client sends it: the raw TLS records, which
// the passthrough load generator replays byte for byte.
type Hello struct {
	Name       string // variant name in the results, from the file name
	ServerName string // the SNI inside the hello, which the systems route on
	Bytes      []byte
}

// Server names the harness routes on. They sit under .test (RFC 6761) so they
// can never leak to a real resolver.
const (
	connectName = "connect.bench.test"
	bulkName    = "bulk.bench.test"
	idleName    = "idle.bench.test"
	mtlsName    = "mtls.bench.test"
)

// benchHellos are the captured hellos passthrough-connect replays, as the
// issue asks: Go's post-quantum hello (one segment) and Chromium's (about
// 2 KB, two segments). The other captures in testdata/hellos exist for the
// parser's tests (no SNI, odd names).
var benchHellos = []string{"go-pq.bin", "chromium.bin"}

// loadHellos reads the benchHellos from dir (testdata/hellos). When the
// folder holds none of them, it falls back to a hello made by Go's own
// client, so passthrough-connect still runs, and says so in the variant
// name.
func loadHellos(dir string) ([]Hello, error) {
	var files []string
	for _, name := range benchHellos {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			files = append(files, filepath.Join(dir, name))
		}
	}
	var hellos []Hello
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read hello: %w", err)
		}
		name, err := helloServerName(b)
		if err != nil {
			return nil, fmt.Errorf("hello %s: %w", f, err)
		}
		if name == "" {
			// A hello without SNI cannot be routed by any system; it
			// belongs to the refusal tests, not to a throughput run.
			continue
		}
		hellos = append(hellos, Hello{
			Name:       strings.TrimSuffix(filepath.Base(f), ".bin"),
			ServerName: name,
			Bytes:      b,
		})
	}
	if len(hellos) > 0 {
		return hellos, nil
	}
	b, err := goClientHello(connectName, nil)
	if err != nil {
		return nil, err
	}
	return []Hello{{Name: "go-client-generated", ServerName: connectName, Bytes: b}}, nil
}

// errHelloCaptured stops the handshakes that helloServerName and
// goClientHello drive once they have what they came for.
var errHelloCaptured = errors.New("hello captured")

// helloServerName returns the server name Go's TLS server sees in the hello,
// the same name every system under test routes on.
func helloServerName(hello []byte) (string, error) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		// net.Pipe is synchronous: write from another goroutine, and stop
		// once the server has stopped reading.
		client.Write(hello)
		client.Close()
	}()
	var name string
	srv := tls.Server(server, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			name = chi.ServerName
			return nil, errHelloCaptured
		},
	})
	srv.SetDeadline(time.Now().Add(5 * time.Second))
	err := srv.Handshake()
	server.Close()
	if !errors.Is(err, errHelloCaptured) {
		return "", fmt.Errorf("not a ClientHello Go accepts: %v", err)
	}
	return name, nil
}

// goClientHello returns the records Go's TLS client sends first for
// serverName with the given key-share preferences (nil: Go's defaults,
// post-quantum X25519MLKEM768 first).
func goClientHello(serverName string, curves []tls.CurveID) ([]byte, error) {
	rc := &recordConn{}
	c := tls.Client(rc, &tls.Config{
		ServerName:       serverName,
		CurvePreferences: curves,
		NextProtos:       []string{"http/1.1"},
	})
	if err := c.Handshake(); !errors.Is(err, errHelloCaptured) {
		return nil, fmt.Errorf("make Go ClientHello: %v", err)
	}
	return rc.written, nil
}

// recordConn is a net.Conn that keeps what is written and fails the first
// read, which ends a client handshake right after its ClientHello.
type recordConn struct {
	net.Conn
	written []byte
}

func (c *recordConn) Write(b []byte) (int, error) {
	c.written = append(c.written, b...)
	return len(b), nil
}
func (c *recordConn) Read([]byte) (int, error)         { return 0, errHelloCaptured }
func (c *recordConn) Close() error                     { return nil }
func (c *recordConn) SetDeadline(time.Time) error      { return nil }
func (c *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recordConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *recordConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// readHello consumes one complete ClientHello handshake message from r,
// across as many TLS records as it spans, and returns how many bytes it
// read. The upstreams use it so they read exactly what the client sent
// before answering, whatever system forwarded it.
func readHello(r *bufio.Reader) (int, error) {
	var hdr [5]byte
	need, got, total := -1, 0, 0
	for need < 0 || got < need {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return total, fmt.Errorf("read record header: %w", err)
		}
		if hdr[0] != 22 {
			return total, fmt.Errorf("record type %d is not a handshake", hdr[0])
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || n > 1<<14+256 {
			return total, fmt.Errorf("record length %d", n)
		}
		if need < 0 {
			b, err := r.Peek(4)
			if err != nil || len(b) < 4 {
				return total, fmt.Errorf("read handshake header: %v", err)
			}
			if b[0] != 1 {
				return total, fmt.Errorf("handshake type %d is not a ClientHello", b[0])
			}
			need = 4 + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
		}
		if _, err := r.Discard(n); err != nil {
			return total, fmt.Errorf("read record: %w", err)
		}
		got += n
		total += 5 + n
	}
	return total, nil
}
