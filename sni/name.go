package sni

// maxNameLen is the longest DNS name in text form without the trailing dot
// (RFC 1035 2.3.4: 255 octets on the wire).
const maxNameLen = 253

// NormalizeName returns the routing form of a server name, or "" if it is
// not a valid DNS host name.
//
// The routing form is lower case (ASCII only; IDNs arrive as A-labels,
// "xn--..."), with one trailing dot removed: "Example.COM." routes as
// "example.com". Go's crypto/tls server refuses a trailing-dot SNI outright;
// edgegate routes it like the name without the dot and passes the original
// bytes on, so a passthrough upstream still sees what the client sent.
//
// A valid host name has labels of 1 to 63 letters, digits, hyphens or
// underscores, no label starting or ending with a hyphen, at most 253 bytes
// in all, and a last label that is not all digits. The last rule turns IP
// literals ("192.0.2.1", and inet_aton forms like "127.1") into "": RFC 6066
// forbids IP literals in SNI. Underscores are accepted because names with
// them exist in deployments (crypto/x509 accepts them for the same reason).
func NormalizeName(name string) string {
	return normalize([]byte(name), name)
}

// normalize returns the routing form of name. same must hold the same
// bytes as name or be ""; when the name is already in routing form it is
// returned as is, so the common case allocates nothing more.
func normalize(name []byte, same string) string {
	if len(same) != len(name) {
		// A raw name truncated for logs is not the same bytes.
		same = ""
	}
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
		if same != "" {
			same = same[:n-1]
		}
	}
	if len(name) == 0 || len(name) > maxNameLen {
		return ""
	}
	upper := false
	labelLen := 0
	allDigits := true
	for i, c := range name {
		switch {
		case c == '.':
			if labelLen == 0 || name[i-1] == '-' {
				return ""
			}
			labelLen = 0
			allDigits = true
			continue
		case c >= 'a' && c <= 'z', c == '_':
			allDigits = false
		case c >= 'A' && c <= 'Z':
			upper = true
			allDigits = false
		case c >= '0' && c <= '9':
		case c == '-':
			if labelLen == 0 {
				return ""
			}
			allDigits = false
		default:
			return ""
		}
		if labelLen++; labelLen > 63 {
			return ""
		}
	}
	if labelLen == 0 || name[len(name)-1] == '-' || allDigits {
		return ""
	}
	if !upper && same != "" {
		return same
	}
	out := make([]byte, len(name))
	for i, c := range name {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out)
}
