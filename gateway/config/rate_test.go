package config

import (
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/cloudflare"
)

const rateVHost = "vhosts:\n  - {name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"1.2.3.4:5\"}}\n"

// TestParseRate reads limits.rate: its rates in every unit, the default
// burst (one second's worth, at least 1), never_limit with "cloudflare",
// and a configuration without it, which has no limit.
func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		rate      string
		perSecond float64
		burst     int
	}{
		{"{per_source: 10/s}", 10, 10},
		{"{per_source: 2.5/s}", 2.5, 3},
		{"{per_source: 600/m}", 10, 10},
		{"{per_source: 30/m, burst: 5}", 0.5, 5},
		{"{per_source: 100/h}", 100.0 / 3600, 1},
		{"{}", 0, 0},
	} {
		cfg, err := Parse("c.yaml", []byte("listen: [{address: \":443\"}]\nlimits:\n  rate: "+tc.rate+"\n"+rateVHost), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.rate, err)
		}
		r := cfg.Limits.Rate
		if r.PerSource.PerSecond() != tc.perSecond || r.Burst != tc.burst {
			t.Errorf("%s: %v/s burst %d, want %v/s burst %d", tc.rate, r.PerSource.PerSecond(), r.Burst, tc.perSecond, tc.burst)
		}
	}
	cfg, err := Parse("c.yaml", []byte("listen: [{address: \":443\"}]\n"+rateVHost), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.Rate.PerSource != 0 {
		t.Errorf("no limits.rate: %v/s, want no limit", cfg.Limits.Rate.PerSource)
	}
	cfg, err = Parse("c.yaml", []byte("listen: [{address: \":443\"}]\nlimits:\n  rate: {per_source: 5/s, never_limit: [cloudflare, 10.0.0.0/8, \"2001:db8::/32\"]}\n"+rateVHost), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(cfg.Limits.Rate.NeverLimitPrefixes), len(cloudflare.Builtin().Prefixes())+2; got != want {
		t.Errorf("never_limit: [cloudflare, two CIDRs]: %d prefixes, want %d", got, want)
	}
}

// TestParseRateErrors: a bad limits.rate is refused at its line.
func TestParseRateErrors(t *testing.T) {
	for _, tc := range []struct{ rate, want string }{
		{"{per_source: 10}", `c.yaml:3: "10" is not a rate (like 10/s, 600/m or 100/h)`},
		{"{per_source: 10/d}", `c.yaml:3: "10/d" is not a rate`},
		{"{per_source: -1/s}", `c.yaml:3: "-1/s" is not a rate`},
		{"{per_source: 0/s}", `c.yaml:3: "0/s" is not a rate`},
		{"{per_source: fast/s}", `c.yaml:3: "fast/s" is not a rate`},
		{"{per_source: 2000000/s}", "c.yaml:3: limits.rate.per_source must be at most 1000000/s"},
		{"{per_source: 1/s, burst: -1}", "c.yaml:3: limits.rate.burst must be between 1 and 1000000"},
		{"{burst: 5}", "c.yaml:3: limits.rate.burst is set but limits.rate.per_source is not"},
		{"{per_source: 1/s, never_limit: [10.0.0.1/8]}", `c.yaml:3: limits.rate.never_limit: "10.0.0.1/8" has host bits set`},
		{"{per_source: 1/s, rate: 2}", `c.yaml:3: unknown key "rate"`},
	} {
		_, err := Parse("c.yaml", []byte("listen: [{address: \":443\"}]\nlimits:\n  rate: "+tc.rate+"\n"+rateVHost), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("limits.rate %s: error %v, want it to contain %q", tc.rate, err, tc.want)
		}
	}
}
