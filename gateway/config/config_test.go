package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/cloudflare"
	"github.com/edgegate/edgegate/gateway/testpki"
)

const goodConfig = `listen:
  - address: ":443"
    accept_proxy_protocol: true
    trusted_proxies: ["10.0.0.0/8", "2001:db8::1"]
unmatched: close
timeouts: {client_hello: 3s, upstream_dial: 2s, idle: 1m, drain: 10s}
metrics: {listen: "127.0.0.1:9090"}
log: {level: debug, format: json}
vhosts:
  - name: www
    hosts: ["www.example.com", "*.static.example.com"]
    mode: passthrough
    upstream:
      address: "127.0.0.1:8443"
      proxy_protocol: v1
  - name: sock
    hosts: [Sock.Example.com.]
    mode: passthrough
    upstream: {address: "unix:/run/sock"}
`

func TestParseConfigGood(t *testing.T) {
	cfg, err := Parse("/etc/edgegate/edgegate.yaml", []byte(goodConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Listen[0].Trusted; len(got) != 2 || got[1].String() != "2001:db8::1/128" {
		t.Errorf("trusted proxies = %v", got)
	}
	if cfg.Timeouts.ClientHello.D() != 3*time.Second || cfg.Timeouts.Handshake.D() != 10*time.Second {
		t.Errorf("timeouts = %+v (handshake should default to 10s)", cfg.Timeouts)
	}
	if cfg.VHosts[1].Upstream.ProxyProtocol != "v2" {
		t.Errorf("proxy_protocol default = %q, want v2", cfg.VHosts[1].Upstream.ProxyProtocol)
	}
	if cfg.Limits.MaxHelloSize != 16384 {
		t.Errorf("max_hello_size default = %d", cfg.Limits.MaxHelloSize)
	}
	if got := cfg.Path("certs/a.crt"); got != "/etc/edgegate/certs/a.crt" {
		t.Errorf("relative path resolves to %q", got)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte(`listen: [{address: ":443"}]
vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Timeouts{ClientHello: Duration(5 * time.Second), UpstreamDial: Duration(5 * time.Second),
		Idle: Duration(5 * time.Minute), Drain: Duration(30 * time.Second), Handshake: Duration(10 * time.Second)}
	if cfg.Timeouts != want || cfg.Unmatched != "close" || cfg.Log.Level != "info" || cfg.Log.Format != "text" {
		t.Errorf("defaults: %+v unmatched=%q log=%+v", cfg.Timeouts, cfg.Unmatched, cfg.Log)
	}
}

// TestParseZeroMeansDefault: a zero written where zero means "the
// default" (idle: 0s is five minutes, not "no idle timeout") loads, with a
// note at its line; an absent key does not.
func TestParseZeroMeansDefault(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`listen: [{address: ":443"}]
timeouts:
  client_hello: 0s
  idle: 0
  drain:
  handshake: 10s
limits: {max_hello_size: 0}
ebpf:
  blocklist: {after: 0, within: 0ms}
  flow_table_size: 0
vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"c.yaml:3: timeouts.client_hello: 0s means the default, 5s; write the default or remove the key",
		"c.yaml:4: timeouts.idle: 0 means the default, 5m; write the default or remove the key",
		"c.yaml:5: timeouts.drain: no value means the default, 30s; write the default or remove the key",
		"c.yaml:7: limits.max_hello_size: 0 means the default, 16384; write the default or remove the key",
		"c.yaml:9: ebpf.blocklist.after: 0 means the default, 20; write the default or remove the key",
		"c.yaml:9: ebpf.blocklist.within: 0ms means the default, 1m; write the default or remove the key",
		"c.yaml:10: ebpf.flow_table_size: 0 means the default, 262144; write the default or remove the key",
	}
	var got []string
	for _, n := range cfg.Notes {
		if strings.HasPrefix(n, "c.yaml:") {
			got = append(got, n)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Timeouts.Idle.D() != 5*time.Minute || cfg.Timeouts.UpstreamDial.D() != 5*time.Second {
		t.Errorf("timeouts %+v; want the defaults", cfg.Timeouts)
	}
}

// TestParseMetricsPortZero: metrics.listen and a listener may both ask for
// any free port on one address.
func TestParseMetricsPortZero(t *testing.T) {
	if _, err := Parse("c.yaml", []byte(`listen: [{address: "127.0.0.1:0"}]
metrics: {listen: "127.0.0.1:0"}
vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`), nil); err != nil {
		t.Fatal(err)
	}
}

// TestParseConfigErrors checks that every kind of mistake is refused with
// FILE:LINE pointing at the offending line.
func TestParseConfigErrors(t *testing.T) {
	base := func(vhost string) string {
		return "listen: [{address: \":443\"}]\nvhosts:\n" + vhost
	}
	cases := []struct {
		name, yaml, want string
	}{
		{"empty", "", "c.yaml:1: empty configuration"},
		{"syntax", "listen: [\n", "c.yaml:"},
		{"unknown key", "listen: [{address: \":443\"}]\nbogus: 1\n", `c.yaml:2: unknown key "bogus"`},
		{"unknown nested key", base("  - name: a\n    hosts: [a.example]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\", porxy: v1}\n"), `c.yaml:6: unknown key "porxy"`},
		{"wrong type", "listen: [{address: \":443\", accept_proxy_protocol: yes-please}]\n", "c.yaml:1: wrong type"},
		{"bad duration", "listen: [{address: \":443\"}]\ntimeouts:\n  idle: forever\n", `c.yaml:3: "forever" is not a duration`},
		{"no listen", "vhosts: []\n", "c.yaml:1: listen: at least one listener is required"},
		{"bad listen", "listen: [{address: \"443\"}]\n", `c.yaml:1: listen address "443" is not host:port`},
		{"no vhosts", "listen: [{address: \":443\"}]\n", "vhosts: at least one vhost is required"},
		{"listen port out of range", "listen:\n  - address: \":8443\"\n  - address: \":99999\"\n", `c.yaml:3: listen address ":99999": port 99999 is out of range (0 to 65535)`},
		{"listen port unknown", "listen: [{address: \":htps\"}]\n", `c.yaml:1: listen address ":htps": "htps" is not a port number or a known service`},
		{"listen host unresolvable", "listen:\n  - address: \"edgegate.invalid:443\"\n", `c.yaml:2: listen address "edgegate.invalid:443": host "edgegate.invalid" does not resolve`},
		{"metrics port out of range", "listen: [{address: \":443\"}]\nmetrics:\n  listen: \"127.0.0.1:65536\"\n", `c.yaml:3: metrics.listen "127.0.0.1:65536": port 65536 is out of range`},
		{"metrics host unresolvable", "listen: [{address: \":443\"}]\nmetrics: {listen: \"metrics.invalid:9090\"}\n", `c.yaml:2: metrics.listen "metrics.invalid:9090": host "metrics.invalid" does not resolve`},
		{"metrics on a listen address", "listen: [{address: \"127.0.0.1:8443\"}]\nmetrics: {listen: \"127.0.0.1:8443\"}\n", `c.yaml:2: metrics.listen "127.0.0.1:8443" is also a listen address`},
		{"proxy without trust", "listen:\n  - address: \":443\"\n    accept_proxy_protocol: true\nvhosts: []\n", "c.yaml:3: accept_proxy_protocol needs trusted_proxies"},
		{"bad cidr", "listen:\n  - address: \":443\"\n    accept_proxy_protocol: true\n    trusted_proxies: [10.0.0.1/8]\n", "c.yaml:4: trusted_proxies: \"10.0.0.1/8\" has host bits set"},
		{"missing mode", base("  - name: a\n    hosts: [a.example]\n    upstream: {address: \"1.2.3.4:5\"}\n"), `c.yaml:3: vhost "a": mode is required`},
		{"bad mode", base("  - name: a\n    hosts: [a.example]\n    mode: magic\n    upstream: {address: \"1.2.3.4:5\"}\n"), `c.yaml:5: vhost "a": mode "magic"`},
		{"no hosts", base("  - name: a\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\"}\n"), `c.yaml:3: vhost "a": hosts: at least one`},
		{"bad host", base("  - name: a\n    hosts: [ok.example, \"bad name!\"]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\"}\n"), `c.yaml:4: vhost "a": host "bad name!" is not a valid DNS name`},
		{"bad wildcard", base("  - name: a\n    hosts: [\"*.*.example\"]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\"}\n"), `is not a valid wildcard`},
		{"ip host", base("  - name: a\n    hosts: [\"10.0.0.1\"]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\"}\n"), `is not a valid DNS name`},
		{"no upstream", base("  - name: a\n    hosts: [a.example]\n    mode: passthrough\n"), `vhost "a": upstream.address is required`},
		{"bad proxy version", base("  - name: a\n    hosts: [a.example]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\", proxy_protocol: v3}\n"), `c.yaml:6: vhost "a": upstream.proxy_protocol "v3"`},
		{"bad port", base("  - name: a\n    hosts: [a.example]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:99999\"}\n"), `bad port`},
		{"duplicate host", base("  - {name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n  - {name: b, hosts: [A.Example.], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n"), `c.yaml:4: host "A.Example." is already served by vhost "a"`},
		{"duplicate wildcard", base("  - {name: a, hosts: [\"*.a.example\"], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n  - {name: b, hosts: [\"*.A.example\"], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n"), `already served by vhost "a"`},
		{"duplicate name", base("  - {name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n  - {name: a, hosts: [b.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n"), `c.yaml:4: vhost name "a" is used twice`},
		{"unmatched unknown", "listen: [{address: \":443\"}]\nunmatched: nowhere\nvhosts:\n  - {name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n", `c.yaml:2: unmatched "nowhere"`},
		{"tls on passthrough", base("  - name: a\n    hosts: [a.example]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\"}\n    tls: {min_version: \"1.3\"}\n"), `c.yaml:7: vhost "a": tls is only for mode mtls`},
		{"mtls without certs", base("  - name: a\n    hosts: [a.example]\n    mode: mtls\n    upstream: {address: \"1.2.3.4:5\"}\n"), `vhost "a": tls.certificates: at least one`},
		{"mtls bad version", base("  - name: a\n    hosts: [a.example]\n    mode: mtls\n    upstream: {address: \"1.2.3.4:5\"}\n    tls:\n      certificates: [{cert: a, key: b}]\n      min_version: \"1.1\"\n"), `c.yaml:9: vhost "a": tls.min_version "1.1"`},
		{"mtls bad allow", base("  - name: a\n    hosts: [a.example]\n    mode: mtls\n    upstream: {address: \"1.2.3.4:5\"}\n    tls: {certificates: [{cert: a, key: b}]}\n    allow_from: [cloudflare, bogus]\n"), `c.yaml:8: vhost "a": allow_from: "bogus"`},
		{"bad on_reject", base("  - name: a\n    hosts: [a.example]\n    mode: mtls\n    upstream: {address: \"1.2.3.4:5\"}\n    tls: {certificates: [{cert: a, key: b}]}\n    on_reject: explode\n"), `c.yaml:8: vhost "a": on_reject "explode"`},
		{"bad log", "listen: [{address: \":443\"}]\nlog: {level: loud}\nvhosts:\n  - {name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n", `c.yaml:2: log.level "loud"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml), nil)
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "c.yaml:") {
				t.Fatalf("error %q does not start with FILE:LINE", err)
			}
		})
	}
}

// TestCloudflareDataAtLoad: the word "cloudflare" in a configuration
// expands to the set in its cloudflare_data folder, read at load time, and
// loading changes nothing outside the configuration it returns.
func TestCloudflareDataAtLoad(t *testing.T) {
	ca, err := testpki.NewCA(cloudflare.CACommonName)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var v4, v6 strings.Builder
	for i := range 12 {
		fmt.Fprintf(&v4, "198.18.%d.0/24\n", i)
	}
	for i := range 6 {
		fmt.Fprintf(&v6, "2001:db8:%x::/48\n", i)
	}
	os.WriteFile(filepath.Join(dir, cloudflare.IPv4File), []byte(v4.String()), 0o644)
	os.WriteFile(filepath.Join(dir, cloudflare.IPv6File), []byte(v6.String()), 0o644)
	os.WriteFile(filepath.Join(dir, cloudflare.CAFile), ca.PEM, 0o644)
	cfg, err := Parse("edgegate.yaml", []byte(`
listen: [{address: "127.0.0.1:8443"}]
cloudflare_data: `+dir+`
limits: {never_limit: [cloudflare]}
vhosts:
  - {name: www, hosts: [www.example.com], mode: passthrough, upstream: {address: "127.0.0.1:8444"}}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cloudflare.Source != dir || !cfg.Cloudflare.CA.Equal(ca.Cert) {
		t.Fatalf("configuration loaded with the set from %q; want %s", cfg.Cloudflare.Source, dir)
	}
	in := func(a string) bool {
		for _, p := range cfg.Limits.NeverLimitPrefixes {
			if p.Contains(netip.MustParseAddr(a)) {
				return true
			}
		}
		return false
	}
	if !in("198.18.3.9") || in("104.16.0.1") {
		t.Errorf("never_limit: [cloudflare] = %v; want the installed ranges, not the built-in ones", cfg.Limits.NeverLimitPrefixes)
	}
	if b := cloudflare.Builtin(); b.CA.Equal(ca.Cert) || len(b.IPv4) == 12 {
		t.Error("loading a configuration changed the built-in set")
	}
}

// TestCloudflareDataRefusedAtLoad: a broken cloudflare_data folder does not
// stop a configuration from loading; the set in force stays and check says
// why.
func TestCloudflareDataRefusedAtLoad(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{cloudflare.IPv4File, cloudflare.IPv6File, cloudflare.CAFile} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	keep, err := cloudflare.Parse([]byte(testList(10, false)), []byte(testList(5, true)), testCAPEM(t), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keep.Source = "/var/lib/edgegate/cloudflare"
	cfg, err := Parse("c.yaml", []byte("listen: [{address: \":443\"}]\ncloudflare_data: "+dir+"\n"+
		"vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}]\n"), keep)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cloudflare != keep {
		t.Fatalf("a refused set: the configuration uses the set from %q, want the one in force", cfg.Cloudflare.Source)
	}
	found := false
	for _, w := range cfg.Notes {
		found = found || strings.Contains(w, "cloudflare_data "+dir+" refused, keeping /var/lib/edgegate/cloudflare")
	}
	if !found {
		t.Fatalf("notes %q do not report the refused set", cfg.Notes)
	}
}

func testList(n int, ipv6 bool) string {
	var b strings.Builder
	for i := range n {
		if ipv6 {
			fmt.Fprintf(&b, "2001:db8:%x::/48\n", i)
		} else {
			fmt.Fprintf(&b, "198.18.%d.0/24\n", i)
		}
	}
	return b.String()
}

func testCAPEM(t *testing.T) []byte {
	ca, err := testpki.NewCA(cloudflare.CACommonName)
	if err != nil {
		t.Fatal(err)
	}
	return ca.PEM
}

// TestParseSyntaxErrors: a document that is not YAML is refused at the line
// where the mistake is, whatever form the decoder's message takes ("line N:"
// pointing elsewhere, or no line at all).
func TestParseSyntaxErrors(t *testing.T) {
	const listen = "listen: [{address: \":443\"}]\n"
	cases := []struct {
		name, yaml string
		line       int
		msg        string
	}{
		{"unclosed flow sequence at the end", "listen: [\n", 1, "did not find expected node content"},
		{"unclosed flow sequence", "listen: [{address: \":443\"}\nunmatched: close\nvhosts: []\n", 1, "did not find expected ',' or ']'"},
		{"unclosed flow mapping", listen + "metrics: {listen: \"127.0.0.1:9090\"\nlog: {level: info}\n", 2, "did not find expected ',' or '}'"},
		{"closing bracket too many", "listen: [{address: \":443\"}]]\n", 1, "did not find expected key"},
		{"unclosed double quote", listen + "unmatched: \"close\nvhosts: []\n", 2, "found unexpected end of stream"},
		{"unclosed single quote", listen + "log:\n  level: 'info\n", 3, "found unexpected end of stream"},
		{"mapping value in a value", listen + "unmatched: close: reset\n", 2, "mapping values are not allowed in this context"},
		{"key indented under a scalar", listen + "timeouts:\n  idle: 5m\n  drain: 30s\n    handshake: 10s\n", 5, "mapping values are not allowed in this context"},
		{"tab indentation", listen + "timeouts:\n\tidle: 5m\n", 3, "a tab: YAML indents with spaces only"},
		{"tab on the first line", "\tlisten: []\n", 1, "found character that cannot start any token (a tab"},
		{"reserved character", listen + "unmatched: @close\n", 2, "found character that cannot start any token"},
		{"backtick", listen + "vhosts:\n  - name: `www`\n", 3, "found character that cannot start any token"},
		{"key indented too far", listen + "vhosts:\n  - name: www\n    hosts: [www.example]\n      mode: passthrough\n", 5, "did not find expected key"},
		{"key indented too little", listen + "timeouts:\n  idle: 5m\n drain: 30s\n", 4, "did not find expected key"},
		{"list item in a mapping", listen + "- vhosts\n", 2, "did not find expected key"},
		{"key outdented in a list item", listen + "vhosts:\n  - name: www\n    hosts: [www.example]\n   mode: passthrough\n", 5, "did not find expected '-' indicator"},
		{"unknown escape", listen + "unmatched: \"\\q\"\n", 2, "found unknown escape character"},
		{"unknown anchor", listen + "unmatched: close\nlog: {level: *lvl}\n", 3, "unknown anchor 'lvl' referenced"},
		{"control character", listen + "unmatched: clo\x01se\n", 2, "control characters are not allowed"},
		{"invalid UTF-8", listen + "unmatched: \xffclose\n", 2, "invalid leading UTF-8 octet"},
		{"tag as a key", listen + "!!str: close\n", 2, "could not find expected ':'"},
		{"last line without newline", listen + "unmatched: a: b", 2, "mapping values are not allowed in this context"},
		{"deep in a file", listen + strings.Repeat("# comment\n", 200) + "vhosts:\n  - name: www\n    hosts: [www.example]\n      mode: passthrough\n", 205, "did not find expected key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml), nil)
			if err == nil {
				t.Fatalf("accepted; want c.yaml:%d: %s", tc.line, tc.msg)
			}
			if want := fmt.Sprintf("c.yaml:%d: ", tc.line); !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q\nwant %q and %q", err, want, tc.msg)
			}
		})
	}
}
