package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", pat, v.Name, v.Mode, v.Upstream.Address, v.Upstream.ProxyProtocol)
		}
	}
	unmatched := cfg.Unmatched
	if unmatched != "close" && unmatched != "reset" {
		unmatched = "-> " + unmatched
	}
	fmt.Fprintf(tw, "(no SNI or unknown)\t%s\t\t\t\n", unmatched)
	tw.Flush()
}

// Warnings lists what is valid but unwise in a configuration.
func Warnings(cfg *config.Config) []string {
	ws := append([]string(nil), cfg.Notes...)
	mtlsUpstreams := map[string]string{}
	for _, v := range cfg.VHosts {
		if v.Mode != "mtls" {
			continue
		}
		mtlsUpstreams[v.Upstream.Address] = v.Name
		if v.ClientAuth.CA == "cloudflare" && len(v.ClientAuth.SPKISHA256) == 0 {
			ws = append(ws, fmt.Sprintf("vhost %q trusts Cloudflare's shared origin-pull CA without spki_sha256 pins: "+
				"that certificate proves only that a connection comes from Cloudflare, and any Cloudflare customer can "+
				"point a zone at this origin; upload a zone-level or per-hostname certificate and pin it", v.Name))
		}
		ws = append(ws, config.TLSWarnings(v)...)
		for _, cf := range v.TLS.Certificates {
			c, err := tls.LoadX509KeyPair(cfg.Path(cf.Cert), cfg.Path(cf.Key))
			if err == nil && c.Leaf != nil && time.Until(c.Leaf.NotAfter) < 30*24*time.Hour {
				ws = append(ws, fmt.Sprintf("vhost %q: certificate %s expires %s", v.Name, cf.Cert, c.Leaf.NotAfter.Format(time.DateOnly)))
			}
		}
	}
	if ca := cfg.Cloudflare.CA; usesCloudflareCA(cfg) && time.Until(ca.NotAfter) < 180*24*time.Hour {
		ws = append(ws, fmt.Sprintf("the Cloudflare origin-pull CA (%s) expires %s", cfg.Cloudflare.Source, ca.NotAfter.Format(time.DateOnly)))
	}
	for _, v := range cfg.VHosts {
		if v.Mode != "passthrough" {
			continue
		}
		if m, ok := mtlsUpstreams[v.Upstream.Address]; ok {
			ws = append(ws, fmt.Sprintf("passthrough vhost %q and mtls vhost %q share upstream %s: a client could send "+
				"SNI for %s and a Host header for an mtls name, skipping the client certificate",
				v.Name, m, v.Upstream.Address, strings.Join(v.Hosts, ",")))
		}
	}
	return ws
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
