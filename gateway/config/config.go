// Package config decodes edgegate's YAML configuration strictly, fills its
// documented defaults and validates it, reporting every problem as
// FILE:LINE: what is wrong. Loading a configuration reads the files it
// names but changes nothing in the process: the server decides whether and
// when a loaded configuration takes effect.
package config

import (
	"crypto/tls"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgegate/edgegate/gateway/cloudflare"
)

// Config is edgegate's configuration file, decoded strictly from YAML.
// Load fills the defaults documented on each field and validates it.
type Config struct {
	Listen    []Listener `yaml:"listen"`
	Unmatched string     `yaml:"unmatched"` // close (default), reset, or a vhost name
	Timeouts  Timeouts   `yaml:"timeouts"`
	Metrics   Metrics    `yaml:"metrics"`
	Log       Log        `yaml:"log"`
	Limits    Limits     `yaml:"limits"`
	EBPF      EBPF       `yaml:"ebpf"`
	VHosts    []VHost    `yaml:"vhosts"`
	// Include names files holding more vhosts, each a glob resolved
	// against this file's folder ("conf.d/*.yaml"). Every file a glob
	// matches, in sorted order, holds a `vhosts:` list and nothing else;
	// its vhosts follow this file's own, and its errors are reported at its
	// own lines. A glob that matches nothing is no error; a name without
	// wildcards that names no file is. Included files include nothing.
	Include FileList `yaml:"include"`

	// PIDFile, when set, is written with the process ID once the gateway
	// is serving (and rewritten by the new process after an upgrade).
	PIDFile string `yaml:"pid_file"`
	// ControlSocket, when set, is a Unix socket on which `edgegate reload`
	// and `edgegate upgrade` ask the running process to act and learn
	// whether it did.
	ControlSocket string `yaml:"control_socket"`
	// Watch reloads when any file the configuration names changes
	// (certificates renewed by an ACME client), debounced.
	Watch bool `yaml:"watch"`
	// CloudflareData is a folder holding ips-v4.txt, ips-v6.txt and
	// origin-pull-ca.pem written by `edgegate cloudflare update`; when it
	// exists they replace the built-in copies. Default
	// /var/lib/edgegate/cloudflare.
	CloudflareData string `yaml:"cloudflare_data"`

	// File is the path the configuration was loaded from; relative paths
	// in it resolve against its folder.
	File string `yaml:"-"`
	// Cloudflare is the set of Cloudflare data this configuration was
	// loaded with: the word "cloudflare" in its address lists expands to
	// its ranges, and client_auth.ca: cloudflare trusts its CA.
	Cloudflare *cloudflare.Data `yaml:"-"`
	// Notes are problems that do not stop the load, for check and the log.
	Notes []string `yaml:"-"`
	// Included are the files Include matched, in the order their vhosts
	// were appended to VHosts.
	Included []string `yaml:"-"`

	root *yaml.Node
	// origins locates the vhosts that came from included files:
	// VHosts[len(VHosts)-len(origins)+k] was written at origins[k].
	origins []origin
}

// Listener is one listening address.
type Listener struct {
	Address             string   `yaml:"address"`
	AcceptProxyProtocol bool     `yaml:"accept_proxy_protocol"`
	TrustedProxies      []string `yaml:"trusted_proxies"`
	// ReusePort sets SO_REUSEPORT, so that several processes (edgegate
	// instances, or edgegate and something else) can share the address.
	// Without it, an address another process listens on is refused at
	// start with "address already in use", as nginx and HAProxy do. An
	// upgrade hands the sockets over either way.
	ReusePort bool `yaml:"reuse_port"`

	// Trusted is TrustedProxies parsed.
	Trusted []netip.Prefix `yaml:"-"`
}

// Timeouts bound each step of a connection.
type Timeouts struct {
	ClientHello  Duration `yaml:"client_hello"`  // default 5s
	UpstreamDial Duration `yaml:"upstream_dial"` // default 5s
	Idle         Duration `yaml:"idle"`          // default 5m
	Drain        Duration `yaml:"drain"`         // default 30s
	Handshake    Duration `yaml:"handshake"`     // default 10s (mtls)
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `yaml:"listen"` // empty: no metrics endpoint
}

// Log configures the structured log on stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text (default) | json
	// File, when set, receives the log too (stderr still does), opened
	// for appending and created 0640 if missing; `edgegate run` opens it
	// again on SIGUSR1, so logrotate can rename it and signal.
	File string `yaml:"file"`
}

// Limits bound what connections may take.
type Limits struct {
	MaxHelloSize   int      `yaml:"max_hello_size"`  // default 16384 bytes
	MaxConnections int      `yaml:"max_connections"` // concurrent connections in all; 0 = no limit
	PerSource      int      `yaml:"per_source"`      // concurrent connections per client address; 0 = no limit
	NeverLimit     []string `yaml:"never_limit"`     // "cloudflare" and/or CIDRs exempt from per_source
	// Rate limits how fast one source may open connections; off unless
	// rate.per_source is set.
	Rate RateLimit `yaml:"rate"`

	// NeverLimitPrefixes is NeverLimit parsed, "cloudflare" expanded.
	NeverLimitPrefixes []netip.Prefix `yaml:"-"`
}

