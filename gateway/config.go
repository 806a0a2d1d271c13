package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgegate/edgegate/sni"
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
	File  string `yaml:"-"`
	root  *yaml.Node
	notes []string // problems that do not stop the load, for check and the log
}

// Listener is one listening address.
type Listener struct {
	Address             string   `yaml:"address"`
	AcceptProxyProtocol bool     `yaml:"accept_proxy_protocol"`
	TrustedProxies      []string `yaml:"trusted_proxies"`

	trusted []netip.Prefix
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
}

// Limits bound what connections may take.
type Limits struct {
	MaxHelloSize   int      `yaml:"max_hello_size"`  // default 16384 bytes
	MaxConnections int      `yaml:"max_connections"` // concurrent connections in all; 0 = no limit
	PerSource      int      `yaml:"per_source"`      // concurrent connections per client address; 0 = no limit
	NeverLimit     []string `yaml:"never_limit"`     // "cloudflare" and/or CIDRs exempt from per_source

	neverLimit []netip.Prefix
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

	allowOnly []netip.Prefix
}

// Blocklist says when a misbehaving source is blocked in the kernel.
type Blocklist struct {
	After      int      `yaml:"after"`  // offences (default 20)...
	Within     Duration `yaml:"within"` // ...within this window (default 1m)...
	For        Duration `yaml:"for"`    // ...block for this long (default 10m)
	NeverBlock []string `yaml:"never_block"`

	neverBlock []netip.Prefix
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
	allowFrom  []netip.Prefix
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

// ConfigError is a configuration problem at a line of a file.
type ConfigError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// LoadConfig reads, decodes and validates the configuration file at path.
// Every problem is reported as FILE:LINE: what is wrong.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes and validates configuration bytes; file names them in
// errors and anchors relative paths.
func ParseConfig(file string, data []byte) (*Config, error) {
	cfg := &Config{File: file}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, err)
	}
	if len(root.Content) == 0 {
		return nil, &ConfigError{File: file, Line: 1, Msg: "empty configuration"}
	}
	cfg.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, yamlError(file, err)
	}
	cfg.setDefaults()
	// Cloudflare's ranges and CA come from cloudflare_data when it holds a
	// valid set (written by `edgegate cloudflare update`); a broken set is
	// refused, the last good one stays, and check and the log say so.
	if d, err := LoadCloudflareData(cfg.Path(cfg.CloudflareData)); err != nil {
		cfg.notes = append(cfg.notes, fmt.Sprintf("cloudflare_data %s refused, keeping %s: %v", cfg.CloudflareData, CurrentCloudflareData().Source, err))
	} else {
		cfg.notes = append(cfg.notes, d.Warnings...)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var unknownField = regexp.MustCompile(`^field (\S+) not found in type .*$`)

// yamlError turns the decoder's errors into FILE:LINE: errors (the first one;
// one fix at a time is what an operator can act on).
func yamlError(file string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	m := yamlLine.FindStringSubmatch(msgs[0])
	if m == nil {
		return &ConfigError{File: file, Msg: strings.TrimPrefix(msgs[0], "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	if u := unknownField.FindStringSubmatch(msg); u != nil {
		msg = fmt.Sprintf("unknown key %q", u[1])
	}
	msg = strings.Replace(msg, "cannot unmarshal !!", "wrong type: ", 1)
	return &ConfigError{File: file, Line: line, Msg: msg}
}

func (c *Config) setDefaults() {
	if c.Unmatched == "" {
		c.Unmatched = "close"
	}
	if c.CloudflareData == "" {
		c.CloudflareData = "/var/lib/edgegate/cloudflare"
	}
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.Timeouts.ClientHello, 5*time.Second)
	def(&c.Timeouts.UpstreamDial, 5*time.Second)
	def(&c.Timeouts.Idle, 5*time.Minute)
	def(&c.Timeouts.Drain, 30*time.Second)
	def(&c.Timeouts.Handshake, 10*time.Second)
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Limits.MaxHelloSize == 0 {
		c.Limits.MaxHelloSize = sni.DefaultMaxSize
	}
	if c.EBPF.Mode == "" {
		c.EBPF.Mode = "auto"
	}
	if c.EBPF.Fragments == "" {
		c.EBPF.Fragments = "pass"
	}
	if c.EBPF.Blocklist.After == 0 {
		c.EBPF.Blocklist.After = 20
	}
	def(&c.EBPF.Blocklist.Within, time.Minute)
	def(&c.EBPF.Blocklist.For, 10*time.Minute)
	if c.EBPF.FlowTableSize == 0 {
		c.EBPF.FlowTableSize = 262144
	}
	if c.EBPF.PinPath == "" {
		c.EBPF.PinPath = "/sys/fs/bpf/edgegate"
	}
	for i := range c.VHosts {
		v := &c.VHosts[i]
		if v.Upstream.ProxyProtocol == "" {
			v.Upstream.ProxyProtocol = "v2"
		}
		if v.OnReject == "" {
			v.OnReject = "close"
		}
		if v.Mode == "mtls" {
			if v.TLS == nil {
				v.TLS = &TLS{}
			}
			if v.TLS.MinVersion == "" {
				v.TLS.MinVersion = "1.2"
			}
			if v.TLS.ALPN == nil {
				v.TLS.ALPN = []string{"http/1.1"}
			}
			if v.ClientAuth == nil {
				v.ClientAuth = &ClientCA{}
			}
			if v.ClientAuth.CA == "" {
				v.ClientAuth.CA = "cloudflare"
			}
		}
	}
}

// errAt is a validation error at the node found by path (keys and indexes
// from the document root); the nearest existing ancestor gives the line.
func (c *Config) errAt(msg string, path ...any) error {
	return &ConfigError{File: c.File, Line: c.line(path...), Msg: msg}
}

// line returns the line of the node at path, or of its nearest ancestor.
func (c *Config) line(path ...any) int {
	if c.root == nil || len(c.root.Content) == 0 {
		return 0
	}
	n := c.root.Content[0]
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						line = n.Content[i].Line
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

// Path resolves a path from the configuration against the file's folder.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// Files lists every file the configuration depends on: itself and each
// certificate, key, CA bundle and ticket-key file it names (resolved). A
// change to any of them is a reason to reload.
func (c *Config) Files() []string {
	files := []string{c.File}
	for _, name := range []string{CloudflareIPv4File, CloudflareIPv6File, CloudflareCAFile} {
		files = append(files, filepath.Join(c.Path(c.CloudflareData), name))
	}
	for _, v := range c.VHosts {
		if v.TLS != nil {
			for _, cf := range v.TLS.Certificates {
				files = append(files, c.Path(cf.Cert), c.Path(cf.Key))
			}
			if v.TLS.SessionTicketKeys != "" {
				files = append(files, c.Path(v.TLS.SessionTicketKeys))
			}
		}
		if v.ClientAuth != nil && v.ClientAuth.CA != "cloudflare" {
			files = append(files, c.Path(v.ClientAuth.CA))
		}
	}
	return files
}

func (c *Config) validate() error {
	if len(c.Listen) == 0 {
		return c.errAt("listen: at least one listener is required", "listen")
	}
	seenAddr := map[string]bool{}
	for i := range c.Listen {
		l := &c.Listen[i]
		if _, _, err := net.SplitHostPort(l.Address); err != nil || l.Address == "" {
			return c.errAt(fmt.Sprintf("listen address %q is not host:port", l.Address), "listen", i, "address")
		}
		if seenAddr[l.Address] {
			return c.errAt(fmt.Sprintf("listen address %q appears twice", l.Address), "listen", i, "address")
		}
		seenAddr[l.Address] = true
		for j, s := range l.TrustedProxies {
			p, err := parsePrefix(s)
			if err != nil {
				return c.errAt(fmt.Sprintf("trusted_proxies: %v", err), "listen", i, "trusted_proxies", j)
			}
			l.trusted = append(l.trusted, p)
		}
		if len(l.TrustedProxies) > 0 && !l.AcceptProxyProtocol {
			return c.errAt("trusted_proxies is set but accept_proxy_protocol is false", "listen", i, "trusted_proxies")
		}
		if l.AcceptProxyProtocol && len(l.trusted) == 0 {
			return c.errAt("accept_proxy_protocol needs trusted_proxies (CIDRs allowed to send a PROXY header)", "listen", i, "accept_proxy_protocol")
		}
	}
	for _, t := range []struct {
		key string
		d   Duration
	}{{"client_hello", c.Timeouts.ClientHello}, {"upstream_dial", c.Timeouts.UpstreamDial}, {"handshake", c.Timeouts.Handshake}} {
		if t.d.D() < 10*time.Millisecond {
			return c.errAt(fmt.Sprintf("timeouts.%s must be at least 10ms", t.key), "timeouts", t.key)
		}
	}
	if c.Timeouts.Idle.D() < time.Second {
		return c.errAt("timeouts.idle must be at least 1s", "timeouts", "idle")
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return c.errAt(fmt.Sprintf("metrics.listen %q is not host:port", c.Metrics.Listen), "metrics", "listen")
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return c.errAt(err.Error(), "log", "level")
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return c.errAt(fmt.Sprintf("log.format %q: want text or json", c.Log.Format), "log", "format")
	}
	if c.Limits.MaxHelloSize < 512 || c.Limits.MaxHelloSize > 1<<20 {
		return c.errAt("limits.max_hello_size must be between 512 and 1048576", "limits", "max_hello_size")
	}
	if c.Limits.MaxConnections < 0 {
		return c.errAt("limits.max_connections must not be negative", "limits", "max_connections")
	}
	if c.Limits.PerSource < 0 {
		return c.errAt("limits.per_source must not be negative", "limits", "per_source")
	}
	var err error
	if c.Limits.neverLimit, err = c.prefixList("limits.never_limit", c.Limits.NeverLimit, "limits", "never_limit"); err != nil {
		return err
	}
	if err := c.validateEBPF(); err != nil {
		return err
	}
	if len(c.VHosts) == 0 {
		return c.errAt("vhosts: at least one vhost is required", "vhosts")
	}
	names := map[string]bool{}
	hosts := map[string]string{}
	for i := range c.VHosts {
		v := &c.VHosts[i]
		if err := c.validateVHost(i, v); err != nil {
			return err
		}
		if names[v.Name] {
			return c.errAt(fmt.Sprintf("vhost name %q is used twice", v.Name), "vhosts", i, "name")
		}
		names[v.Name] = true
		for j, h := range v.Hosts {
			pat, err := hostPattern(h)
			if err != nil {
				return c.errAt(fmt.Sprintf("vhost %q: %v", v.Name, err), "vhosts", i, "hosts", j)
			}
			if other, dup := hosts[pat]; dup {
				return c.errAt(fmt.Sprintf("host %q is already served by vhost %q", h, other), "vhosts", i, "hosts", j)
			}
			hosts[pat] = v.Name
		}
	}
	switch c.Unmatched {
	case "close", "reset":
	default:
		if !names[c.Unmatched] {
			return c.errAt(fmt.Sprintf("unmatched %q: want close, reset or the name of a vhost", c.Unmatched), "unmatched")
		}
	}
	return nil
}

func (c *Config) validateEBPF() error {
	e := &c.EBPF
	switch e.Mode {
	case "auto", "xdp-native", "xdp-generic", "tcx":
	default:
		return c.errAt(fmt.Sprintf("ebpf.mode %q: want auto, xdp-native, xdp-generic or tcx", e.Mode), "ebpf", "mode")
	}
	if e.Fragments != "pass" && e.Fragments != "drop" {
		return c.errAt(fmt.Sprintf("ebpf.fragments %q: want pass or drop", e.Fragments), "ebpf", "fragments")
	}
	if e.Enabled && len(e.Interfaces) == 0 {
		return c.errAt("ebpf.interfaces: name at least one interface to attach to", "ebpf")
	}
	for j, name := range e.Interfaces {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
			return c.errAt(fmt.Sprintf("ebpf.interfaces: %q is not an interface name", name), "ebpf", "interfaces", j)
		}
	}
	if e.FlowTableSize < 1024 || e.FlowTableSize > 1<<24 {
		return c.errAt("ebpf.flow_table_size must be between 1024 and 16777216", "ebpf", "flow_table_size")
	}
	if e.Blocklist.After < 1 {
		return c.errAt("ebpf.blocklist.after must be at least 1", "ebpf", "blocklist", "after")
	}
	if p := filepath.Clean(e.PinPath); !strings.HasPrefix(p, "/sys/fs/bpf/") {
		return c.errAt(fmt.Sprintf("ebpf.pin_path %q: want a folder under /sys/fs/bpf (bpffs)", e.PinPath), "ebpf", "pin_path")
	}
	var err error
	if e.allowOnly, err = c.prefixList("ebpf.allow_only", e.AllowOnly, "ebpf", "allow_only"); err != nil {
		return err
	}
	e.Blocklist.neverBlock, err = c.prefixList("ebpf.blocklist.never_block", e.Blocklist.NeverBlock, "ebpf", "blocklist", "never_block")
	return err
}

// prefixList parses a list of CIDRs and the word "cloudflare" (Cloudflare's
// published ranges); what names the list and path locates it for errors.
func (c *Config) prefixList(what string, list []string, path ...any) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for j, s := range list {
		if s == "cloudflare" {
			out = append(out, CloudflarePrefixes()...)
			continue
		}
		p, err := parsePrefix(s)
		if err != nil {
			return nil, c.errAt(fmt.Sprintf("%s: %v (want \"cloudflare\" or a CIDR)", what, err), append(path, j)...)
		}
		out = append(out, p)
	}
	return out, nil
}

var vhostName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

func (c *Config) validateVHost(i int, v *VHost) error {
	at := func(msg string, path ...any) error {
		return c.errAt(fmt.Sprintf("vhost %q: %s", v.Name, msg), append([]any{"vhosts", i}, path...)...)
	}
	if !vhostName.MatchString(v.Name) {
		return c.errAt(fmt.Sprintf("vhost name %q: want letters, digits, '.', '_' or '-' (at most 63)", v.Name), "vhosts", i, "name")
	}
	if len(v.Hosts) == 0 {
		return at("hosts: at least one host name is required", "hosts")
	}
	if err := validateUpstream(v.Upstream); err != nil {
		return at(err.Error(), "upstream")
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
		if len(v.AllowFrom) > 0 {
			return at("allow_from is only for mode mtls", "allow_from")
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
		var err error
		if v.allowFrom, err = c.prefixList(fmt.Sprintf("vhost %q: allow_from", v.Name), v.AllowFrom, "vhosts", i, "allow_from"); err != nil {
			return err
		}
	case "":
		return at("mode is required (passthrough or mtls)", "mode")
	default:
		return at(fmt.Sprintf("mode %q: want passthrough or mtls", v.Mode), "mode")
	}
	return nil
}

func validateUpstream(u Upstream) error {
	switch u.ProxyProtocol {
	case "off", "v1", "v2":
	default:
		return fmt.Errorf("upstream.proxy_protocol %q: want off, v1 or v2", u.ProxyProtocol)
	}
	if u.UniqueID && u.ProxyProtocol != "v2" {
		return errors.New("upstream.unique_id needs proxy_protocol v2")
	}
	if u.Address == "" {
		return errors.New("upstream.address is required")
	}
	if path, ok := strings.CutPrefix(u.Address, "unix:"); ok {
		if path == "" {
			return errors.New("upstream.address unix: needs a path")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(u.Address)
	if err != nil || host == "" {
		return fmt.Errorf("upstream.address %q: want host:port or unix:/path", u.Address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("upstream.address %q: bad port", u.Address)
	}
	return nil
}

// parsePrefix accepts a CIDR or a bare address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
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

// hostPattern validates a vhost host entry and returns its routing form:
// a normalised name, or "*." + normalised parent for a one-label wildcard.
func hostPattern(h string) (string, error) {
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
