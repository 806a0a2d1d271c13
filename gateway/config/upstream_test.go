package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseUpstreamServers: the servers form with its defaults, and the
// single-address form read as one server of weight 1.
func TestParseUpstreamServers(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`listen: [{address: ":443"}]
vhosts:
  - name: pool
    hosts: [pool.example]
    mode: passthrough
    upstream:
      servers:
        - {address: "10.0.0.1:443", weight: 3}
        - {address: "unix:/run/app.sock"}
      balance: source_hash
      health_check: {send_proxy: true}
  - name: one
    hosts: [one.example]
    mode: passthrough
    upstream: {address: "10.0.0.9:443"}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.VHosts[0].Upstream
	want := []UpstreamServer{{"10.0.0.1:443", 3}, {"unix:/run/app.sock", 1}}
	if !reflect.DeepEqual(u.List(), want) || u.Balance != "source_hash" {
		t.Errorf("servers %v balance %s; want %v source_hash", u.List(), u.Balance, want)
	}
	hc := HealthCheck{Interval: Duration(2 * time.Second), Timeout: Duration(time.Second), Fall: 3, Rise: 2, SendProxy: true}
	if *u.HealthCheck != hc {
		t.Errorf("health_check %+v; want the defaults %+v", *u.HealthCheck, hc)
	}
	one := cfg.VHosts[1].Upstream
	if !reflect.DeepEqual(one.List(), []UpstreamServer{{"10.0.0.9:443", 1}}) || one.Balance != "round_robin" || one.HealthCheck != nil {
		t.Errorf("single address read as %v, %s, %v; want one server of weight 1, round_robin, no checks", one.List(), one.Balance, one.HealthCheck)
	}
}

// TestParseUpstreamErrors: each mistake in the new keys is reported at its
// line.
func TestParseUpstreamErrors(t *testing.T) {
	vhost := func(mode, upstream string) string {
		extra := ""
		if mode == "mtls" {
			extra = "    tls: {certificates: [{cert: a, key: b}]}\n"
		}
		return "listen: [{address: \":443\"}]\nvhosts:\n  - name: a\n    hosts: [a.example]\n    mode: " + mode + "\n" + extra + "    upstream:\n" + upstream
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"address and servers", vhost("passthrough", "      address: \"1.2.3.4:5\"\n      servers: [{address: \"1.2.3.4:6\"}]\n"), `c.yaml:8: vhost "a": upstream: address and servers are exclusive`},
		{"bad server", vhost("passthrough", "      servers:\n        - {address: \"1.2.3.4:5\"}\n        - {address: \"nope\"}\n"), `c.yaml:9: vhost "a": upstream.servers: address "nope": want host:port`},
		{"twice", vhost("passthrough", "      servers:\n        - {address: \"1.2.3.4:5\"}\n        - {address: \"1.2.3.4:5\"}\n"), `c.yaml:9: vhost "a": upstream.servers: "1.2.3.4:5" appears twice`},
		{"weight", vhost("passthrough", "      servers:\n        - address: \"1.2.3.4:5\"\n          weight: 5000\n"), `c.yaml:9: vhost "a": upstream.servers: weight must be between 1 and 1000`},
		{"balance", vhost("passthrough", "      servers: [{address: \"1.2.3.4:5\"}]\n      balance: random\n"), `c.yaml:8: vhost "a": upstream.balance "random"`},
		{"check timeout", vhost("passthrough", "      address: \"1.2.3.4:5\"\n      health_check:\n        interval: 1s\n        timeout: 2s\n"), `c.yaml:10: vhost "a": upstream.health_check.timeout must not exceed its interval`},
		{"check fall", vhost("passthrough", "      address: \"1.2.3.4:5\"\n      health_check: {fall: -1}\n"), `c.yaml:8: vhost "a": upstream.health_check.fall must be between 1 and 100`},
		{"send_proxy off", vhost("passthrough", "      address: \"1.2.3.4:5\"\n      proxy_protocol: \"off\"\n      health_check: {send_proxy: true}\n"), `upstream.health_check.send_proxy needs proxy_protocol v1 or v2`},
		{"tls on passthrough", vhost("passthrough", "      address: \"1.2.3.4:5\"\n      tls: {ca: system}\n"), `c.yaml:8: vhost "a": upstream.tls is only for mode mtls`},
		{"tls without ca", vhost("mtls", "      address: \"1.2.3.4:5\"\n      tls: {server_name: x}\n"), `c.yaml:9: vhost "a": upstream.tls.ca is required`},
		{"tls cert without key", vhost("mtls", "      address: \"1.2.3.4:5\"\n      tls: {ca: system, certificate: c.pem}\n"), `c.yaml:9: vhost "a": upstream.tls: certificate and key go together`},
		{"tls unix without name", vhost("mtls", "      servers: [{address: \"unix:/run/a.sock\"}]\n      tls: {ca: system}\n"), `c.yaml:8: vhost "a": upstream.tls.server_name is required with a unix: server`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
}
