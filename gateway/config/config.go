// Package config decodes edgegate's YAML configuration strictly, fills its
// documented defaults and validates it, reporting every problem as
// FILE:LINE: what is wrong. Loading a configuration reads the files it
// names but changes nothing in the process: the server decides whether and
// when a loaded configuration takes effect.
package config

import (
	"crypto/tls"
	"fmt"
	"net/netip"
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

	root *yaml.Node
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

	// NeverLimitPrefixes is NeverLimit parsed, "cloudflare" expanded.
	NeverLimitPrefixes []netip.Prefix `yaml:"-"`
}

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
	AllowFrom  []string  `yaml:"allow_from"`
	OnReject   string    `yaml:"on_reject"` // close (default) | reset

	// AllowFromPrefixes is AllowFrom parsed, "cloudflare" expanded.
	AllowFromPrefixes []netip.Prefix `yaml:"-"`
}

// Upstream is where a vhost's connections go.
type Upstream struct {
	Address       string `yaml:"address"`        // host:port or unix:/path
	ProxyProtocol string `yaml:"proxy_protocol"` // off | v1 | v2 (default)
	// UniqueID sends each connection's ID (also its log line's conn_id) as
	// PP2_TYPE_UNIQUE_ID in a v2 header, so upstream logs can be joined
	// with edgegate's.
	UniqueID bool `yaml:"unique_id"`
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
