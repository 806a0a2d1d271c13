package cloudflare

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Cloudflare's data can be refreshed without a new release: `edgegate
// cloudflare update` writes these three files into a folder
// (the configuration's cloudflare_data), and a valid set there replaces the
// embedded copies for every configuration loaded afterwards.
const (
	IPv4File = "ips-v4.txt"
	IPv6File = "ips-v6.txt"
	CAFile   = "origin-pull-ca.pem"
)

// CACommonName is the subject CN of Cloudflare's shared
// origin-pull CA. A replacement CA with another name is accepted (the
// operator may know better) but warned about.
const CACommonName = "origin-pull.cloudflare.net"

// The broadest prefix a Cloudflare list may hold. Cloudflare's largest
// ranges are an IPv4 /13 and an IPv6 /29; a /0 or /1 in an allow-list is a
// mistake that would let the whole internet in as "Cloudflare".
const (
	broadestIPv4 = 8
	broadestIPv6 = 16
)

// Data is one consistent set of Cloudflare's public data: the
// origin-pull CA behind `client_auth.ca: cloudflare` and the edge ranges
// behind the word "cloudflare" in allow_from, never_limit and the eBPF
// lists. A Data is never modified once built.
type Data struct {
	CA   *x509.Certificate
	IPv4 []netip.Prefix
	IPv6 []netip.Prefix
	// Source is the folder the set was read from, or "built-in".
	Source string
	// Warnings lists what is accepted but unexpected, such as a CA whose
	// subject is not Cloudflare's.
	Warnings []string

	pool *x509.CertPool
}

func newData(ca *x509.Certificate, v4, v6 []netip.Prefix, source string, warnings []string) *Data {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Data{CA: ca, IPv4: v4, IPv6: v6, Source: source, Warnings: warnings, pool: pool}
}

// Builtin returns the set embedded at build time.
func Builtin() *Data { return builtin() }

// Read reads and validates ips-v4.txt, ips-v6.txt and
// origin-pull-ca.pem in dir with Parse, without installing
// them. A missing dir, or one holding none of the three, gives the built-in
// set; a dir holding only some of them is an error (a half-written set).
func Read(dir string, now time.Time) (*Data, error) {
	names := []string{IPv4File, IPv6File, CAFile}
	var contents [3][]byte
	var missing []string
	for i, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			return nil, fmt.Errorf("cloudflare data: %w", err)
		}
		contents[i] = b
	}
	if len(missing) == len(names) {
		return builtin(), nil
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cloudflare data in %s: %v missing (a set is all three files)", dir, missing)
	}
	d, err := Parse(contents[0], contents[1], contents[2], now)
	if err != nil {
		return nil, fmt.Errorf("cloudflare data in %s: %w", dir, err)
	}
	d.Source = dir
	return d, nil
}

// Parse validates a set of Cloudflare data: the IPv4 and IPv6
// lists in the format of Cloudflare's ips-v4 and ips-v6 files, and the
// origin-pull CA in PEM. It refuses, rather than returns part of a set:
//
//   - a list that parsePrefixList refuses (empty, malformed, glued lines,
//     an HTML page) or with fewer than 10 IPv4 or 5 IPv6 entries (Cloudflare
//     publishes 15 and 7; fewer means a truncated download);
//   - an IPv6 prefix in the IPv4 list or the reverse (files swapped);
//   - a prefix broader than /8 (IPv4) or /16 (IPv6);
//   - a CA file that is not exactly one PEM certificate, a certificate that
//     is not a CA, or one not valid at now.
//
// A CA whose subject CN is not origin-pull.cloudflare.net is accepted with a
// warning in the result's Warnings.
func Parse(ipv4, ipv6, caPEM []byte, now time.Time) (*Data, error) {
	v4, err := parseList(IPv4File, ipv4, minIPv4, true)
	if err != nil {
		return nil, err
	}
	v6, err := parseList(IPv6File, ipv6, minIPv6, false)
	if err != nil {
		return nil, err
	}
	ca, err := parseCA(caPEM, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAFile, err)
	}
	var warnings []string
	if ca.Subject.CommonName != CACommonName {
		warnings = append(warnings, fmt.Sprintf("%s: the CA's subject is %q, not CN=%s: "+
			"every mtls vhost with client_auth.ca: cloudflare will trust whatever this CA signs",
			CAFile, ca.Subject.String(), CACommonName))
	}
	return newData(ca, v4, v6, "", warnings), nil
}

func parseList(name string, data []byte, minEntries int, ipv4 bool) ([]netip.Prefix, error) {
	ps, err := parsePrefixList(data, minEntries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, p := range ps {
		if p.Addr().Is4() != ipv4 || p.Addr().Is4In6() {
			want := "IPv4"
			if !ipv4 {
				want = "IPv6"
			}
			return nil, fmt.Errorf("%s: %s is not an %s prefix (files swapped?)", name, p, want)
		}
		broadest := broadestIPv6
		if ipv4 {
			broadest = broadestIPv4
		}
		if p.Bits() < broadest {
			return nil, fmt.Errorf("%s: %s is broader than /%d; no Cloudflare range is that large", name, p, broadest)
		}
	}
	return ps, nil
}

func parseCA(data []byte, now time.Time) (*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a PEM %q block; want one CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	switch {
	case len(certs) == 0 && len(bytes.TrimSpace(data)) == 0:
		return nil, errors.New("is empty")
	case len(certs) == 0:
		return nil, fmt.Errorf("is not a PEM certificate (starts %q)", clipLine(string(bytes.TrimSpace(data)), 32))
	case len(certs) > 1:
		return nil, fmt.Errorf("holds %d certificates; want exactly one, Cloudflare's origin-pull CA", len(certs))
	}
	ca := certs[0]
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, fmt.Errorf("%q is not a CA certificate (a leaf cannot sign Cloudflare's client certificates)", ca.Subject.String())
	}
	if now.Before(ca.NotBefore) {
		return nil, fmt.Errorf("%q is not valid before %s", ca.Subject.String(), ca.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(ca.NotAfter) {
		return nil, fmt.Errorf("%q expired %s", ca.Subject.String(), ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return ca, nil
}
