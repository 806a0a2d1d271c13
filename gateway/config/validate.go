package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/edgegate/edgegate/sni"
)

func (c *Config) validate() error {
	if len(c.Listen) == 0 {
		return c.ErrAt("listen: at least one listener is required", "listen")
	}
	seenAddr := map[string]bool{}
	for i := range c.Listen {
		l := &c.Listen[i]
		if err := checkListenAddress(l.Address); err != nil {
			return c.ErrAt(fmt.Sprintf("listen address %v", err), "listen", i, "address")
		}
		if seenAddr[l.Address] {
			return c.ErrAt(fmt.Sprintf("listen address %q appears twice", l.Address), "listen", i, "address")
		}
		seenAddr[l.Address] = true
		for j, s := range l.TrustedProxies {
			p, err := ParsePrefix(s)
			if err != nil {
				return c.ErrAt(fmt.Sprintf("trusted_proxies: %v", err), "listen", i, "trusted_proxies", j)
			}
			l.Trusted = append(l.Trusted, p)
		}
		if len(l.TrustedProxies) > 0 && !l.AcceptProxyProtocol {
			return c.ErrAt("trusted_proxies is set but accept_proxy_protocol is false", "listen", i, "trusted_proxies")
		}
		if l.AcceptProxyProtocol && len(l.Trusted) == 0 {
			return c.ErrAt("accept_proxy_protocol needs trusted_proxies (CIDRs allowed to send a PROXY header)", "listen", i, "accept_proxy_protocol")
		}
	}
	for _, t := range []struct {
		key string
		d   Duration
	}{{"client_hello", c.Timeouts.ClientHello}, {"upstream_dial", c.Timeouts.UpstreamDial}, {"handshake", c.Timeouts.Handshake}} {
		if t.d.D() < 10*time.Millisecond {
			return c.ErrAt(fmt.Sprintf("timeouts.%s must be at least 10ms", t.key), "timeouts", t.key)
		}
	}
	if c.Timeouts.Idle.D() < time.Second {
		return c.ErrAt("timeouts.idle must be at least 1s", "timeouts", "idle")
	}
	if c.Metrics.Listen != "" {
		if err := checkListenAddress(c.Metrics.Listen); err != nil {
			return c.ErrAt(fmt.Sprintf("metrics.listen %v", err), "metrics", "listen")
		}
		// Port 0 is a free port each: two sockets, no clash.
		if _, port, _ := net.SplitHostPort(c.Metrics.Listen); seenAddr[c.Metrics.Listen] && port != "0" {
			return c.ErrAt(fmt.Sprintf("metrics.listen %q is also a listen address", c.Metrics.Listen), "metrics", "listen")
		}
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		return c.ErrAt(err.Error(), "log", "level")
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return c.ErrAt(fmt.Sprintf("log.format %q: want text or json", c.Log.Format), "log", "format")
	}
	if c.Limits.MaxHelloSize < 512 || c.Limits.MaxHelloSize > 1<<20 {
		return c.ErrAt("limits.max_hello_size must be between 512 and 1048576", "limits", "max_hello_size")
	}
	if c.Limits.MaxConnections < 0 {
		return c.ErrAt("limits.max_connections must not be negative", "limits", "max_connections")
	}
	if c.Limits.PerSource < 0 {
		return c.ErrAt("limits.per_source must not be negative", "limits", "per_source")
	}
	var err error
	if c.Limits.NeverLimitPrefixes, err = c.prefixList("limits.never_limit", c.Limits.NeverLimit, "limits", "never_limit"); err != nil {
		return err
	}
	if err := c.validateRate(); err != nil {
		return err
	}
	if err := c.validateEBPF(); err != nil {
		return err
	}
	if len(c.VHosts) == 0 {
		return c.ErrAt("vhosts: at least one vhost is required", "vhosts")
	}
	names := map[string]bool{}
	hosts := map[string]string{}
	for i := range c.VHosts {
		v := &c.VHosts[i]
		if err := c.validateVHost(i, v); err != nil {
			return err
		}
		if names[v.Name] {
			return c.ErrAt(fmt.Sprintf("vhost name %q is used twice", v.Name), "vhosts", i, "name")
		}
		names[v.Name] = true
		for j, h := range v.Hosts {
			pat, err := HostPattern(h)
			if err != nil {
				return c.ErrAt(fmt.Sprintf("vhost %q: %v", v.Name, err), "vhosts", i, "hosts", j)
			}
			if other, dup := hosts[pat]; dup {
				return c.ErrAt(fmt.Sprintf("host %q is already served by vhost %q", h, other), "vhosts", i, "hosts", j)
			}
			hosts[pat] = v.Name
		}
	}
	switch c.Unmatched {
	case "close", "reset":
	default:
		if !names[c.Unmatched] {
			return c.ErrAt(fmt.Sprintf("unmatched %q: want close, reset or the name of a vhost", c.Unmatched), "unmatched")
		}
	}
	return nil
}

