package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgegate/edgegate/gateway/cloudflare"
	"github.com/edgegate/edgegate/sni"
	"go.yaml.in/yaml/v3"
)

// Error is a configuration problem at a line of a file.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Load reads, decodes and validates the configuration file at path.
// Every problem is reported as FILE:LINE: what is wrong. keep is the set of
// Cloudflare data in force (nil: the built-in one); it is used when the set
// in cloudflare_data is refused.
func Load(path string, keep *cloudflare.Data) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, keep)
}

// Parse decodes and validates configuration bytes; file names them in
// errors and anchors relative paths. keep is as for Load.
func Parse(file string, data []byte, keep *cloudflare.Data) (*Config, error) {
	if keep == nil {
		keep = cloudflare.Builtin()
	}
	cfg := &Config{File: file}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(file, data, err)
	}
	if len(root.Content) == 0 {
		return nil, &Error{File: file, Line: 1, Msg: "empty configuration"}
	}
	cfg.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, yamlError(file, err)
	}
	if err := cfg.includeVHosts(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	// Cloudflare's ranges and CA come from cloudflare_data when it holds a
	// valid set (written by `edgegate cloudflare update`); a broken set is
	// refused, the last good one stays, and check and the log say so.
	if d, err := cloudflare.Read(cfg.Path(cfg.CloudflareData), time.Now()); err != nil {
		cfg.Cloudflare = keep
		cfg.Notes = append(cfg.Notes, fmt.Sprintf("cloudflare_data %s refused, keeping %s: %v", cfg.CloudflareData, keep.Source, err))
	} else {
		cfg.Cloudflare = d
		cfg.Notes = append(cfg.Notes, d.Warnings...)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var unknownField = regexp.MustCompile(`^field (\S+) not found in type .*$`)

// yamlError turns the strict decoder's errors into FILE:LINE: errors (the
// first one; one fix at a time is what an operator can act on).
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
		return &Error{File: file, Msg: strings.TrimPrefix(msgs[0], "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	if u := unknownField.FindStringSubmatch(msg); u != nil {
		msg = fmt.Sprintf("unknown key %q", u[1])
	}
	msg = strings.Replace(msg, "cannot unmarshal !!", "wrong type: ", 1)
	return &Error{File: file, Line: line, Msg: msg}
}

// syntaxError reports a document that is not YAML at the line where it
// stops being YAML. The decoder's own line is often wrong or missing: for
// a parser error it gives the line before the enclosing block or flow
// collection starts (a mistake on line 40 of a vhost that starts on line
// 30 is reported at 29), and none at all when that is the first line. So
// the line is found instead, by bisection, as the first line after which
// the document already fails with the same message. A document cut inside
// a flow collection or a quoted string can fail the same way as the whole,
// so a mistake within one that spans lines may be placed on an earlier line
// of it; that is where an unclosed '[' or '"' is anyway.
func syntaxError(file string, data []byte, err error) error {
	msg := syntaxMsg(err)
	var ends []int // the end of each line, its newline included
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	k := sort.Search(len(ends), func(k int) bool {
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[k]], &n)
		return err != nil && syntaxMsg(err) == msg
	})
	if k == len(ends) { // not reached: the whole document fails so
		return &Error{File: file, Line: max(k, 1), Msg: msg}
	}
	start := 0
	if k > 0 {
		start = ends[k-1]
	}
	if msg == "found character that cannot start any token" && bytes.HasPrefix(bytes.TrimLeft(data[start:ends[k]], " "), []byte("\t")) {
		msg += " (a tab: YAML indents with spaces only)"
	}
	return &Error{File: file, Line: k + 1, Msg: msg}
}

var syntaxPrefix = regexp.MustCompile(`^yaml: (?:line \d+: )?`)

// syntaxMsg is a syntax error's message without the decoder's prefix and
// line.
func syntaxMsg(err error) string {
	return syntaxPrefix.ReplaceAllString(err.Error(), "")
}

