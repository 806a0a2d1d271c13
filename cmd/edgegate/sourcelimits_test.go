package main_test

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestPassthroughSourceLimits runs the real binary with a passthrough vhost
// that has allow_from and a per-source connection rate: an allowed source
// gets its bytes echoed until its rate is spent, then is closed without a
// byte (closed_source_rate); a source outside allow_from is closed without
// a byte and no upstream connection (closed_not_allowed); a never_limit
// source is never rate limited.
func TestPassthroughSourceLimits(t *testing.T) {
	t.Parallel()
	hello, err := os.ReadFile("../../testdata/hellos/go-pq.bin")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	listen := freeAddr(t)
	cfg := writeFile(t, dir, "edgegate.yaml", yamlf(`
listen: [{address: %q}]
log: {level: debug, format: json}  # refusals at the edge are logged at debug
limits:
  rate: {per_source: 2/h, burst: 2, never_limit: [127.0.0.4/32]}
vhosts:
  - name: pass
    hosts: [go.example.test]
    mode: passthrough
    allow_from: [127.0.0.2/32, 127.0.0.4/32]
    upstream: {address: %q, proxy_protocol: v2}
`, listen, newPlainEcho(t)))
	p := startEdgegate(t, "run", "--config", cfg)
	p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))

	// exchange connects from src, sends the hello and returns what comes back.
	exchange := func(src string) []byte {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: waitLimit}
		c, err := d.Dial("tcp", listen)
		if err != nil {
			t.Fatalf("dial from %s: %v", src, err)
		}
		defer c.Close()
		c.Write(hello)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(waitLimit))
		b, _ := io.ReadAll(c)
		return b
	}
	for i := range 2 {
		if got := exchange("127.0.0.2"); !bytes.Equal(got, hello) {
			t.Fatalf("allowed source, connection %d: got %d bytes back, want the %d sent", i+1, len(got), len(hello))
		}
	}
	if got := exchange("127.0.0.2"); len(got) != 0 {
		t.Fatalf("third connection within the rate's hour: got %d bytes, want none", len(got))
	}
	p.stderr.waitJSON(t, "the rate refusal's log line", func(r map[string]any) bool {
		return r["outcome"] == "closed_source_rate" && r["client"] != nil && bytes.HasPrefix([]byte(r["client"].(string)), []byte("127.0.0.2:"))
	})
	if got := exchange("127.0.0.3"); len(got) != 0 {
		t.Fatalf("source outside allow_from: got %d bytes, want none", len(got))
	}
	p.stderr.waitJSON(t, "the allow_from refusal's log line", func(r map[string]any) bool {
		return r["outcome"] == "closed_not_allowed" && r["vhost"] == "pass"
	})
	for i := range 4 {
		if got := exchange("127.0.0.4"); !bytes.Equal(got, hello) {
			t.Fatalf("never_limit source, connection %d: got %d bytes back", i+1, len(got))
		}
	}
}
