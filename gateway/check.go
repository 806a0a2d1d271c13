package gateway

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgegate/edgegate/gateway/clientauth"
	"github.com/edgegate/edgegate/gateway/config"
)

// WriteRoutes prints the route table a configuration gives: each host
// pattern, the vhost it reaches, the mode and the upstream.
func WriteRoutes(w io.Writer, cfg *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tVHOST\tMODE\tUPSTREAM\tPROXY")
	for _, v := range cfg.VHosts {
		for _, h := range v.Hosts {
			pat, _ := config.HostPattern(h)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", pat, v.Name, v.Mode, upstreamList(v.Upstream), v.Upstream.ProxyProtocol)
		}
	}
	unmatched := cfg.Unmatched
	if unmatched != "close" && unmatched != "reset" {
		unmatched = "-> " + unmatched
	}
	fmt.Fprintf(tw, "(no SNI or unknown)\t%s\t\t\t\n", unmatched)
	tw.Flush()
}

// upstreamList writes an upstream's servers for the route table: the
// address, or each server with its weight and the balancing method.
func upstreamList(u config.Upstream) string {
	if len(u.Servers) == 0 {
		return u.Address
	}
	var parts []string
	for _, s := range u.Servers {
		parts = append(parts, fmt.Sprintf("%s*%d", s.Address, s.Weight))
	}
	return strings.Join(parts, ",") + " (" + u.Balance + ")"
}

// Warnings lists what is valid but unwise in a configuration, each with
// FILE:LINE where it has one. It reads the files the configuration names;
// those that do not load are for NewServer to report.
func Warnings(cfg *config.Config) []string {
	ws := append([]string(nil), cfg.Notes...)
	mtlsUpstreams := map[string]string{}
	for i, v := range cfg.VHosts {
		if v.Mode != "mtls" {
			continue
		}
		for _, srv := range v.Upstream.List() {
			mtlsUpstreams[srv.Address] = v.Name
		}
		if v.ClientAuth.CA == "cloudflare" && len(v.ClientAuth.SPKISHA256) == 0 {
			ws = append(ws, cfg.ErrAt(fmt.Sprintf("vhost %q trusts Cloudflare's shared origin-pull CA without spki_sha256 pins: "+
				"that certificate proves only that a connection comes from Cloudflare, and any Cloudflare customer can "+
				"point a zone at this origin; upload a zone-level or per-hostname certificate and pin it", v.Name), "vhosts", i, "client_auth").Error())
		}
		if v.Upstream.TLS != nil && v.Upstream.ProxyProtocol == "v2" {
			ws = append(ws, cfg.ErrAt(fmt.Sprintf("vhost %q sends a PROXY v2 header with the client's TLS facts over upstream.tls: "+
				"nginx's `listen ... ssl proxy_protocol` reads at most 108 bytes of it and closes every connection "+
				"(\"header is too large\"); if the origin is nginx, set upstream.proxy_protocol: v1", v.Name),
				"vhosts", i, "upstream", "proxy_protocol").Error())
		}
		for _, w := range config.TLSWarnings(v) {
			ws = append(ws, cfg.ErrAt(w, "vhosts", i, "tls").Error())
		}
		ws = append(ws, fileWarnings(cfg, i)...)
	}
	if ca := cfg.Cloudflare.CA; usesCloudflareCA(cfg) && time.Until(ca.NotAfter) < 180*24*time.Hour {
		ws = append(ws, fmt.Sprintf("the Cloudflare origin-pull CA (%s) expires %s", cfg.Cloudflare.Source, ca.NotAfter.Format(time.DateOnly)))
	}
	for i, v := range cfg.VHosts {
		if v.Mode != "passthrough" {
			continue
		}
		for _, srv := range v.Upstream.List() {
			if m, ok := mtlsUpstreams[srv.Address]; ok {
				ws = append(ws, cfg.ErrAt(fmt.Sprintf("passthrough vhost %q and mtls vhost %q share upstream %s: a client could send "+
					"SNI for %s and a Host header for an mtls name, skipping the client certificate",
					v.Name, m, srv.Address, strings.Join(v.Hosts, ",")), "vhosts", i, "upstream").Error())
			}
		}
	}
	return ws
}

