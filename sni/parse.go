package sni

import (
	"fmt"
)

// Hello is what edgegate learned from a ClientHello.
type Hello struct {
	// ServerName is the routing form of the SNI host name (see
	// NormalizeName): lower case, trailing dot removed, a valid DNS host
	// name. It is "" when the extension is absent or names an IP literal or
	// an invalid name.
	ServerName string
	// RawServerName is the host name as sent, truncated to 255 bytes, for
	// logs. It may hold any bytes.
	RawServerName string
	// ALPN lists the application protocols offered, in order.
	ALPN []string
	// SupportedVersions lists supported_versions in order; empty when the
	// extension is absent (a TLS 1.2-only client).
	SupportedVersions []uint16
	// KeyShares lists the named groups of the key_share entries, in order.
	KeyShares []uint16
	// ECH is true when an encrypted_client_hello extension (0xfe0d) is
	// present, real or GREASE: the two look alike on the wire.
	ECH bool
	// LegacyVersion is the ClientHello's legacy_version field.
	LegacyVersion uint16
	// Length is the length of the ClientHello handshake message, its 4-byte
	// header included.
	Length int
}

// Named groups that carry a post-quantum key exchange.
const (
	GroupSecP256r1MLKEM768  = 0x11eb
	GroupX25519MLKEM768     = 0x11ec
	GroupSecP384r1MLKEM1024 = 0x11ed
	GroupX25519Kyber768     = 0x6399 // draft, sent by Chrome 124-130
)

// PostQuantum reports whether the client sent a key share for a hybrid
// post-quantum group (X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024
// or the draft X25519Kyber768).
func (h *Hello) PostQuantum() bool {
	for _, g := range h.KeyShares {
		switch g {
		case GroupSecP256r1MLKEM768, GroupX25519MLKEM768, GroupSecP384r1MLKEM1024, GroupX25519Kyber768:
			return true
		}
	}
	return false
}

const (
	extServerName          = 0
	extALPN                = 16
	extSupportedVersions   = 43
	extKeyShare            = 51
	extEncryptedClientHelo = 0xfe0d

	maxRawServerName = 255
)

