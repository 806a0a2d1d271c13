package sni

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// goResult is what Go's crypto/tls server made of some bytes.
type goResult struct {
	parsed bool   // GetConfigForClient ran: Go parsed a ClientHello
	name   string // ClientHelloInfo.ServerName
	err    error  // the handshake error
}

var errStopHandshake = errors.New("differential test: stop after ClientHello")

// goServerName runs a real crypto/tls server over a net.Pipe, feeds it in
// and reports whether it parsed a ClientHello and which name it saw.
func goServerName(in []byte) goResult {
	clientEnd, serverEnd := net.Pipe()
	var res goResult
	srv := tls.Server(serverEnd, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			res.parsed = true
			res.name = chi.ServerName
			return nil, errStopHandshake
		},
	})
	// The server may answer with an alert while the client is still
	// writing: drain the client end so neither side blocks.
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, clientEnd)
		close(drained)
	}()
	written := make(chan struct{})
	go func() {
		clientEnd.Write(in)
		// All of in was consumed (net.Pipe writes are synchronous) or the
		// server gave up: either way an EOF ends a server still waiting.
		clientEnd.Close()
		close(written)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res.err = srv.HandshakeContext(ctx)
	serverEnd.Close()
	<-written
	<-drained
	return res
}

// dnsLabel and the checks in validHostname are an independent statement of
// the routing rule, so that NormalizeName is tested, not trusted.
var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

func validHostname(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return false
		}
	}
	_, err := strconv.ParseUint(labels[len(labels)-1], 10, 64)
	allDigits := strings.Trim(labels[len(labels)-1], "0123456789") == ""
	return err != nil && !allDigits
}

// diffInputs returns the vectors and every FuzzRead corpus entry (the
// data argument), named.
func diffInputs(t *testing.T) map[string][]byte {
	t.Helper()
	inputs := map[string][]byte{}
	for _, w := range vectors {
		inputs["vector/"+w.file] = readVector(t, w.file)
	}
	for i, in := range seedInputs() {
		inputs[fmt.Sprintf("seed/%d", i)] = in
	}
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzRead", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := readCorpusData(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		inputs["corpus/"+filepath.Base(f)] = data
	}
	return inputs
}

// readCorpusData returns the first []byte argument of a "go test fuzz v1"
// corpus file.
func readCorpusData(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 || lines[0] != "go test fuzz v1" {
		return nil, errors.New("not a go fuzz corpus file")
	}
	arg := strings.TrimSpace(lines[1])
	if !strings.HasPrefix(arg, "[]byte(") || !strings.HasSuffix(arg, ")") {
		return nil, fmt.Errorf("first argument %.40q is not []byte(...)", arg)
	}
	s, err := strconv.Unquote(arg[len("[]byte(") : len(arg)-1])
	return []byte(s), err
}

// TestDifferential proves that the name edgegate routes on is the name Go's
// crypto/tls server sees for the same bytes, over the vectors and the fuzz
// corpus. Where the two disagree on whether the bytes are a ClientHello at
// all, the case must be one of the known, explained divergences below.
func TestDifferential(t *testing.T) {
	inputs := diffInputs(t)
	if len(inputs) <= len(vectors) {
		t.Logf("no fuzz corpus in testdata/fuzz/FuzzRead: only the vectors are compared")
	}
	var agreeParsed, agreeRefused int
	divergences := map[string]int{}
	for name, in := range inputs {
		g := goServerName(in)
		h, _, err := ReadFrom(bytes.NewReader(in), 0)
		switch {
		case g.parsed && err == nil:
			want := ""
			if validHostname(g.name) {
				want = strings.ToLower(g.name)
			}
			if h.ServerName != want {
				t.Errorf("%s: Go saw %q, edgegate routes on %q, want %q", name, g.name, h.ServerName, want)
			}
			if raw := g.name[:min(len(g.name), maxRawServerName)]; raw != h.RawServerName {
				t.Errorf("%s: Go saw %q, RawServerName %q", name, g.name, h.RawServerName)
			}
			agreeParsed++
		case g.parsed && err != nil:
			reason := goOnlyReason(in, err)
			if reason == "" {
				t.Errorf("%s: Go parsed a hello (name %q), edgegate refused it unexplained: %v", name, g.name, err)
				continue
			}
			divergences["Go parsed, edgegate refused: "+reason]++
		case !g.parsed && err == nil:
			reason := edgegateOnlyReason(in, h)
			divergences["Go refused, edgegate parsed: "+reason]++
			if strings.HasPrefix(name, "vector/") && name != "vector/openssl-tls13-trailing-dot.bin" {
				t.Errorf("%s: Go refused a captured hello (%v); edgegate parsed it", name, g.err)
			}
		default:
			agreeRefused++
		}
	}
	t.Logf("%d inputs: both parsed %d, both refused %d", len(inputs), agreeParsed, agreeRefused)
	if agreeParsed < len(vectors)-1 {
		t.Errorf("only %d inputs parsed by both: the comparison ran on too little", agreeParsed)
	}
	for reason, n := range divergences {
		t.Logf("%4d  %s", n, reason)
	}
	// The captured trailing-dot hello is the documented routing divergence:
	// Go refuses "Dot.Example.TEST." outright, edgegate routes it as
	// "dot.example.test" and passes the bytes on unchanged.
	g := goServerName(readVector(t, "openssl-tls13-trailing-dot.bin"))
	if g.parsed || g.err == nil {
		t.Errorf("Go parsed the trailing-dot hello (name %q): the documented divergence is gone", g.name)
	}
}

// goOnlyReason explains why edgegate may refuse bytes that Go parses. Go's
// record layer is laxer (it ignores record versions on the first flight and
// allows handshakes up to 64 KiB); edgegate's limits are deliberate.
func goOnlyReason(in []byte, err error) string {
	switch {
	case errors.Is(err, ErrTooLarge):
		return "size cap (Go allows 64 KiB, edgegate 16 KiB)"
	case errors.Is(err, ErrMalformed) && strings.Contains(err.Error(), "record version"):
		return "record version outside 0x0300-0x0304 (Go ignores it)"
	case errors.Is(err, ErrMalformed) && strings.Contains(err.Error(), "empty handshake record"):
		return "zero-length handshake record (RFC 8446 5.1 forbids them)"
	case errors.Is(err, ErrNotTLS) && len(in) > 1 && in[0] == recordTypeHandshake:
		return "record version major not 3 (Go accepts up to 0x0fff)"
	}
	return ""
}

// edgegateOnlyReason explains why edgegate may parse bytes that Go refuses.
func edgegateOnlyReason(in []byte, h *Hello) string {
	full := h.RawServerName
	if len(full) == maxRawServerName {
		// RawServerName is truncated: find the whole name on the wire by
		// its uint16 length prefix (not found if a record boundary cuts it).
		if i := bytes.Index(in, []byte(full)); i >= 2 {
			if n := int(in[i-2])<<8 | int(in[i-1]); i+n <= len(in) {
				full = string(in[i : i+n])
			}
		}
	}
	if strings.HasSuffix(full, ".") {
		return "trailing-dot SNI (Go refuses; edgegate routes without the dot)"
	}
	return "an extension edgegate skips is malformed, or Go's record layer objects (edgegate leaves it to the upstream)"
}