// RateLimit limits the rate of new connections per source: at accept, and
// in the kernel (SYNs dropped) when the eBPF guard runs. A source is an
// IPv4 address or an IPv6 /64.
type RateLimit struct {
	PerSource  Rate     `yaml:"per_source"`  // "10/s", "600/m", "100/h"; empty: no limit
	Burst      int      `yaml:"burst"`       // connections a quiet source may open at once; default one second's worth, at least 1
	NeverLimit []string `yaml:"never_limit"` // "cloudflare" and/or CIDRs exempt from the rate

	// NeverLimitPrefixes is NeverLimit parsed, "cloudflare" expanded.
	NeverLimitPrefixes []netip.Prefix `yaml:"-"`
}

// Rate is a number of events per second, written as "N/s", "N/m" or
// "N/h" (N may have decimals: "0.5/s"). Zero is no rate.
type Rate float64

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseRate(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a rate (like 10/s, 600/m or 100/h)", n.Line, n.Value)}}
	}
	*r = v
	return nil
}

// ParseRate parses "N/s", "N/m" or "N/h" with N a positive number.
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(s, "/")
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || per == 0 || err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("%q is not a rate (like 10/s, 600/m or 100/h)", s)
	}
	return Rate(n / per), nil
}

// PerSecond returns r in events per second.
func (r Rate) PerSecond() float64 { return float64(r) }

// EBPF configures the kernel guard that drops non-TLS traffic on the
// listeners' ports before it reaches a socket (see package bpf).
type EBPF struct {
	Enabled       bool      `yaml:"enabled"`
	Interfaces    []string  `yaml:"interfaces"`
	Mode          string    `yaml:"mode"`      // auto (default) | xdp-native | xdp-generic | tcx
	Required      bool      `yaml:"required"`  // a failed attach stops edgegate instead of running unguarded
	Fragments     string    `yaml:"fragments"` // pass (default) | drop: IPv4 non-first fragments
	AllowOnly     []string  `yaml:"allow_only"`
	Blocklist     Blocklist `yaml:"blocklist"`
	FlowTableSize int       `yaml:"flow_table_size"` // default 262144
	// PinPath is the bpffs folder under which the guard pins the state that
	// outlives a restart (flows being checked, the blocklist), in a
	// subfolder named for the map layout (bpf.PinVersion). Default
	// /sys/fs/bpf/edgegate; edgegate instances on one host that must not
	// share a blocklist need one each.
	PinPath string `yaml:"pin_path"`

	// AllowOnlyPrefixes is AllowOnly parsed, "cloudflare" expanded.
	AllowOnlyPrefixes []netip.Prefix `yaml:"-"`
}

// Blocklist says when a misbehaving source is blocked in the kernel.
type Blocklist struct {
	After      int      `yaml:"after"`  // offences (default 20)...
	Within     Duration `yaml:"within"` // ...within this window (default 1m)...
	For        Duration `yaml:"for"`    // ...block for this long (default 10m)
	NeverBlock []string `yaml:"never_block"`

	// NeverBlockPrefixes is NeverBlock parsed, "cloudflare" expanded.
	NeverBlockPrefixes []netip.Prefix `yaml:"-"`
}

// VHost is one virtual host: the names it answers and what it does with them.
type VHost struct {
	Name       string    `yaml:"name"`
	Hosts      []string  `yaml:"hosts"`
	Mode       string    `yaml:"mode"` // passthrough | mtls
	Upstream   Upstream  `yaml:"upstream"`
	TLS        *TLS      `yaml:"tls"`
	ClientAuth *ClientCA `yaml:"client_auth"`
	AllowFrom  []string  `yaml:"allow_from"` // both modes: checked right after the ClientHello
	OnReject   string    `yaml:"on_reject"`  // close (default) | reset
	// Timeouts overrides the global timeouts for this vhost's connections:
	// upstream_dial, idle and (mtls) handshake; a key left out inherits the
	// global value. client_hello and drain cannot be set per vhost (the
	// ClientHello is read before its SNI names a vhost; the drain is one
	// deadline for the whole process). After Load it is never nil and holds
	// every timeout in force for the vhost.
	Timeouts *Timeouts `yaml:"timeouts"`

	// AllowFromPrefixes is AllowFrom parsed, "cloudflare" expanded.
	AllowFromPrefixes []netip.Prefix `yaml:"-"`
}

