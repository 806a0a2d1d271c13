package proxyheader

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"
)

// TestEncodeV2MatchesLibrary: encodeV2 writes the very bytes go-proxyproto's
// Header.Format writes for the same addresses and TLVs, for every family
// case (IPv4, IPv6, v4-mapped, mixed, missing addresses), with and without
// TLVs, and go-proxyproto reads it back.
func TestEncodeV2MatchesLibrary(t *testing.T) {
	v4a, v4b := netip.MustParseAddrPort("192.0.2.7:51234"), netip.MustParseAddrPort("198.51.100.1:443")
	v6a, v6b := netip.MustParseAddrPort("[2001:db8::7]:51234"), netip.MustParseAddrPort("[2001:db8::1]:443")
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.9]:40000")
	tlvSets := [][]proxyproto.TLV{
		nil,
		{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("app.example.com")}},
		{
			{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte("h2")},
			{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("app.example.com")},
			{Type: proxyproto.PP2_TYPE_SSL, Value: []byte{1, 0, 0, 0, 0, 0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '3'}},
			{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: bytes.Repeat([]byte("a"), 128)},
		},
	}
	for _, c := range []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{"v4", v4a, v4b}, {"v6", v6a, v6b}, {"v4 to v6", v4a, v6b}, {"v6 to v4", v6a, v4b},
		{"mapped to v4", mapped, v4b}, {"v4 to mapped", v4a, mapped},
		{"no source", netip.AddrPort{}, v4b}, {"no destination", v6a, netip.AddrPort{}}, {"none", netip.AddrPort{}, netip.AddrPort{}},
	} {
		for i, tlvs := range tlvSets {
			h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(c.src), net.TCPAddrFromAddrPort(c.dst))
			if len(tlvs) > 0 {
				if err := h.SetTLVs(tlvs); err != nil {
					t.Fatal(err)
				}
			}
			want, err := h.Format()
			if err != nil {
				t.Fatalf("%s, TLV set %d: go-proxyproto: %v", c.name, i, err)
			}
			got, err := encodeV2(c.src, c.dst, tlvs)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s, TLV set %d: encodeV2 = %x, %v\nwant %x", c.name, i, got, err, want)
			}
			if _, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(got))); err != nil {
				t.Fatalf("%s, TLV set %d: go-proxyproto cannot read it back: %v", c.name, i, err)
			}
		}
	}
	big := []proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 70000)}}
	if _, err := encodeV2(v4a, v4b, big); err == nil || !strings.Contains(err.Error(), "70000 bytes") {
		t.Fatalf("a TLV over 65535 bytes: err %v, want one naming its size", err)
	}
	fill := []proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 65530)}}
	if _, err := encodeV2(v6a, v6b, fill); err == nil {
		t.Fatal("addresses and TLVs over 65535 bytes: no error")
	}
}

// BenchmarkTerminatedHeader is the PROXY v2 header of a terminated
// connection: its TLS TLVs, then the header.
func BenchmarkTerminatedHeader(b *testing.B) {
	p := newTLVPKI(b)
	st := serverState(b, &tls.Config{Certificates: []tls.Certificate{p.ecServer}, ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{"http/1.1"}},
		&tls.Config{ServerName: "app.example.com", RootCAs: p.pool, Certificates: []tls.Certificate{p.ecClient}, NextProtos: []string{"http/1.1"}})
	src, dst := netip.MustParseAddrPort("192.0.2.7:51234"), netip.MustParseAddrPort("198.51.100.1:443")
	b.ReportAllocs()
	for b.Loop() {
		tlvs, err := TLSTLVs("app.example.com", st, p.ecServer.Leaf, nil)
		if err == nil {
			_, err = Encode("v2", src, dst, tlvs)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
