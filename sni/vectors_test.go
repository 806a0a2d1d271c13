package sni

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// vectorDir holds hellos captured from real clients (see its README.md).
var vectorDir = filepath.Join("..", "testdata", "hellos")

// vectorWant is what a user of Hello must see for one captured vector.
// GREASE values (RFC 8701), which Chromium picks at random, are removed
// from lists before comparing.
type vectorWant struct {
	file          string
	serverName    string
	rawServerName string
	alpn          []string
	versions      []uint16
	keyShares     []uint16
	ech           bool
	postQuantum   bool
}

var vectors = []vectorWant{
	{file: "go-pq.bin", serverName: "go.example.test", rawServerName: "go.example.test",
		alpn: []string{"h2", "http/1.1"}, versions: []uint16{0x0304, 0x0303},
		keyShares: []uint16{GroupX25519MLKEM768, 0x001d}, postQuantum: true},
	{file: "go-pq-split3.bin", serverName: "go.example.test", rawServerName: "go.example.test",
		alpn: []string{"h2", "http/1.1"}, versions: []uint16{0x0304, 0x0303},
		keyShares: []uint16{GroupX25519MLKEM768, 0x001d}, postQuantum: true},
	{file: "openssl-tls12-sni.bin", serverName: "openssl12.example.test", rawServerName: "openssl12.example.test"},
	{file: "openssl-tls12-nosni.bin"},
	{file: "openssl-tls13-sni.bin", serverName: "openssl13.example.test", rawServerName: "openssl13.example.test",
		versions: []uint16{0x0304}, keyShares: []uint16{0x001d}},
	{file: "openssl-tls13-nosni.bin", versions: []uint16{0x0304}, keyShares: []uint16{0x001d}},
	{file: "openssl-tls13-trailing-dot.bin", serverName: "dot.example.test", rawServerName: "Dot.Example.TEST.",
		versions: []uint16{0x0304}, keyShares: []uint16{0x001d}},
	{file: "curl.bin", serverName: "curl.example.test", rawServerName: "curl.example.test",
		alpn: []string{"h2", "http/1.1"}, versions: []uint16{0x0304, 0x0303, 0x0302, 0x0301}, keyShares: []uint16{0x001d}},
	{file: "chromium.bin", serverName: "chromium.example.test", rawServerName: "chromium.example.test",
		alpn: []string{"h2", "http/1.1"}, versions: []uint16{0x0304, 0x0303},
		keyShares: []uint16{GroupX25519MLKEM768, 0x001d}, ech: true, postQuantum: true},
}

func readVector(tb testing.TB, file string) []byte {
	tb.Helper()
	b, err := readFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func readFile(file string) ([]byte, error) {
	return os.ReadFile(filepath.Join(vectorDir, file))
}

// isGREASE reports whether v is an RFC 8701 GREASE value (0x?a?a).
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>12 == (v>>4)&0xf }

func dropGREASE(s []uint16) []uint16 {
	return slices.DeleteFunc(slices.Clone(s), isGREASE)
}

func checkHello(t *testing.T, w vectorWant, h *Hello, wire []byte) {
	t.Helper()
	if h.ServerName != w.serverName {
		t.Errorf("ServerName = %q, want %q", h.ServerName, w.serverName)
	}
	if h.RawServerName != w.rawServerName {
		t.Errorf("RawServerName = %q, want %q", h.RawServerName, w.rawServerName)
	}
	if !slices.Equal(h.ALPN, w.alpn) {
		t.Errorf("ALPN = %q, want %q", h.ALPN, w.alpn)
	}
	if got := dropGREASE(h.SupportedVersions); !slices.Equal(got, w.versions) {
		t.Errorf("SupportedVersions (no GREASE) = %#04x, want %#04x", got, w.versions)
	}
	if got := dropGREASE(h.KeyShares); !slices.Equal(got, w.keyShares) {
		t.Errorf("KeyShares (no GREASE) = %#04x, want %#04x", got, w.keyShares)
	}
	if h.ECH != w.ech {
		t.Errorf("ECH = %v, want %v", h.ECH, w.ech)
	}
	if h.PostQuantum() != w.postQuantum {
		t.Errorf("PostQuantum() = %v, want %v", h.PostQuantum(), w.postQuantum)
	}
	if h.LegacyVersion != 0x0303 {
		t.Errorf("LegacyVersion = %#04x, want 0x0303 (every captured client sends it)", h.LegacyVersion)
	}
	// The handshake length is independent of how the wire split it: the
	// sum of the record bodies.
	hs := 0
	for rest := wire; len(rest) >= recordHeaderLen; {
		l := int(rest[3])<<8 | int(rest[4])
		hs += l
		rest = rest[min(len(rest), recordHeaderLen+l):]
	}
	if h.Length != hs {
		t.Errorf("Length = %d, want %d (sum of record bodies)", h.Length, hs)
	}
}

// TestVectors parses each captured hello from memory.
func TestVectors(t *testing.T) {
	for _, w := range vectors {
		t.Run(w.file, func(t *testing.T) {
			wire := readVector(t, w.file)
			h, prefix, err := ReadFrom(bytes.NewReader(wire), 0)
			if err != nil {
				t.Fatalf("ReadFrom: %v", err)
			}
			if !bytes.Equal(prefix, wire) {
				t.Fatalf("prefix is %d bytes, differs from the %d-byte vector", len(prefix), len(wire))
			}
			checkHello(t, w, h, wire)
		})
	}
}

// TestVectorsCovered fails when a vector file is added without expectations.
func TestVectorsCovered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.ContainsFunc(vectors, func(w vectorWant) bool { return w.file == filepath.Base(f) }) {
			t.Errorf("%s has no entry in vectors", f)
		}
	}
	if len(files) != len(vectors) {
		t.Errorf("%d vector files, %d entries", len(files), len(vectors))
	}
}