// fileWarnings looks at the files of mtls vhost i: certificates near their
// end, host names no certificate covers, keys every user can read, a CA
// certificate where a server certificate belongs, one that is not a CA
// where CAs belong, and CRLs past their next update.
func fileWarnings(cfg *config.Config, i int) []string {
	v := &cfg.VHosts[i]
	var ws []string
	warn := func(msg string, path ...any) {
		ws = append(ws, cfg.ErrAt(fmt.Sprintf("vhost %q: %s", v.Name, msg), append([]any{"vhosts", i}, path...)...).Error())
	}
	var leaves []*x509.Certificate
	var names []string // what each certificate names, for messages
	for j, cf := range v.TLS.Certificates {
		c, err := loadKeyPair(cfg, cf)
		if err != nil || c.Leaf == nil {
			continue
		}
		leaves = append(leaves, c.Leaf)
		if len(c.Leaf.DNSNames) == 0 {
			names = append(names, cf.Cert+" names no DNS name")
		} else {
			names = append(names, fmt.Sprintf("%s names %s", cf.Cert, strings.Join(c.Leaf.DNSNames, ", ")))
		}
		if time.Until(c.Leaf.NotAfter) < 30*24*time.Hour {
			warn(fmt.Sprintf("certificate %s expires %s", cf.Cert, c.Leaf.NotAfter.Format(time.DateOnly)), "tls", "certificates", j)
		}
		if c.Leaf.IsCA {
			warn(fmt.Sprintf("tls.certificates: %s is a CA certificate (%s), not a server certificate: "+
				"a CA bundle given where the server's own certificate belongs?", cf.Cert, c.Leaf.Subject), "tls", "certificates", j, "cert")
		}
		if m, ok := readableByOthers(cfg.Path(cf.Key)); ok {
			warn(fmt.Sprintf("tls.certificates: key %s is readable by every user (mode %04o); chmod o-r it", cf.Key, m), "tls", "certificates", j, "key")
		}
	}
	if f := v.TLS.SessionTicketKeys; f != "" {
		if m, ok := readableByOthers(cfg.Path(f)); ok {
			warn(fmt.Sprintf("tls.session_ticket_keys: %s is readable by every user (mode %04o), and decrypts every session; chmod o-r it", f, m), "tls", "session_ticket_keys")
		}
	}
	if len(leaves) > 0 {
		for j, h := range v.Hosts {
			pat, _ := config.HostPattern(h)
			if covered(leaves, pat) {
				continue
			}
			msg := fmt.Sprintf("host %q is not covered by any of its certificates (%s): clients will see a name mismatch", h, strings.Join(names, "; "))
			if parent, ok := strings.CutPrefix(pat, "*."); ok {
				msg += fmt.Sprintf("; a wildcard host needs a certificate for *.%s", parent)
			}
			warn(msg, "hosts", j)
		}
	}
	if ca := v.ClientAuth.CA; ca != "cloudflare" {
		if b, err := os.ReadFile(cfg.Path(ca)); err == nil {
			for _, c := range pemCertificates(b) {
				if !c.IsCA {
					warn(fmt.Sprintf("client_auth.ca: %s holds %s, which is not a CA certificate: a leaf given where the CA that issues client certificates belongs?", ca, c.Subject), "client_auth", "ca")
				}
			}
		}
	}
	for j, f := range v.ClientAuth.CRL {
		b, err := os.ReadFile(cfg.Path(f))
		if err != nil {
			continue
		}
		lists, _ := clientauth.ParseCRLs(b)
		for _, l := range lists {
			if !l.NextUpdate.IsZero() && l.NextUpdate.Before(time.Now()) {
				warn(fmt.Sprintf("client_auth.crl: %s (issued by %s) expired %s: its CA has published a newer list, "+
					"whose revocations edgegate does not know; the expired list is still applied", f, l.Issuer, l.NextUpdate.Format(time.DateTime)),
					"client_auth", "crl", j)
			}
		}
	}
	return ws
}

// covered reports whether one of the certificates is valid for every name
// the host pattern routes: the name itself, or for "*.example.com" any
// single label under it, which only a certificate for "*.example.com"
// covers.
func covered(leaves []*x509.Certificate, pat string) bool {
	for _, l := range leaves {
		if strings.HasPrefix(pat, "*.") {
			for _, n := range l.DNSNames {
				if strings.EqualFold(strings.TrimSuffix(n, "."), pat) {
					return true
				}
			}
		} else if l.VerifyHostname(pat) == nil {
			return true
		}
	}
	return false
}

// readableByOthers returns a file's permission bits and whether users
// other than its owner and group may read it.
func readableByOthers(path string) (os.FileMode, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	return fi.Mode().Perm(), fi.Mode().Perm()&0o004 != 0
}

// pemCertificates parses the certificates in a PEM bundle, skipping what
// does not parse.
func pemCertificates(b []byte) []*x509.Certificate {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return certs
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			certs = append(certs, c)
		}
	}
}

// usesCloudflareCA reports whether an mtls vhost trusts Cloudflare's CA.
func usesCloudflareCA(cfg *config.Config) bool {
	for _, v := range cfg.VHosts {
		if v.Mode == "mtls" && v.ClientAuth.CA == "cloudflare" {
			return true
		}
	}
	return false
}
