package clientauth

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// ParsePin parses an SPKI SHA-256 pin as written in client_auth.spki_sha256:
// 64 hex digits, optionally as colon-separated pairs (the form openssl
// prints), or 32 bytes in base64, standard or URL alphabet, padded or not.
func ParsePin(s string) ([32]byte, error) {
	var pin [32]byte
	s = strings.TrimSpace(s)
	h := s
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		ok := len(parts) == len(pin)
		for _, p := range parts {
			ok = ok && len(p) == 2
		}
		if !ok {
			return pin, fmt.Errorf("pin %q: colon form must be 32 pairs of hex digits", s)
		}
		h = strings.Join(parts, "")
	}
	if len(h) == hex.EncodedLen(len(pin)) {
		if _, err := hex.Decode(pin[:], []byte(h)); err == nil {
			return pin, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.Strict().DecodeString(s)
		if err == nil && len(b) == len(pin) {
			copy(pin[:], b)
			return pin, nil
		}
	}
	return [32]byte{}, fmt.Errorf("pin %q: want a SHA-256 digest as 64 hex digits or base64", s)
}
