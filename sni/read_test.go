package sni

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// loopbackPair returns both ends of a real TCP connection on 127.0.0.1.
func loopbackPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		accepted <- result{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		c.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}

// writeSegments writes data in chunks of at most seg bytes (0: one write).
// With TCP_NODELAY (Go's default) each write leaves as its own segment.
func writeSegments(c net.Conn, data []byte, seg int) error {
	if seg <= 0 {
		_, err := c.Write(data)
		return err
	}
	for len(data) > 0 {
		n := min(seg, len(data))
		if _, err := c.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// TestReadLoopback sends each vector over real TCP, in one write and in
// 1-byte segments, followed by application bytes. Read must return the same
// Hello as parsing from memory, a prefix byte-identical to the vector, and
// leave the bytes after the hello unread on the connection.
func TestReadLoopback(t *testing.T) {
	trailer := []byte("after the hello")
	for _, w := range vectors {
		for _, seg := range []int{0, 1} {
			name := w.file + "/one-write"
			if seg == 1 {
				name = w.file + "/1-byte-segments"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				wire := readVector(t, w.file)
				want, _, err := ReadFrom(bytes.NewReader(wire), 0)
				if err != nil {
					t.Fatal(err)
				}
				client, server := loopbackPair(t)
				writeErr := make(chan error, 1)
				go func() {
					err := writeSegments(client, wire, seg)
					if err == nil {
						_, err = client.Write(trailer)
					}
					writeErr <- err
				}()
				h, prefix, err := Read(server, Options{Timeout: 30 * time.Second})
				if err != nil {
					t.Fatalf("Read: %v (prefix %d bytes)", err, len(prefix))
				}
				if !bytes.Equal(prefix, wire) {
					t.Fatalf("prefix is %d bytes and differs from the %d-byte vector", len(prefix), len(wire))
				}
				if !reflect.DeepEqual(h, want) {
					t.Errorf("Hello over TCP = %+v\nfrom memory  = %+v", h, want)
				}
				checkHello(t, w, h, wire)
				if err := <-writeErr; err != nil {
					t.Fatal(err)
				}
				rest := make([]byte, len(trailer))
				if _, err := io.ReadFull(server, rest); err != nil || !bytes.Equal(rest, trailer) {
					t.Fatalf("bytes after the hello: %q, %v; want %q still unread", rest, err, trailer)
				}
			})
		}
	}
}

// TestReadCallsPerRecord: when the bytes are all there, a record costs two
// reads (its header, then its whole body), never one per byte.
func TestReadCallsPerRecord(t *testing.T) {
	for _, w := range vectors {
		wire := readVector(t, w.file)
		records := 0
		for rest := wire; len(rest) >= recordHeaderLen; records++ {
			rest = rest[min(len(rest), recordHeaderLen+(int(rest[3])<<8|int(rest[4]))):]
		}
		r := &segmentReader{data: wire}
		if _, _, err := ReadFrom(r, 0); err != nil {
			t.Fatalf("%s: %v", w.file, err)
		}
		if r.reads != 2*records {
			t.Errorf("%s: %d Read calls for %d records, want %d", w.file, r.reads, records, 2*records)
		}
	}
}

// TestReadClearsDeadline: after a successful Read with a timeout, the
// connection has no read deadline left, so a slow upstream exchange later
// is not cut by the hello timeout.
func TestReadClearsDeadline(t *testing.T) {
	wire := readVector(t, "curl.bin")
	client, server := loopbackPair(t)
	if _, err := client.Write(wire); err != nil {
		t.Fatal(err)
	}
	const timeout = 100 * time.Millisecond
	if _, _, err := Read(server, Options{Timeout: timeout}); err != nil {
		t.Fatal(err)
	}
	// Let the hello deadline pass; a deadline left in place would fail the
	// read below with a timeout whatever the scheduling.
	time.Sleep(3 * timeout)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := server.Read(b); err != nil {
		t.Fatalf("read after Read returned: %v (deadline not cleared)", err)
	}
}

// hello builds a ClientHello handshake message with the given extensions
// block (nil: no extensions block at all).
func hello(exts []byte) []byte {
	body := []byte{0x03, 0x03}
	body = append(body, make([]byte, 32)...)    // random
	body = append(body, 0)                      // session id
	body = append(body, 0x00, 0x02, 0x13, 0x01) // cipher suites
	body = append(body, 0x01, 0x00)             // compression
	if exts != nil {
		body = append(body, byte(len(exts)>>8), byte(len(exts)))
		body = append(body, exts...)
	}
	msg := []byte{handshakeTypeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(msg, body...)
}

// ext frames one extension.
func ext(typ uint16, data []byte) []byte {
	out := []byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}
	return append(out, data...)
}

// sniExt is a server_name extension with one host_name.
func sniExt(name string) []byte {
	entry := append([]byte{0, byte(len(name) >> 8), byte(len(name))}, name...)
	return ext(extServerName, append([]byte{byte(len(entry) >> 8), byte(len(entry))}, entry...))
}

// record wraps data in one TLS record.
func record(typ byte, vers uint16, data []byte) []byte {
	out := []byte{typ, byte(vers >> 8), byte(vers), byte(len(data) >> 8), byte(len(data))}
	return append(out, data...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestReadFailures covers each failure kind from memory, in one read and in
// 1-byte reads: the kind must not depend on segmentation, and the prefix
// must be what was read, in order.
func TestReadFailures(t *testing.T) {
	sslv2 := []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}
	goodMsg := hello(sniExt("a.example"))
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    error
		maxRead int // if > 0, with 1-byte reads the prefix must be at most this long
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0, ErrNotTLS, 5},
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), 0, ErrNotTLS, 5},
		{"sslv2 hello", sslv2, 0, ErrNotTLS, 5},
		{"random bytes", []byte{0x9c, 0x01, 0x77, 0x42, 0x00, 0x13}, 0, ErrNotTLS, 5},
		{"handshake type byte then not tls", []byte{0x16, 0x47, 0x45, 0x54, 0x20}, 0, ErrNotTLS, 5},
		{"alert record", record(recordTypeAlert, 0x0303, []byte{2, 40}), 0, ErrNotHandshake, 5},
		{"application data", record(recordTypeApplicationData, 0x0303, []byte("hello")), 0, ErrNotHandshake, 5},
		{"change cipher spec", record(recordTypeChangeCipherSpec, 0x0303, []byte{1}), 0, ErrNotHandshake, 5},
		{"server hello", record(recordTypeHandshake, 0x0303, append([]byte{2, 0, 0, 2}, 3, 3)), 0, ErrNotHandshake, 6},
		{"record version 0x0305", record(recordTypeHandshake, 0x0305, goodMsg), 0, ErrMalformed, 5},
		{"empty record", record(recordTypeHandshake, 0x0301, nil), 0, ErrMalformed, 5},
		{"record over 2^14", []byte{0x16, 0x03, 0x01, 0x40, 0x01, 0x01}, 1 << 20, ErrMalformed, 5},
		{"handshake length cuts the extensions", func() []byte {
			m := hello(sniExt("a.example"))
			m[3] -= 3
			return record(recordTypeHandshake, 0x0301, m)
		}(), 0, ErrMalformed, 0},
		{"extensions length too long", func() []byte {
			m := hello(sniExt("a.example"))
			m[4+2+32+1+4+2+1]++ // low byte of the extensions length
			return record(recordTypeHandshake, 0x0301, m)
		}(), 0, ErrMalformed, 0},
		{"session id length past end", func() []byte {
			m := hello(nil)
			m[4+2+32] = 0xff
			return record(recordTypeHandshake, 0x0301, m)
		}(), 0, ErrMalformed, 0},
		{"duplicate extension", record(recordTypeHandshake, 0x0301, hello(cat(sniExt("a.example"), sniExt("b.example")))), 0, ErrMalformed, 0},
		{"two host names", record(recordTypeHandshake, 0x0301, hello(ext(extServerName, []byte{0, 8, 0, 0, 1, 'a', 0, 0, 1, 'b'}))), 0, ErrMalformed, 0},
		{"empty ALPN protocol", record(recordTypeHandshake, 0x0301, hello(ext(extALPN, []byte{0, 1, 0}))), 0, ErrMalformed, 0},
		{"odd supported_versions", record(recordTypeHandshake, 0x0301, hello(ext(extSupportedVersions, []byte{3, 3, 4, 3}))), 0, ErrMalformed, 0},
		{"key share without key", record(recordTypeHandshake, 0x0301, hello(ext(extKeyShare, []byte{0, 4, 0, 0x1d, 0, 0}))), 0, ErrMalformed, 0},
		{"alert inside fragmented hello", cat(record(recordTypeHandshake, 0x0301, goodMsg[:10]), record(recordTypeAlert, 0x0301, []byte{2, 40})), 0, ErrMalformed, 0},
		{"huge declared handshake length", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff, 0x03}, 0, ErrTooLarge, 9},
		{"record over cap", record(recordTypeHandshake, 0x0301, goodMsg), 20, ErrTooLarge, 5},
		{"endless fragments", bytes.Repeat(record(recordTypeHandshake, 0x0301, []byte{1, 0, 0xff, 0xff}[:1]), 10000), 0, ErrTooLarge, DefaultMaxSize},
		{"zero bytes", nil, 0, ErrClosed, 0},
		{"truncated header", []byte{0x16, 0x03}, 0, ErrClosed, 0},
		{"truncated body", record(recordTypeHandshake, 0x0301, goodMsg)[:30], 0, ErrClosed, 0},
		{"truncated fragmented hello", record(recordTypeHandshake, 0x0301, goodMsg[:10]), 0, ErrClosed, 0},
	}
	for _, tt := range tests {
		for _, seg := range []int{0, 1} {
			t.Run(tt.name, func(t *testing.T) {
				h, prefix, err := ReadFrom(&segmentReader{data: tt.in, sizes: []int{seg}}, tt.max)
				if !errors.Is(err, tt.want) {
					t.Fatalf("segments of %d: err = %v, want %v", seg, err, tt.want)
				}
				if h != nil {
					t.Errorf("Hello = %+v with an error", h)
				}
				if kinds := countKinds(err); kinds != 1 {
					t.Errorf("error %q wraps %d failure kinds, want exactly 1", err, kinds)
				}
				if !bytes.HasPrefix(tt.in, prefix) {
					t.Errorf("prefix %x is not the start of the input", prefix)
				}
				if seg == 1 && tt.maxRead > 0 && len(prefix) > tt.maxRead {
					t.Errorf("read %d bytes before refusing, want at most %d", len(prefix), tt.maxRead)
				}
			})
		}
	}
}

