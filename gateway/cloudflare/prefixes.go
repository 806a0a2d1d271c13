// Package cloudflare holds Cloudflare's public reference data that edgegate
// relies on, the origin-pull CA and the edge IP ranges, as embedded copies
// and as sets an operator installs with `edgegate cloudflare update`, and
// validates every set before it is used.
package cloudflare

import (
	"bytes"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Embedded copies of Cloudflare's public data; see README.md.
var (
	//go:embed origin-pull-ca.pem
	cloudflareCAPEM []byte
	//go:embed ips-v4.txt
	cloudflareIPv4 []byte
	//go:embed ips-v6.txt
	cloudflareIPv6 []byte
)

// Lower bounds for any Cloudflare list. Cloudflare publishes 15 IPv4 and 7
// IPv6 ranges; a list far shorter than that is a truncated copy.
const (
	minIPv4 = 10
	minIPv6 = 5
)

var builtin = sync.OnceValue(func() *Data {
	block, _ := pem.Decode(cloudflareCAPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		panic("cloudflare: embedded origin-pull-ca.pem holds no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic("cloudflare: embedded origin-pull-ca.pem: " + err.Error())
	}
	v4, err := parsePrefixList(cloudflareIPv4, minIPv4)
	if err != nil {
		panic("cloudflare: embedded ips-v4.txt: " + err.Error())
	}
	v6, err := parsePrefixList(cloudflareIPv6, minIPv6)
	if err != nil {
		panic("cloudflare: embedded ips-v6.txt: " + err.Error())
	}
	// The built-in set is not refused for expiry: after 2029-11-01 it still
	// loads, and `edgegate check` and the handshakes' own verification say
	// why nothing is accepted.
	return newData(cert, v4, v6, "built-in", nil)
})

// Pool returns the set's origin-pull CA as a pool for client verification.
// Each call returns a fresh pool that the caller may extend.
func (d *Data) Pool() *x509.CertPool { return d.pool.Clone() }

// Prefixes returns the set's IPv4 and IPv6 edge ranges, IPv4 first. The
// caller owns the slice.
func (d *Data) Prefixes() []netip.Prefix {
	return append(slices.Clone(d.IPv4), d.IPv6...)
}

// parsePrefixList parses an allow-list with one CIDR a line, the format of
// Cloudflare's ips-v4 and ips-v6 files. Blank lines and lines starting with
// '#' are skipped; surrounding whitespace and CR line ends are ignored.
//
// It refuses the failures hand-kept lists are known for rather than return a
// partial list: a line that is not exactly one canonical prefix (two lists
// concatenated without a newline glue two CIDRs into one line; an HTML page
// from a redirect is not a prefix), and a list with fewer than minEntries
// prefixes (an empty or truncated download). The caller keeps its last good
// list when this returns an error.
func parsePrefixList(data []byte, minEntries int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("prefix list line %d: %q is not a CIDR prefix", i+1, clipLine(s, 64))
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("prefix list line %d: %s has host bits set (did you mean %s?)", i+1, p, p.Masked())
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("prefix list is empty")
	}
	if len(out) < minEntries {
		return nil, fmt.Errorf("prefix list has %d entries, want at least %d (truncated download?)", len(out), minEntries)
	}
	return out, nil
}

// clipLine shortens s for an error message, so a large bad file cannot blow
// up a log line.
func clipLine(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