// Upstream is where a vhost's connections go: one address, or several
// servers shared by a balancing method.
type Upstream struct {
	Address string `yaml:"address"` // host:port or unix:/path; or Servers
	// Servers are several upstream servers (instead of Address), each
	// weighted (default 1).
	Servers []UpstreamServer `yaml:"servers"`
	// Balance chooses a server for each connection: round_robin (default),
	// least_conn or source_hash (by client address, stable while servers
	// come and go). Every method honours the weights.
	Balance string `yaml:"balance"`
	// HealthCheck, when set, checks every server in the background and
	// takes a failing one out of rotation until it answers again.
	HealthCheck   *HealthCheck `yaml:"health_check"`
	ProxyProtocol string       `yaml:"proxy_protocol"` // off | v1 | v2 (default)
	// UniqueID sends each connection's ID (also its log line's conn_id) as
	// PP2_TYPE_UNIQUE_ID in a v2 header, so upstream logs can be joined
	// with edgegate's.
	UniqueID bool `yaml:"unique_id"`
	// TLS, on mtls vhosts, speaks TLS to the upstream (after the PROXY
	// header, which stays in cleartext), as nginx's proxy_ssl does.
	TLS *UpstreamTLS `yaml:"tls"`
}

// UpstreamServer is one server of an upstream.
type UpstreamServer struct {
	Address string `yaml:"address"` // host:port or unix:/path
	Weight  int    `yaml:"weight"`  // 1 to 1000; default 1
}

// List returns the upstream's servers: Servers, or Address as the only
// server of weight 1.
func (u Upstream) List() []UpstreamServer {
	if len(u.Servers) > 0 {
		return u.Servers
	}
	return []UpstreamServer{{Address: u.Address, Weight: 1}}
}

// HealthCheck is an upstream's active health check: a TCP connect to each
// server every Interval. A server is marked down after Fall consecutive
// failures (checks, or dials of client connections) and up again after
// Rise consecutive successful checks.
type HealthCheck struct {
	Interval Duration `yaml:"interval"` // default 2s
	Timeout  Duration `yaml:"timeout"`  // default 1s; at most interval
	Fall     int      `yaml:"fall"`     // default 3
	Rise     int      `yaml:"rise"`     // default 2
	// SendProxy sends a PROXY header on each check (v2 LOCAL, or v1
	// "PROXY UNKNOWN", per proxy_protocol), as HAProxy's check-send-proxy
	// does, for upstreams that log a connection without one as an error.
	SendProxy bool `yaml:"send_proxy"`
}

// UpstreamTLS is TLS from edgegate to the upstream.
type UpstreamTLS struct {
	// CA is the PEM bundle that verifies the upstream's certificate, or
	// "system" for the system's roots. Required.
	CA string `yaml:"ca"`
	// ServerName is the name sent as SNI and verified in the upstream's
	// certificate; default: the host of each server's address.
	ServerName string `yaml:"server_name"`
	// Certificate and Key are a client certificate to present to the
	// upstream (both or neither).
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// TLS is an mtls vhost's server side.
type TLS struct {
	Certificates      []CertFiles `yaml:"certificates"`
	MinVersion        string      `yaml:"min_version"` // "1.2" (default) | "1.3"
	ALPN              []string    `yaml:"alpn"`        // default ["http/1.1"]
	SessionTicketKeys string      `yaml:"session_ticket_keys"`
	// CipherSuites are the TLS 1.2 suites accepted, by IANA or OpenSSL
	// name. Default: ECDHE with AES-GCM or ChaCha20-Poly1305 (see
	// tlsprofile.go). TLS 1.3 suites are not configurable.
	CipherSuites []string `yaml:"cipher_suites"`
	// Curves are the key exchanges accepted. Default: X25519MLKEM768,
	// X25519, P-256, P-384.
	Curves []string `yaml:"curves"`

	// SuiteIDs and CurveIDs are CipherSuites and Curves resolved, the
	// defaults filled in.
	SuiteIDs []uint16      `yaml:"-"`
	CurveIDs []tls.CurveID `yaml:"-"`
}

// CertFiles names a PEM certificate chain and its key.
type CertFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ClientCA is what an mtls vhost trusts for client certificates.
type ClientCA struct {
	CA         string   `yaml:"ca"` // "cloudflare" (default) or a PEM bundle path
	SPKISHA256 []string `yaml:"spki_sha256"`
	// CRL names certificate revocation lists (one file or several, each
	// DER or PEM with one or more X509 CRL blocks). Each must be signed by
	// a CA certificate in CA; a client chain holding a certificate one of
	// them revokes is refused with reason "revoked".
	CRL FileList `yaml:"crl"`
}

// FileList is one file name or a list of them: `crl: a.pem` and
// `crl: [a.pem, b.pem]` both decode.
type FileList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *FileList) UnmarshalYAML(n *yaml.Node) error {
	bad := func(m *yaml.Node) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a file name or a list of file names", m.Line)}}
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			*l = nil
			return nil
		}
		if n.ShortTag() != "!!str" {
			return bad(n)
		}
		*l = FileList{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(FileList, 0, len(n.Content))
		for _, m := range n.Content {
			if m.Kind != yaml.ScalarNode || m.ShortTag() != "!!str" {
				return bad(m)
			}
			out = append(out, m.Value)
		}
		*l = out
		return nil
	}
	return bad(n)
}

// Duration is a time.Duration written as "5s", "1m30s".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 0 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (like 5s or 1m)", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