func countKinds(err error) int {
	n := 0
	for _, k := range []error{ErrNotTLS, ErrNotHandshake, ErrMalformed, ErrTooLarge, ErrTimeout, ErrClosed} {
		if errors.Is(err, k) {
			n++
		}
	}
	return n
}

// TestReadTooLargeVector: a real Chromium hello (about 2 KB) against a 1 KiB
// cap is refused without reading more than the cap.
func TestReadTooLargeVector(t *testing.T) {
	wire := readVector(t, "chromium.bin")
	_, prefix, err := ReadFrom(bytes.NewReader(wire), 1024)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if len(prefix) > 1024 {
		t.Fatalf("read %d bytes past the 1024-byte cap", len(prefix))
	}
}

// TestReadSlowLoris: a client that trickles one byte a second is cut at the
// deadline with ErrTimeout, and what it sent is in the prefix.
func TestReadSlowLoris(t *testing.T) {
	wire := readVector(t, "go-pq.bin")
	client, server := loopbackPair(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 0; i < len(wire); i++ {
			if _, err := client.Write(wire[i : i+1]); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	h, prefix, err := Read(server, Options{Timeout: 1500 * time.Millisecond})
	close(stop)
	<-done
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("err %v does not keep the net.Error timeout", err)
	}
	if h != nil {
		t.Errorf("Hello = %+v on timeout", h)
	}
	if len(prefix) == 0 || !bytes.HasPrefix(wire, prefix) {
		t.Errorf("prefix %x is not a non-empty start of the hello", prefix)
	}
}

// TestReadClosedEarly: a peer that closes or resets before the hello is
// complete gives ErrClosed, with what it sent in the prefix.
func TestReadClosedEarly(t *testing.T) {
	wire := readVector(t, "go-pq.bin")
	for _, tt := range []struct {
		name  string
		send  int
		reset bool
	}{
		{"no bytes, FIN", 0, false},
		{"half a hello, FIN", len(wire) / 2, false},
		{"one header byte, FIN", 1, false},
		{"half a hello, RST", len(wire) / 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, server := loopbackPair(t)
			if _, err := client.Write(wire[:tt.send]); err != nil {
				t.Fatal(err)
			}
			if tt.reset {
				client.SetLinger(0)
			}
			client.Close()
			_, prefix, err := Read(server, Options{Timeout: 30 * time.Second})
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("err = %v, want ErrClosed", err)
			}
			if tt.reset && !errors.Is(err, syscall.ECONNRESET) {
				// A reset can race with the data: the kernel may drop the
				// unread bytes. Either way it must be ErrClosed.
				t.Logf("reset reported as %v", err)
			}
			if !bytes.Equal(prefix, wire[:len(prefix)]) || (!tt.reset && len(prefix) != tt.send) {
				t.Fatalf("prefix is %d bytes, want the %d bytes sent", len(prefix), tt.send)
			}
		})
	}
}

