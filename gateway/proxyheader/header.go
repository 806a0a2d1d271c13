package proxyheader

import (
	"fmt"
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