func (c *Config) setDefaults() {
	if c.Unmatched == "" {
		c.Unmatched = "close"
	}
	if c.CloudflareData == "" {
		c.CloudflareData = "/var/lib/edgegate/cloudflare"
	}
	def := func(d *Duration, v time.Duration, path ...any) {
		if *d == 0 {
			c.zeroIsDefault(shortDuration(v), path...)
			*d = Duration(v)
		}
	}
	defInt := func(n *int, v int, path ...any) {
		if *n == 0 {
			c.zeroIsDefault(strconv.Itoa(v), path...)
			*n = v
		}
	}
	def(&c.Timeouts.ClientHello, 5*time.Second, "timeouts", "client_hello")
	def(&c.Timeouts.UpstreamDial, 5*time.Second, "timeouts", "upstream_dial")
	def(&c.Timeouts.Idle, 5*time.Minute, "timeouts", "idle")
	def(&c.Timeouts.Drain, 30*time.Second, "timeouts", "drain")
	def(&c.Timeouts.Handshake, 10*time.Second, "timeouts", "handshake")
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	defInt(&c.Limits.MaxHelloSize, sni.DefaultMaxSize, "limits", "max_hello_size")
	if c.EBPF.Mode == "" {
		c.EBPF.Mode = "auto"
	}
	if c.EBPF.Fragments == "" {
		c.EBPF.Fragments = "pass"
	}
	defInt(&c.EBPF.Blocklist.After, 20, "ebpf", "blocklist", "after")
	def(&c.EBPF.Blocklist.Within, time.Minute, "ebpf", "blocklist", "within")
	def(&c.EBPF.Blocklist.For, 10*time.Minute, "ebpf", "blocklist", "for")
	defInt(&c.EBPF.FlowTableSize, 262144, "ebpf", "flow_table_size")
	if c.EBPF.PinPath == "" {
		c.EBPF.PinPath = "/sys/fs/bpf/edgegate"
	}
	for i := range c.VHosts {
		v := &c.VHosts[i]
		if v.Upstream.ProxyProtocol == "" {
			v.Upstream.ProxyProtocol = "v2"
		}
		if v.Upstream.Balance == "" {
			v.Upstream.Balance = "round_robin"
		}
		for j := range v.Upstream.Servers {
			defInt(&v.Upstream.Servers[j].Weight, 1, "vhosts", i, "upstream", "servers", j, "weight")
		}
		if hc := v.Upstream.HealthCheck; hc != nil {
			def(&hc.Interval, 2*time.Second, "vhosts", i, "upstream", "health_check", "interval")
			def(&hc.Timeout, time.Second, "vhosts", i, "upstream", "health_check", "timeout")
			defInt(&hc.Fall, 3, "vhosts", i, "upstream", "health_check", "fall")
			defInt(&hc.Rise, 2, "vhosts", i, "upstream", "health_check", "rise")
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

// ErrAt is a configuration error at the node found by path (keys and
// indexes from the document root, as in ErrAt("bad", "vhosts", 2, "tls"));
// the nearest existing ancestor gives the line. A path into a vhost that
// came from an included file names that file and its line.
func (c *Config) ErrAt(msg string, path ...any) error {
	file, _, line := c.locate(path...)
	return &Error{File: file, Line: line, Msg: msg}
}

// line returns the line of the node at path, or of its nearest ancestor.
func (c *Config) line(path ...any) int {
	_, _, line := c.locate(path...)
	return line
}

// find returns the node at path (nil if absent) and the line of it or of
// its nearest ancestor.
func (c *Config) find(path ...any) (*yaml.Node, int) {
	_, n, line := c.locate(path...)
	return n, line
}

// locate finds the node at path, the line of it or of its nearest
// ancestor, and the file it was written in: a path into a vhost that came
// from an included file is followed in that file.
func (c *Config) locate(path ...any) (file string, n *yaml.Node, line int) {
	if len(path) >= 2 && path[0] == "vhosts" {
		if i, ok := path[1].(int); ok {
			if k := i - (len(c.VHosts) - len(c.origins)); k >= 0 && k < len(c.origins) {
				o := c.origins[k]
				n, line := walk(o.node, path[2:])
				return o.file, n, line
			}
		}
	}
	if c.root == nil || len(c.root.Content) == 0 {
		return c.File, nil, 0
	}
	n, line = walk(c.root.Content[0], path)
	return c.File, n, line
}

// walk follows path (mapping keys and sequence indexes) down from n. It
// returns the node reached, or nil when the path leaves the document, and
// the line of the deepest node found.
func walk(n *yaml.Node, path []any) (*yaml.Node, int) {
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
			return nil, line
		}
		n = next
	}
	return n, line
}

// zeroIsDefault notes a zero written at path that the default replaces:
// "idle: 0s" reads as "no idle timeout" but means five minutes.
func (c *Config) zeroIsDefault(def string, path ...any) {
	n, _ := c.find(path...)
	if n == nil {
		return
	}
	var key []string
	for _, p := range path {
		switch p := p.(type) {
		case string:
			key = append(key, p)
		case int:
			key[len(key)-1] += fmt.Sprintf("[%d]", p)
		}
	}
	written := n.Value
	if n.ShortTag() == "!!null" {
		written = "no value"
	}
	c.Notes = append(c.Notes, c.ErrAt(fmt.Sprintf("%s: %s means the default, %s; write the default or remove the key",
		strings.Join(key, "."), written, def), path...).Error())
}

// shortDuration writes d as it would be written in the file: 5m, not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Path resolves a path from the configuration against the file's folder.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// Files lists every file the configuration depends on: itself, the files
// it includes and each certificate, key, CA bundle, CRL and ticket-key file
// it names (resolved), and the folder of each include glob, whose
// modification time moves when a file is added to it or removed. A change
// to any of them is a reason to reload.
func (c *Config) Files() []string {
	files := []string{c.File}
	files = append(files, c.Included...)
	for _, pat := range c.Include {
		files = append(files, filepath.Dir(c.Path(pat)))
	}
	for _, name := range []string{cloudflare.IPv4File, cloudflare.IPv6File, cloudflare.CAFile} {
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
		if v.ClientAuth != nil {
			for _, f := range v.ClientAuth.CRL {
				files = append(files, c.Path(f))
			}
		}
		if t := v.Upstream.TLS; t != nil {
			if t.CA != "system" {
				files = append(files, c.Path(t.CA))
			}
			if t.Certificate != "" {
				files = append(files, c.Path(t.Certificate), c.Path(t.Key))
			}
		}
	}
	return files
}

// ControlSocketOf returns the control socket that the configuration file
// at path names, resolved against its folder, or "" when it names none or
// cannot be read as YAML at all. It reads only that key, so that `edgegate
// reload` can reach the running process even with a file that does not
// load: the process refuses it and says why.
func ControlSocketOf(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var c struct {
		ControlSocket string `yaml:"control_socket"`
	}
	if yaml.Unmarshal(data, &c) != nil {
		return ""
	}
	return (&Config{File: path}).Path(c.ControlSocket)
}