func (c *Config) validateEBPF() error {
	e := &c.EBPF
	switch e.Mode {
	case "auto", "xdp-native", "xdp-generic", "tcx":
	default:
		return c.ErrAt(fmt.Sprintf("ebpf.mode %q: want auto, xdp-native, xdp-generic or tcx", e.Mode), "ebpf", "mode")
	}
	if e.Fragments != "pass" && e.Fragments != "drop" {
		return c.ErrAt(fmt.Sprintf("ebpf.fragments %q: want pass or drop", e.Fragments), "ebpf", "fragments")
	}
	if e.Enabled && len(e.Interfaces) == 0 {
		return c.ErrAt("ebpf.interfaces: name at least one interface to attach to", "ebpf")
	}
	for j, name := range e.Interfaces {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
			return c.ErrAt(fmt.Sprintf("ebpf.interfaces: %q is not an interface name", name), "ebpf", "interfaces", j)
		}
	}
	if e.FlowTableSize < 1024 || e.FlowTableSize > 1<<24 {
		return c.ErrAt("ebpf.flow_table_size must be between 1024 and 16777216", "ebpf", "flow_table_size")
	}
	if e.Blocklist.After < 1 {
		return c.ErrAt("ebpf.blocklist.after must be at least 1", "ebpf", "blocklist", "after")
	}
	if p := filepath.Clean(e.PinPath); !strings.HasPrefix(p, "/sys/fs/bpf/") {
		return c.ErrAt(fmt.Sprintf("ebpf.pin_path %q: want a folder under /sys/fs/bpf (bpffs)", e.PinPath), "ebpf", "pin_path")
	}
	var err error
	if e.AllowOnlyPrefixes, err = c.prefixList("ebpf.allow_only", e.AllowOnly, "ebpf", "allow_only"); err != nil {
		return err
	}
	e.Blocklist.NeverBlockPrefixes, err = c.prefixList("ebpf.blocklist.never_block", e.Blocklist.NeverBlock, "ebpf", "blocklist", "never_block")
	return err
}

// maxRate bounds limits.rate.per_source: beyond a million connections a
// second from one source, a limit means nothing.
const maxRate = 1e6

func (c *Config) validateRate() error {
	r := &c.Limits.Rate
	if r.PerSource.PerSecond() > maxRate {
		return c.ErrAt("limits.rate.per_source must be at most 1000000/s", "limits", "rate", "per_source")
	}
	if r.Burst < 0 || r.Burst > maxRate {
		return c.ErrAt("limits.rate.burst must be between 1 and 1000000", "limits", "rate", "burst")
	}
	if r.Burst > 0 && r.PerSource == 0 {
		return c.ErrAt("limits.rate.burst is set but limits.rate.per_source is not", "limits", "rate", "burst")
	}
	if r.Burst == 0 && r.PerSource > 0 {
		r.Burst = max(1, int(math.Ceil(r.PerSource.PerSecond())))
	}
	var err error
	r.NeverLimitPrefixes, err = c.prefixList("limits.rate.never_limit", r.NeverLimit, "limits", "rate", "never_limit")
	return err
}

// prefixList parses a list of CIDRs and the word "cloudflare" (Cloudflare's
// published ranges); what names the list and path locates it for errors.
func (c *Config) prefixList(what string, list []string, path ...any) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for j, s := range list {
		if s == "cloudflare" {
			out = append(out, c.Cloudflare.Prefixes()...)
			continue
		}
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, c.ErrAt(fmt.Sprintf("%s: %v (want \"cloudflare\" or a CIDR)", what, err), append(path, j)...)
		}
		out = append(out, p)
	}
	return out, nil
}

var vhostName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