// segmentReader hands out data in segments whose sizes cycle through sizes
// (a size <= 0 means the rest). It records how many bytes it handed out.
type segmentReader struct {
	data  []byte
	sizes []int
	i     int
	given int
	reads int
}

func (s *segmentReader) Read(p []byte) (int, error) {
	s.reads++
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := len(s.data)
	if len(s.sizes) > 0 {
		if sz := s.sizes[s.i%len(s.sizes)]; sz > 0 {
			n = min(n, sz)
		}
		s.i++
	}
	n = copy(p, s.data[:n])
	s.data = s.data[n:]
	s.given += n
	return n, nil
}

// TestReadFromBuffer: one scratch buffer reused for hello after hello, of
// every captured kind (one record, split over three, larger than the
// scratch), gives ReadFrom's result each time, and the Hello keeps nothing
// of the scratch: overwriting it changes no field.
func TestReadFromBuffer(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "hellos", "*.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured hellos: %v", err)
	}
	for _, size := range []int{0, 512, DefaultMaxSize} {
		scratch := make([]byte, size)
		for _, f := range files {
			wire, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, wantPrefix, wantErr := ReadFrom(bytes.NewReader(wire), 0)
			got, prefix, err := ReadFromBuffer(bytes.NewReader(wire), 0, scratch)
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("%s, scratch %d: error %v, ReadFrom's %v", f, size, err, wantErr)
			}
			if !bytes.Equal(prefix, wantPrefix) {
				t.Fatalf("%s, scratch %d: %d bytes read, ReadFrom read %d", f, size, len(prefix), len(wantPrefix))
			}
			for i := range scratch {
				scratch[i] = 0xAA
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s, scratch %d: %+v, ReadFrom's %+v", f, size, got, want)
			}
		}
	}
}
