package sni

import (
	"bytes"
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	// 4 labels of 63 + "a" = 63*4+3 dots+... built to hit exactly 253.
	name253 := strings.Join([]string{long63, long63, long63, strings.Repeat("b", 61)}, ".")
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"WWW.Example.Com.", "www.example.com"},
		{"localhost", "localhost"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"a-b.c_d.example", "a-b.c_d.example"},
		{"1.example", "1.example"},
		{"123.456.example9", "123.456.example9"},
		{name253, name253},
		{name253 + ".", name253},
		{name253 + "c", ""}, // 254 bytes
		{long63 + ".example", long63 + ".example"},
		{long63 + "a.example", ""}, // 64-byte label
		{"", ""},
		{".", ""},
		{"example.com..", ""},
		{".example.com", ""},
		{"a..b", ""},
		{"-a.example", ""},
		{"a-.example", ""},
		{"a.example-", ""},
		{"exa mple.com", ""},
		{"exa\x00mple.com", ""},
		{"bücher.example", ""},
		{"*.example.com", ""},
		{"example.com:443", ""},
		{"192.0.2.1", ""},
		{"192.0.2.1.", ""},
		{"127.1", ""},
		{"10", ""},
		{"::1", ""},
		{"[2001:db8::1]", ""},
		{"2001:db8::1", ""},
	}
	for _, tt := range tests {
		if got := NormalizeName(tt.in); got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if len(name253) != 253 {
		t.Fatalf("test name is %d bytes, want 253", len(name253))
	}
}

// TestServerNameInHello checks ServerName and RawServerName as parsed from
// a hello, including the trailing-dot routing rule and truncation of long
// raw names.
func TestServerNameInHello(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		sent, name, raw string
	}{
		{"API.Example.Com", "api.example.com", "API.Example.Com"},
		{"api.example.com.", "api.example.com", "api.example.com."},
		{"192.0.2.7", "", "192.0.2.7"},
		{"bad name", "", "bad name"},
		{long, "", long[:255]},
		// Found by FuzzRead: a name over 255 bytes with a trailing dot
		// (testdata/fuzz/FuzzRead/42f8c32aad942832) used to panic.
		{long + ".", "", long[:255]},
	}
	for _, tt := range tests {
		h, err := Parse(hello(sniExt(tt.sent)))
		if err != nil {
			t.Fatalf("Parse with SNI %q: %v", tt.sent, err)
		}
		if h.ServerName != tt.name || h.RawServerName != tt.raw {
			t.Errorf("SNI %q: ServerName %q, RawServerName %q; want %q, %q", tt.sent, h.ServerName, h.RawServerName, tt.name, tt.raw)
		}
	}
	// A server_name extension with only a non-host_name entry is no SNI.
	h, err := Parse(hello(ext(extServerName, []byte{0, 4, 7, 0, 1, 'x'})))
	if err != nil || h.ServerName != "" || h.RawServerName != "" {
		t.Errorf("unknown name type: %+v, %v; want no name", h, err)
	}
}

// TestTrailingDotVector: the captured OpenSSL hello with SNI
// "Dot.Example.TEST." routes as "dot.example.test" (Go's server refuses
// it; see TestDifferential), and the prefix keeps the bytes as sent.
func TestTrailingDotVector(t *testing.T) {
	wire := readVector(t, "openssl-tls13-trailing-dot.bin")
	h, prefix, err := ReadFrom(bytes.NewReader(wire), 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "dot.example.test" || h.RawServerName != "Dot.Example.TEST." {
		t.Errorf("ServerName %q, RawServerName %q", h.ServerName, h.RawServerName)
	}
	if !bytes.Contains(prefix, []byte("Dot.Example.TEST.")) {
		t.Errorf("prefix lost the name as sent")
	}
}

func TestPostQuantum(t *testing.T) {
	for _, tt := range []struct {
		groups []uint16
		want   bool
	}{
		{nil, false},
		{[]uint16{0x001d, 0x0017}, false},
		{[]uint16{0x0a0a, 0x11ec, 0x001d}, true},
		{[]uint16{0x11eb}, true},
		{[]uint16{0x11ed}, true},
		{[]uint16{0x6399, 0x001d}, true},
		{[]uint16{0x11ee}, false},
	} {
		if got := (&Hello{KeyShares: tt.groups}).PostQuantum(); got != tt.want {
			t.Errorf("PostQuantum(%#04x) = %v, want %v", tt.groups, got, tt.want)
		}
	}
}