func (c *Config) validateVHost(i int, v *VHost) error {
	at := func(msg string, path ...any) error {
		return c.ErrAt(fmt.Sprintf("vhost %q: %s", v.Name, msg), append([]any{"vhosts", i}, path...)...)
	}
	if !vhostName.MatchString(v.Name) {
		return c.ErrAt(fmt.Sprintf("vhost name %q: want letters, digits, '.', '_' or '-' (at most 63)", v.Name), "vhosts", i, "name")
	}
	if len(v.Hosts) == 0 {
		return at("hosts: at least one host name is required", "hosts")
	}
	if err := validateUpstream(v, at); err != nil {
		return err
	}
	switch v.OnReject {
	case "close", "reset":
	default:
		return at(fmt.Sprintf("on_reject %q: want close or reset", v.OnReject), "on_reject")
	}
	switch v.Mode {
	case "passthrough":
		if v.TLS != nil {
			return at("tls is only for mode mtls", "tls")
		}
		if v.ClientAuth != nil {
			return at("client_auth is only for mode mtls", "client_auth")
		}
	case "mtls":
		if len(v.TLS.Certificates) == 0 {
			return at("tls.certificates: at least one certificate is required", "tls")
		}
		for j, cf := range v.TLS.Certificates {
			if cf.Cert == "" || cf.Key == "" {
				return at("tls.certificates: cert and key are both required", "tls", "certificates", j)
			}
		}
		if v.TLS.MinVersion != "1.2" && v.TLS.MinVersion != "1.3" {
			return at(fmt.Sprintf("tls.min_version %q: want \"1.2\" or \"1.3\"", v.TLS.MinVersion), "tls", "min_version")
		}
		for j, a := range v.TLS.ALPN {
			if a == "" || len(a) > 255 {
				return at("tls.alpn: protocol names are 1 to 255 bytes", "tls", "alpn", j)
			}
		}
		if err := c.validateTLSProfile(i, v); err != nil {
			return err
		}
		for j, f := range v.ClientAuth.CRL {
			if f == "" {
				return at("client_auth.crl: empty file name", "client_auth", "crl", j)
			}
		}
	case "":
		return at("mode is required (passthrough or mtls)", "mode")
	default:
		return at(fmt.Sprintf("mode %q: want passthrough or mtls", v.Mode), "mode")
	}
	var err error
	if v.AllowFromPrefixes, err = c.prefixList(fmt.Sprintf("vhost %q: allow_from", v.Name), v.AllowFrom, "vhosts", i, "allow_from"); err != nil {
		return err
	}
	return c.vhostTimeouts(i, v)
}

// vhostTimeouts checks the timeouts vhost i sets for itself and replaces
// them with every timeout in force for it: its own where it sets one, the
// global ones elsewhere.
func (c *Config) vhostTimeouts(i int, v *VHost) error {
	eff := c.Timeouts
	if t := v.Timeouts; t != nil {
		written := func(key string) bool {
			n, _ := c.find("vhosts", i, "timeouts", key)
			return n != nil
		}
		at := func(key, msg string) error {
			return c.ErrAt(fmt.Sprintf("vhost %q: timeouts.%s %s", v.Name, key, msg), "vhosts", i, "timeouts", key)
		}
		if written("client_hello") {
			return at("client_hello", "cannot be set per vhost: the ClientHello is read before its SNI names a vhost; set it in the top-level timeouts")
		}
		if written("drain") {
			return at("drain", "cannot be set per vhost: the drain on stop is one deadline for every connection; set it in the top-level timeouts")
		}
		if written("handshake") && v.Mode != "mtls" {
			return at("handshake", "is only for mode mtls")
		}
		for _, o := range []struct {
			key   string
			set   Duration
			eff   *Duration
			least time.Duration
		}{
			{"upstream_dial", t.UpstreamDial, &eff.UpstreamDial, 10 * time.Millisecond},
			{"idle", t.Idle, &eff.Idle, time.Second},
			{"handshake", t.Handshake, &eff.Handshake, 10 * time.Millisecond},
		} {
			if !written(o.key) {
				continue
			}
			if o.set.D() < o.least {
				return at(o.key, fmt.Sprintf("must be at least %s (leave it out to inherit the top-level value)", shortDuration(o.least)))
			}
			*o.eff = o.set
		}
	}
	v.Timeouts = &eff
	return nil
}

// checkListenAddress refuses what net.Listen would: an address that is not
// host:port, a port out of range or unknown, a host name that does not
// resolve. Whether the address can be bound on this host is for `edgegate
// check` to try (gateway.Probe), not for loading.
func checkListenAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || addr == "" {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			return fmt.Errorf("%q: port %d is out of range (0 to 65535)", addr, n)
		}
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: %q is not a port number or a known service", addr, port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := net.DefaultResolver.LookupHost(ctx, host); err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			err = errors.New(dnsErr.Err)
		}
		return fmt.Errorf("%q: host %q does not resolve: %v", addr, host, err)
	}
	return nil
}

// MaxServers bounds an upstream's servers list.
const MaxServers = 64

