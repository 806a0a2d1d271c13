package proxyheader

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"
)

// formatted is the header go-proxyproto formats for the same arguments:
// the reference the hand-written encoder must match byte for byte.
func formatted(t *testing.T, version string, src, dst netip.AddrPort, tlvs []proxyproto.TLV) []byte {
	t.Helper()
	if version == "off" {
		return nil
	}
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	if s, d := src.Addr().Unmap(), dst.Addr().Unmap(); s.Is4() != d.Is4() {
		if s.Is4() {
			dst = netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port())
		} else {
			dst = netip.AddrPortFrom(netip.IPv6Unspecified(), dst.Port())
		}
	}
	h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if v == 2 && len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncodeMatchesGoProxyproto(t *testing.T) {
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("198.18.0.7:50123"),
		netip.MustParseAddrPort("127.0.0.1:443"),
		netip.MustParseAddrPort("[2001:db8::1]:65535"),
		netip.MustParseAddrPort("[::ffff:198.18.0.9]:1"),
		netip.MustParseAddrPort("[::]:8443"),
		{}, // no address (a listener that is not TCP)
	}
	long := bytes.Repeat([]byte{0xab}, 128)
	for _, version := range []string{"off", "v1", "v2"} {
		for _, src := range addrs {
			for _, dst := range addrs {
				for _, c := range []struct {
					sni string
					uid []byte
				}{{"", nil}, {"a.example.test", nil}, {"", long}, {"b.example.test", []byte{1, 2, 3}}} {
					tlvs := PassthroughTLVs(c.sni, c.uid)
					want := formatted(t, version, src, dst, tlvs)
					got, err := Encode(version, src, dst, tlvs)
					if err != nil || !bytes.Equal(got, want) {
						t.Errorf("Encode(%s, %v, %v, %q, %d-byte id) = %q, %v; go-proxyproto: %q", version, src, dst, c.sni, len(c.uid), got, err, want)
					}
					prefix := []byte("x")
					got, err = AppendPassthrough(prefix, version, src, dst, c.sni, c.uid)
					if err != nil || !bytes.Equal(got, append([]byte("x"), want...)) {
						t.Errorf("AppendPassthrough(%s, %v, %v, %q, %d-byte id) = %q, %v; go-proxyproto: %q", version, src, dst, c.sni, len(c.uid), got, err, want)
					}
				}
			}
		}
	}
	if _, err := Encode("v3", addrs[0], addrs[1], nil); err == nil {
		t.Error("Encode took version v3")
	}
	big := []proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 70000)}}
	if _, err := Encode("v2", addrs[0], addrs[1], big); err == nil {
		t.Error("a TLV over 65535 bytes: no error")
	}
	fill := []proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, 65500)}}
	if _, err := Encode("v2", addrs[2], addrs[2], fill); err == nil {
		t.Error("addresses and TLVs over 65535 bytes: no error")
	}
}

func TestAppendPassthroughAllocatesNothing(t *testing.T) {
	src, dst := netip.MustParseAddrPort("198.18.0.7:50123"), netip.MustParseAddrPort("[2001:db8::1]:443")
	buf := make([]byte, 0, 512)
	uid := []byte("0123456789abcdef")
	for _, version := range []string{"v1", "v2"} {
		if n := testing.AllocsPerRun(100, func() {
			AppendPassthrough(buf[:0], version, src, dst, "a.example.test", uid)
		}); n != 0 {
			t.Errorf("AppendPassthrough %s: %v allocations, want 0", version, n)
		}
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
