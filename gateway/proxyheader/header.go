package proxyheader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/pires/go-proxyproto"
)

// Encode encodes the PROXY protocol header an upstream reads before the
// client's bytes: version "v1" or "v2" (TLVs are v2 only), or nil for "off".
// src is the client, dst the address it connected to.
func Encode(version string, src, dst netip.AddrPort, tlvs []proxyproto.TLV) ([]byte, error) {
	n := 0
	for _, t := range tlvs {
		n += 3 + len(t.Value)
	}
	b, v2, err := appendHeader(nil, version, src, dst, n)
	if err != nil || !v2 {
		return b, err
	}
	for _, t := range tlvs {
		b = appendTLV(b, byte(t.Type), t.Value)
	}
	return b, nil
}

// AppendPassthrough appends to b the header of a passthrough connection:
// Encode's with PassthroughTLVs, made without allocating (b grows only if
// it lacks room), for the accept loop's fast path.
func AppendPassthrough(b []byte, version string, src, dst netip.AddrPort, sni string, uniqueID []byte) ([]byte, error) {
	n := 0
	if sni != "" {
		n += 3 + len(sni)
	}
	if len(uniqueID) > 0 {
		n += 3 + len(uniqueID)
	}
	b, v2, err := appendHeader(b, version, src, dst, n)
	if err != nil || !v2 {
		return b, err
	}
	if sni != "" {
		b = appendTLV(b, byte(proxyproto.PP2_TYPE_AUTHORITY), sni)
	}
	if len(uniqueID) > 0 {
		b = appendTLV(b, byte(proxyproto.PP2_TYPE_UNIQUE_ID), uniqueID)
	}
	return b, nil
}

// v2Signature opens every version 2 header.
const v2Signature = "\r\n\r\n\x00\r\nQUIT\n"

// appendHeader appends the header's fixed part: the whole of a v1 header,
// or a v2 header's fixed part and addresses, its length counting tlvLen
// bytes of TLVs the caller appends next (v2 reports that it should).
func appendHeader(b []byte, version string, src, dst netip.AddrPort, tlvLen int) ([]byte, bool, error) {
	switch version {
	case "off":
		return b, false, nil
	case "v1", "v2":
	default:
		return b, false, fmt.Errorf("proxy protocol %q", version)
	}
	// An IPv4-mapped address is an IPv4 one here, as Go's net package
	// (and so go-proxyproto) reads it.
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	v4 := src.Addr().Is4()
	if dst.Addr().Is4() != v4 {
		// A v6 client announced by a balancer in front of a v4 listener (or the
		// reverse): the header has one family, so the destination is given as
		// that family's unspecified address.
		if v4 {
			dst = netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port())
		} else {
			dst = netip.AddrPortFrom(netip.IPv6Unspecified(), dst.Port())
		}
	}
	if !src.Addr().IsValid() || !dst.Addr().IsValid() {
		// An address missing (a listener that is not TCP): the header says
		// so, as go-proxyproto writes it.
		if version == "v1" {
			return append(b, "PROXY UNKNOWN\r\n"...), false, nil
		}
		if tlvLen > 0xffff {
			return b, false, errors.New("proxy header: TLVs too long")
		}
		b = append(b, v2Signature...)
		b = append(b, 0x20, 0x00) // version 2, LOCAL; no family
		return binary.BigEndian.AppendUint16(b, uint16(tlvLen)), true, nil
	}
	if version == "v1" {
		b = append(b, "PROXY TCP4 "...)
		if !v4 {
			b[len(b)-2] = '6'
		}
		b = src.Addr().AppendTo(b)
		b = append(b, ' ')
		b = dst.Addr().AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, "\r\n"...), false, nil
	}
	addrLen := 12        // two IPv4 addresses and two ports
	family := byte(0x11) // AF_INET, STREAM
	if !v4 {
		addrLen, family = 36, 0x21
	}
	if addrLen+tlvLen > 0xffff {
		return b, false, errors.New("proxy header: TLVs too long")
	}
	b = append(b, v2Signature...)
	b = append(b, 0x21, family) // version 2, PROXY
	b = binary.BigEndian.AppendUint16(b, uint16(addrLen+tlvLen))
	if v4 {
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return b, true, nil
}

// appendTLV appends one TLV.
func appendTLV[V string | []byte](b []byte, typ byte, value V) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	return append(b, value...)
}
