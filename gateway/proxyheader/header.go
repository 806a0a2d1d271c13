package proxyheader

import (
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// Encode encodes the PROXY protocol header an upstream reads before the
// client's bytes: version "v1" or "v2" (TLVs are v2 only), or nil for "off".
// src is the client, dst the address it connected to.
func Encode(version string, src, dst netip.AddrPort, tlvs []proxyproto.TLV) ([]byte, error) {
	var v byte
	switch version {
	case "off":
		return nil, nil
	case "v1":
		v = 1
	case "v2":
		v = 2
	default:
		return nil, fmt.Errorf("proxy protocol %q", version)
	}
	if src.Addr().Is4() != dst.Addr().Is4() {
		// A v6 client announced by a balancer in front of a v4 listener (or the
		// reverse): the header has one family, so the destination is given as
		// that family's unspecified address.
		if src.Addr().Is4() {
			dst = netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port())
		} else {
			dst = netip.AddrPortFrom(netip.IPv6Unspecified(), dst.Port())
		}
	}
	if v == 2 {
		return encodeV2(src, dst, tlvs)
	}
	h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if v == 2 && len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			return nil, fmt.Errorf("proxy header TLVs: %w", err)
		}
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("proxy header: %w", err)
	}
	return b, nil
}

// sigV2 starts every PROXY v2 header.
var sigV2 = [12]byte{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// encodeV2 writes the bytes go-proxyproto's Header.Format writes for
// HeaderProxyFromAddrs with these TCP addresses and TLVs, into one slice
// made to size: PROXY over TCPv4 when both addresses are IPv4 (or
// v4-mapped), TCPv6 when both are valid otherwise, LOCAL with no addresses
// when one is missing; then the TLVs in order. Format builds the header
// through a bytes.Buffer, the TLVs through one more slice, and asks
// net.IP for each address's form, about ten allocations per connection.
func encodeV2(src, dst netip.AddrPort, tlvs []proxyproto.TLV) ([]byte, error) {
	n := 0
	for _, t := range tlvs {
		if len(t.Value) > math.MaxUint16 {
			return nil, fmt.Errorf("proxy header TLVs: TLV %#x of %d bytes", byte(t.Type), len(t.Value))
		}
		n += 3 + len(t.Value)
	}
	cmd, fam, alen := byte(0x20), byte(0x00), 0 // LOCAL, UNSPEC
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	switch {
	case !sa.IsValid() || !da.IsValid():
	case sa.Is4() && da.Is4():
		cmd, fam, alen = 0x21, 0x11, 12 // PROXY, TCP over IPv4
	default:
		cmd, fam, alen = 0x21, 0x21, 36 // PROXY, TCP over IPv6
	}
	if alen+n > math.MaxUint16 {
		return nil, fmt.Errorf("proxy header: %d bytes of addresses and TLVs", alen+n)
	}
	b := make([]byte, 0, 16+alen+n)
	b = append(b, sigV2[:]...)
	b = append(b, cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(alen+n))
	switch alen {
	case 12:
		s4, d4 := sa.As4(), da.As4()
		b = append(append(b, s4[:]...), d4[:]...)
	case 36:
		s16, d16 := sa.As16(), da.As16()
		b = append(append(b, s16[:]...), d16[:]...)
	}
	if alen > 0 {
		b = binary.BigEndian.AppendUint16(b, src.Port())
		b = binary.BigEndian.AppendUint16(b, dst.Port())
	}
	for _, t := range tlvs {
		b = append(b, byte(t.Type))
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b, nil
}
