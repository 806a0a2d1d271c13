package sni

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestCaptureHellos records the test vectors in testdata/hellos from real
// clients on loopback. It runs only with EDGEGATE_CAPTURE=1 because it needs
// openssl, curl and chromium, and because the committed files are the test
// data (a capture differs each time: randoms and key shares are fresh):
//
//	EDGEGATE_CAPTURE=1 go test -run TestCaptureHellos -v ./sni/
//
// The capture is independent of this package's parser: it saves every byte
// the client sends until the client has been quiet for a second (a client
// waits for the ServerHello after its hello), then closes the connection.
func TestCaptureHellos(t *testing.T) {
	if os.Getenv("EDGEGATE_CAPTURE") != "1" {
		t.Skip("set EDGEGATE_CAPTURE=1 to recapture testdata/hellos from real clients")
	}
	dir := filepath.Join("..", "testdata", "hellos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	type client struct {
		file string
		run  func(ctx context.Context, port int) error
	}
	sh := func(name string, args ...string) func(ctx context.Context, port int) error {
		return func(ctx context.Context, port int) error {
			expanded := make([]string, len(args))
			for i, a := range args {
				expanded[i] = string(bytes.ReplaceAll([]byte(a), []byte("PORT"), []byte(strconv.Itoa(port))))
			}
			cmd := exec.CommandContext(ctx, name, expanded...)
			cmd.Stdin = bytes.NewReader(nil)
			out, err := cmd.CombinedOutput()
			t.Logf("%s %v: %v\n%s", name, expanded, err, lastLines(out, 3))
			return nil // every client fails its handshake: the capture closes it
		}
	}
	clients := []client{
		{"go-pq.bin", func(ctx context.Context, port int) error {
			d := tls.Dialer{Config: &tls.Config{ServerName: "go.example.test", NextProtos: []string{"h2", "http/1.1"}}}
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				c.Close()
			}
			return nil
		}},
		{"openssl-tls12-sni.bin", sh("openssl", "s_client", "-connect", "127.0.0.1:PORT", "-tls1_2", "-servername", "openssl12.example.test")},
		{"openssl-tls12-nosni.bin", sh("openssl", "s_client", "-connect", "127.0.0.1:PORT", "-tls1_2", "-noservername")},
		{"openssl-tls13-sni.bin", sh("openssl", "s_client", "-connect", "127.0.0.1:PORT", "-tls1_3", "-servername", "openssl13.example.test")},
		{"openssl-tls13-nosni.bin", sh("openssl", "s_client", "-connect", "127.0.0.1:PORT", "-tls1_3", "-noservername")},
		{"openssl-tls13-trailing-dot.bin", sh("openssl", "s_client", "-connect", "127.0.0.1:PORT", "-tls1_3", "-servername", "Dot.Example.TEST.")},
		{"curl.bin", sh("curl", "-sk", "--max-time", "5", "--resolve", "curl.example.test:PORT:127.0.0.1", "https://curl.example.test:PORT/")},
		{"chromium.bin", sh("chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir="+t.TempDir(), "--host-resolver-rules=MAP * 127.0.0.1", "--timeout=4000", "--dump-dom",
			"https://chromium.example.test:PORT/")},
	}
	for _, c := range clients {
		t.Run(c.file, func(t *testing.T) {
			data, err := captureOne(c.run)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, c.file), data, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("saved %s: %d bytes", c.file, len(data))
		})
	}
	// The three-record vector is derived, not captured: no client here
	// fragments its hello, so the Go hello's handshake message is cut into
	// three handshake records at one third and two thirds of its length.
	goHello, err := os.ReadFile(filepath.Join(dir, "go-pq.bin"))
	if err != nil {
		t.Fatal(err)
	}
	split, err := splitRecords(goHello, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go-pq-split3.bin"), split, 0o644); err != nil {
		t.Fatal(err)
	}
}

// captureOne accepts one connection from run's client and returns what the
// client sent before falling quiet for a second.
func captureOne(run func(ctx context.Context, port int) error) ([]byte, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clientDone := make(chan error, 1)
	go func() { clientDone <- run(ctx, ln.Addr().(*net.TCPAddr).Port) }()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	var got []byte
	buf := make([]byte, 65536)
	for {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				conn.Close()
				return nil, fmt.Errorf("read after %d bytes: %w", len(got), err)
			}
			break
		}
	}
	conn.Close()
	ln.Close()
	cancel() // ends a client (chromium) that keeps retrying
	<-clientDone
	if len(got) == 0 {
		return nil, errors.New("client sent nothing")
	}
	return got, nil
}

// splitRecords re-frames the handshake bytes of wire (a sequence of
// handshake records) into n records of nearly equal size, each keeping the
// first record's version bytes.
func splitRecords(wire []byte, n int) ([]byte, error) {
	var hs []byte
	for rest := wire; len(rest) > 0; {
		if len(rest) < recordHeaderLen || rest[0] != recordTypeHandshake {
			return nil, errors.New("not a handshake record")
		}
		l := int(rest[3])<<8 | int(rest[4])
		if len(rest) < recordHeaderLen+l {
			return nil, errors.New("truncated record")
		}
		hs = append(hs, rest[recordHeaderLen:recordHeaderLen+l]...)
		rest = rest[recordHeaderLen+l:]
	}
	var out []byte
	for i := range n {
		part := hs[len(hs)*i/n : len(hs)*(i+1)/n]
		out = append(out, recordTypeHandshake, wire[1], wire[2], byte(len(part)>>8), byte(len(part)))
		out = append(out, part...)
	}
	return out, nil
}

func lastLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}