// Parse parses one ClientHello handshake message, its 4-byte handshake
// header included. The length in the header must match len(msg) exactly.
//
// Framing is checked as Go's crypto/tls does: every length must fit, no
// extension may appear twice, and the extensions edgegate reads (server_name,
// ALPN, supported_versions, key_share) must be well formed. Extensions it does
// not read are skipped without looking inside.
func Parse(msg []byte) (*Hello, error) {
	if len(msg) < handshakeHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a handshake header", ErrMalformed, len(msg))
	}
	if msg[0] != handshakeTypeClientHello {
		return nil, fmt.Errorf("%w: handshake type %d", ErrNotHandshake, msg[0])
	}
	if n := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]); n != len(msg)-handshakeHeaderLen {
		return nil, fmt.Errorf("%w: handshake length %d, have %d bytes", ErrMalformed, n, len(msg)-handshakeHeaderLen)
	}
	h := &Hello{Length: len(msg)}
	s := cursor(msg[handshakeHeaderLen:])

	var ok bool
	if h.LegacyVersion, ok = s.u16(); !ok {
		return nil, malformed("legacy_version")
	}
	if _, ok = s.bytes(32); !ok {
		return nil, malformed("random")
	}
	// legacy_session_id is <0..32> but, like Go, longer ones are let
	// through: routing does not depend on it and the upstream will judge.
	if _, ok = s.vec8(); !ok {
		return nil, malformed("legacy_session_id")
	}
	if cs, ok := s.vec16(); !ok || len(cs)%2 != 0 {
		return nil, malformed("cipher_suites")
	}
	if _, ok = s.vec8(); !ok {
		return nil, malformed("legacy_compression_methods")
	}
	if len(s) == 0 {
		// A TLS 1.2 (or older) hello may end without extensions.
		return h, nil
	}
	exts, ok := s.vec16()
	if !ok || len(s) != 0 {
		return nil, malformed("extensions length")
	}
	// Duplicate detection without a map: a ClientHello has a few dozen
	// extensions at most, and most have small type numbers.
	var seenLow [64]bool
	var seenHigh []uint16
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		data, ok2 := exts.vec16()
		if !ok1 || !ok2 {
			return nil, malformed("extension framing")
		}
		if typ < uint16(len(seenLow)) {
			if seenLow[typ] {
				return nil, fmt.Errorf("%w: duplicate extension %d", ErrMalformed, typ)
			}
			seenLow[typ] = true
		} else {
			for _, t := range seenHigh {
				if t == typ {
					return nil, fmt.Errorf("%w: duplicate extension %d", ErrMalformed, typ)
				}
			}
			seenHigh = append(seenHigh, typ)
		}
		var err error
		switch typ {
		case extServerName:
			err = h.parseServerName(data)
		case extALPN:
			err = h.parseALPN(data)
		case extSupportedVersions:
			err = h.parseSupportedVersions(data)
		case extKeyShare:
			err = h.parseKeyShare(data)
		case extEncryptedClientHelo:
			h.ECH = true
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

func malformed(what string) error {
	return fmt.Errorf("%w: bad %s", ErrMalformed, what)
}

// parseServerName reads server_name (RFC 6066 section 3). Like Go, it
// skips name types other than host_name and refuses two host names.
func (h *Hello) parseServerName(data cursor) error {
	list, ok := data.vec16()
	if !ok || len(list) == 0 || len(data) != 0 {
		return malformed("server_name list")
	}
	seen := false
	for len(list) > 0 {
		typ, ok1 := list.u8()
		name, ok2 := list.vec16()
		if !ok1 || !ok2 || len(name) == 0 {
			return malformed("server_name entry")
		}
		if typ != 0 {
			continue
		}
		if seen {
			return fmt.Errorf("%w: two host names in server_name", ErrMalformed)
		}
		seen = true
		raw := name
		if len(raw) > maxRawServerName {
			raw = raw[:maxRawServerName]
		}
		h.RawServerName = string(raw)
		h.ServerName = normalize(name, h.RawServerName)
	}
	return nil
}

// parseALPN reads application_layer_protocol_negotiation (RFC 7301 3.1).
func (h *Hello) parseALPN(data cursor) error {
	list, ok := data.vec16()
	if !ok || len(list) == 0 || len(data) != 0 {
		return malformed("ALPN list")
	}
	n := 0
	for rest := list; len(rest) > 0; n++ {
		p, ok := rest.vec8()
		if !ok || len(p) == 0 {
			return malformed("ALPN protocol")
		}
	}
	h.ALPN = make([]string, 0, n)
	for len(list) > 0 {
		p, _ := list.vec8()
		h.ALPN = append(h.ALPN, alpnString(p))
	}
	return nil
}

// alpnString returns p as a string, without allocating for the protocols
// nearly every client offers.
func alpnString(p []byte) string {
	switch string(p) {
	case "h2":
		return "h2"
	case "http/1.1":
		return "http/1.1"
	}
	return string(p)
}

// parseSupportedVersions reads supported_versions (RFC 8446 4.2.1).
func (h *Hello) parseSupportedVersions(data cursor) error {
	list, ok := data.vec8()
	if !ok || len(list) == 0 || len(list)%2 != 0 || len(data) != 0 {
		return malformed("supported_versions")
	}
	h.SupportedVersions = make([]uint16, 0, len(list)/2)
	for len(list) > 0 {
		v, _ := list.u16()
		h.SupportedVersions = append(h.SupportedVersions, v)
	}
	return nil
}

// parseKeyShare reads key_share (RFC 8446 4.2.8). An empty list is valid:
// a client may ask the server to pick a group by HelloRetryRequest.
func (h *Hello) parseKeyShare(data cursor) error {
	list, ok := data.vec16()
	if !ok || len(data) != 0 {
		return malformed("key_share list")
	}
	n := 0
	for rest := list; len(rest) > 0; n++ {
		_, ok1 := rest.u16()
		kx, ok2 := rest.vec16()
		if !ok1 || !ok2 || len(kx) == 0 {
			return malformed("key_share entry")
		}
	}
	h.KeyShares = make([]uint16, 0, n)
	for len(list) > 0 {
		g, _ := list.u16()
		list.vec16()
		h.KeyShares = append(h.KeyShares, g)
	}
	return nil
}

// cursor reads big-endian TLS vectors from the front of a byte slice.
type cursor []byte

func (c *cursor) u8() (uint8, bool) {
	if len(*c) < 1 {
		return 0, false
	}
	v := (*c)[0]
	*c = (*c)[1:]
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	if len(*c) < 2 {
		return 0, false
	}
	v := uint16((*c)[0])<<8 | uint16((*c)[1])
	*c = (*c)[2:]
	return v, true
}

func (c *cursor) bytes(n int) (cursor, bool) {
	if len(*c) < n {
		return nil, false
	}
	v := (*c)[:n:n]
	*c = (*c)[n:]
	return v, true
}

func (c *cursor) vec8() (cursor, bool) {
	n, ok := c.u8()
	if !ok {
		return nil, false
	}
	return c.bytes(int(n))
}

func (c *cursor) vec16() (cursor, bool) {
	n, ok := c.u16()
	if !ok {
		return nil, false
	}
	return c.bytes(int(n))
}