// validateUpstream checks vhost i's upstream; at reports a problem at a
// path under the vhost.
func validateUpstream(v *VHost, at func(string, ...any) error) error {
	u := &v.Upstream
	switch u.ProxyProtocol {
	case "off", "v1", "v2":
	default:
		return at(fmt.Sprintf("upstream.proxy_protocol %q: want off, v1 or v2", u.ProxyProtocol), "upstream", "proxy_protocol")
	}
	if u.UniqueID && u.ProxyProtocol != "v2" {
		return at("upstream.unique_id needs proxy_protocol v2", "upstream", "unique_id")
	}
	switch {
	case u.Address == "" && len(u.Servers) == 0:
		return at("upstream.address is required (or upstream.servers)", "upstream")
	case u.Address != "" && len(u.Servers) > 0:
		return at("upstream: address and servers are exclusive (write the address as the only server)", "upstream", "servers")
	case len(u.Servers) > MaxServers:
		return at(fmt.Sprintf("upstream.servers: at most %d servers", MaxServers), "upstream", "servers")
	}
	if u.Address != "" {
		if err := checkUpstreamAddress(u.Address); err != nil {
			return at(fmt.Sprintf("upstream.address %v", err), "upstream")
		}
	}
	seen := map[string]bool{}
	for j, srv := range u.Servers {
		if err := checkUpstreamAddress(srv.Address); err != nil {
			return at(fmt.Sprintf("upstream.servers: address %v", err), "upstream", "servers", j)
		}
		if seen[srv.Address] {
			return at(fmt.Sprintf("upstream.servers: %q appears twice (raise its weight instead)", srv.Address), "upstream", "servers", j)
		}
		seen[srv.Address] = true
		if srv.Weight < 1 || srv.Weight > 1000 {
			return at("upstream.servers: weight must be between 1 and 1000", "upstream", "servers", j, "weight")
		}
	}
	switch u.Balance {
	case "round_robin", "least_conn", "source_hash":
	default:
		return at(fmt.Sprintf("upstream.balance %q: want round_robin, least_conn or source_hash", u.Balance), "upstream", "balance")
	}
	if hc := u.HealthCheck; hc != nil {
		switch {
		case hc.Interval.D() < 10*time.Millisecond:
			return at("upstream.health_check.interval must be at least 10ms", "upstream", "health_check", "interval")
		case hc.Timeout.D() < time.Millisecond:
			return at("upstream.health_check.timeout must be at least 1ms", "upstream", "health_check", "timeout")
		case hc.Timeout > hc.Interval:
			return at("upstream.health_check.timeout must not exceed its interval", "upstream", "health_check", "timeout")
		case hc.Fall < 1 || hc.Fall > 100:
			return at("upstream.health_check.fall must be between 1 and 100", "upstream", "health_check", "fall")
		case hc.Rise < 1 || hc.Rise > 100:
			return at("upstream.health_check.rise must be between 1 and 100", "upstream", "health_check", "rise")
		case hc.SendProxy && u.ProxyProtocol == "off":
			return at("upstream.health_check.send_proxy needs proxy_protocol v1 or v2", "upstream", "health_check", "send_proxy")
		}
	}
	if t := u.TLS; t != nil {
		if v.Mode != "mtls" {
			return at("upstream.tls is only for mode mtls (a passthrough upstream already receives the client's TLS)", "upstream", "tls")
		}
		if t.CA == "" {
			return at("upstream.tls.ca is required (a PEM bundle, or \"system\")", "upstream", "tls")
		}
		if (t.Certificate == "") != (t.Key == "") {
			return at("upstream.tls: certificate and key go together", "upstream", "tls")
		}
		if t.ServerName == "" {
			for j, srv := range u.List() {
				if strings.HasPrefix(srv.Address, "unix:") {
					return at("upstream.tls.server_name is required with a unix: server", "upstream", "servers", j)
				}
			}
		}
	}
	return nil
}

// checkUpstreamAddress accepts host:port and unix:/path.
func checkUpstreamAddress(a string) error {
	if path, ok := strings.CutPrefix(a, "unix:"); ok {
		if path == "" {
			return errors.New("unix: needs a path")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return fmt.Errorf("%q: want host:port or unix:/path", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: bad port", a)
	}
	return nil
}

// ParsePrefix accepts a CIDR or a bare address (a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// HostPattern validates a vhost host entry and returns its routing form:
// a normalised name, or "*." + normalised parent for a one-label wildcard.
func HostPattern(h string) (string, error) {
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		n := sni.NormalizeName(rest)
		if n == "" || strings.Contains(rest, "*") {
			return "", fmt.Errorf("host %q is not a valid wildcard (want *.example.com)", h)
		}
		return "*." + n, nil
	}
	n := sni.NormalizeName(h)
	if n == "" {
		return "", fmt.Errorf("host %q is not a valid DNS name", h)
	}
	return n, nil
}

// ParseLevel parses log.level.
func ParseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", s)
}
