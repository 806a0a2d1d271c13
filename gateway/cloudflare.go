package gateway

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

// Embedded copies of Cloudflare's public data; see cloudflare/README.md.
var (
	//go:embed cloudflare/origin-pull-ca.pem
	cloudflareCAPEM []byte
	//go:embed cloudflare/ips-v4.txt
	cloudflareIPv4 []byte
	//go:embed cloudflare/ips-v6.txt
	cloudflareIPv6 []byte
)

// Lower bounds for any Cloudflare list. Cloudflare publishes 15 IPv4 and 7
// IPv6 ranges; a list far shorter than that is a truncated copy.
const (
	minCloudflareIPv4 = 10
	minCloudflareIPv6 = 5
)

var builtinCloudflare = sync.OnceValue(func() *CloudflareData {
	block, _ := pem.Decode(cloudflareCAPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		panic("gateway: embedded cloudflare/origin-pull-ca.pem holds no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic("gateway: embedded cloudflare/origin-pull-ca.pem: " + err.Error())
	}
	v4, err := ParsePrefixList(cloudflareIPv4, minCloudflareIPv4)
	if err != nil {
		panic("gateway: embedded cloudflare/ips-v4.txt: " + err.Error())
	}
	v6, err := ParsePrefixList(cloudflareIPv6, minCloudflareIPv6)
	if err != nil {
		panic("gateway: embedded cloudflare/ips-v6.txt: " + err.Error())
	}
	// The built-in set is not refused for expiry: after 2029-11-01 it still
	// loads, and `edgegate check` and the handshakes' own verification say
	// why nothing is accepted.
	return newCloudflareData(cert, v4, v6, "built-in", nil)
})

// CloudflareCA returns the Cloudflare origin-pull CA in force (the set
// installed by LoadCloudflareData, else the embedded copy) as a pool for
// client verification and as a certificate (for its dates, in checks and
// logs). Each call returns a fresh pool that the caller may extend; the
// certificate is shared and must not be modified.
func CloudflareCA() (*x509.CertPool, *x509.Certificate) {
	d := CurrentCloudflareData()
	return d.pool.Clone(), d.CA
}

// CloudflarePrefixes returns Cloudflare's IPv4 and IPv6 edge ranges in
// force (the set installed by LoadCloudflareData, else the copies embedded
// at build time), IPv4 first. The caller owns the slice.
func CloudflarePrefixes() []netip.Prefix {
	d := CurrentCloudflareData()
	return append(slices.Clone(d.IPv4), d.IPv6...)
}

// ParsePrefixList parses an allow-list with one CIDR a line, the format of
// Cloudflare's ips-v4 and ips-v6 files. Blank lines and lines starting with
// '#' are skipped; surrounding whitespace and CR line ends are ignored.
//
// It refuses the failures hand-kept lists are known for rather than return a
// partial list: a line that is not exactly one canonical prefix (two lists
// concatenated without a newline glue two CIDRs into one line; an HTML page
// from a redirect is not a prefix), and a list with fewer than minEntries
// prefixes (an empty or truncated download). The caller keeps its last good
// list when this returns an error.
func ParsePrefixList(data []byte, minEntries int) ([]netip.Prefix, error) {
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
