package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	cfg, err := ParseConfig("/etc/edgegate/edgegate.yaml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Listen[0].trusted; len(got) != 2 || got[1].String() != "2001:db8::1/128" {
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
	cfg, err := ParseConfig("x.yaml", []byte(`listen: [{address: ":443"}]
vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Timeouts{ClientHello: Duration(5 * time.Second), UpstreamDial: Duration(5 * time.Second),
		Idle: Duration(5 * time.Minute), Drain: Duration(30 * time.Second), Handshake: Duration(10 * time.Second)}
	if cfg.Timeouts != want || cfg.Unmatched != "close" || cfg.Log.Level != "info" || cfg.Log.Format != "text" {
		t.Errorf("defaults: %+v unmatched=%q log=%+v", cfg.Timeouts, cfg.Unmatched, cfg.Log)
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
			_, err := ParseConfig("c.yaml", []byte(tc.yaml))
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

// TestCompileErrors checks errors only loading files can find (mtls
// certificates) carry FILE:LINE too.
func TestCompileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edgegate.yaml")
	os.WriteFile(path, []byte(`listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: [app.example]
    mode: mtls
    tls:
      certificates:
        - {cert: missing.crt, key: missing.key}
    upstream: {address: "127.0.0.1:1"}
`), 0o644)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewServer(cfg, nil)
	if err == nil || !strings.HasPrefix(err.Error(), path+":8: ") || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("error %v; want %s:8: ... missing.crt", err, path)
	}
}

func TestRoutes(t *testing.T) {
	cfg, err := ParseConfig("c.yaml", []byte(`listen: [{address: ":443"}]
vhosts:
  - {name: app, hosts: [app.example.com], mode: passthrough, upstream: {address: "1.2.3.4:5"}}
  - {name: wild, hosts: ["*.example.com", "EXACT.other.test"], mode: passthrough, upstream: {address: "1.2.3.4:5"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	st, err := compile(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"app.example.com":   "app",  // exact beats wildcard
		"a.example.com":     "wild", // one label
		"example.com":       "",     // the wildcard's parent is not covered
		"a.b.example.com":   "",     // nor two labels
		"exact.other.test":  "wild", // names were normalised at load
		"other.test":        "",
		"":                  "",
		"xapp.example.com":  "wild",
		"app.example.com.x": "",
	} {
		got := ""
		if v := st.routes.lookup(name); v != nil {
			got = v.name
		}
		if got != want {
			t.Errorf("lookup(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestCloudflareDataRefusedAtLoad: a broken cloudflare_data folder does not
// stop a configuration from loading; the set in force stays and check says
// why.
func TestCloudflareDataRefusedAtLoad(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{CloudflareIPv4File, CloudflareIPv6File, CloudflareCAFile} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	before := CurrentCloudflareData()
	cfg, err := ParseConfig("c.yaml", []byte("listen: [{address: \":443\"}]\ncloudflare_data: "+dir+"\n"+
		"vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if CurrentCloudflareData() != before {
		t.Fatal("a refused set replaced the one in force")
	}
	found := false
	for _, w := range Warnings(cfg) {
		found = found || strings.Contains(w, "cloudflare_data "+dir+" refused")
	}
	if !found {
		t.Fatalf("warnings %q do not report the refused set", Warnings(cfg))
	}
}
