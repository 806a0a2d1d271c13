// Package bpf loads edgegate's kernel guard: an eBPF program, attached at
// XDP or TCX ingress, that drops packets to edgegate's ports which cannot
// start a TLS connection (see guard.c) or that open connections from a
// source faster than its rate, plus the maps edgegate writes to steer it
// (guarded ports, blocklist, allow list, rate exemptions) and the counters
// it reads.
//
// Typical use:
//
//	g, err := bpf.Open(bpf.Config{Interfaces: []string{"eth0"}, Ports: []uint16{443}}, log)
//	if err != nil {
//		// run without the guard, loudly
//	}
//	defer g.Close()
//	off := bpf.NewOffenders(20, time.Minute, 10*time.Minute, nil, 65536, g.Block)
//	// on a non-TLS connection from addr: off.Offence(addr)
//
// Map state that must outlive a restart (flows being checked, the
// blocklist) is pinned under Config.PinPath; Close detaches the program and
// leaves the pins, so the next Open picks the state up again.
package bpf

//go:generate go tool bpf2go -cc clang-19 -target bpfel -type verdict guard guard.c -- -mcpu=v3 -Wall -Werror

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Mode names how the guard is attached to an interface.
type Mode string

// Attach modes. ModeAuto tries native XDP, then generic XDP, then TCX.
const (
	ModeAuto       Mode = "auto"
	ModeXDPNative  Mode = "xdp-native"
	ModeXDPGeneric Mode = "xdp-generic"
	ModeTCX        Mode = "tcx"
)

// PinVersion names the layout of the pinned maps. It is the last element
// of a pin path and changes whenever a map's layout does, so a new edgegate
// never picks up maps it cannot read.
const PinVersion = "v1"

// Defaults for zero Config fields.
const (
	DefaultFlowTableSize = 262144
	DefaultPinPath       = "/sys/fs/bpf/edgegate/" + PinVersion
)

// Config says where to attach the guard and what it guards. Zero values get
// the documented defaults.
type Config struct {
	// Interfaces to attach to, by name. Empty means load the program and
	// fill the maps without attaching (useful for tests and dry runs).
	Interfaces []string
	// Mode is the attach mode; "" means ModeAuto.
	Mode Mode
	// Ports are the guarded TCP destination ports.
	Ports []uint16
	// ProxyProtocolPorts are those of Ports whose listeners accept an
	// inbound PROXY protocol header: their streams start with that header,
	// not a ClientHello, so the first-bytes check is skipped for them
	// (blocklist, allow list, non-TCP and flag rules still apply).
	ProxyProtocolPorts []uint16
	// AllowOnly, when non-empty, makes every guarded port allow-list-only:
	// sources outside these prefixes are dropped.
	AllowOnly []netip.Prefix
	// DropFragments drops non-first IP fragments (which carry no port, so
	// this applies to all traffic on the interface); default is to pass them.
	DropFragments bool
	// SourceRate limits the SYNs each source may send to the guarded
	// ports; the zero value is no limit.
	SourceRate SourceRate
	// FlowTableSize is the number of slots in the flow table, which holds
	// the streams whose first bytes are being checked; default
	// DefaultFlowTableSize. A pinned table of another size is replaced
	// (its half-checked flows then pass as untracked).
	FlowTableSize int
	// PinPath is the bpffs directory for pinned maps; default
	// DefaultPinPath. The version component changes when map layouts do.
	PinPath string
}

// Guard is a loaded, attached guard. Its methods are safe for concurrent use.
// It is a prometheus.Collector (see counters.go).
type Guard struct {
	log      *slog.Logger
	cfg      Config
	objs     guardObjects
	mu       sync.Mutex // guards links, modes, settings
	links    []link.Link
	modes    map[string]string
	settings Settings // in the maps now
	hints    []byte   // block_hints, mapped (blocklist.go)
	closed   bool
}

// Open loads the guard, reusing pinned maps under cfg.PinPath if present so
// that flows and blocks survive a restart, fills the port, allow-list and
// config maps, and attaches to every interface in cfg.Interfaces. On error
// nothing stays attached. The caller must Close the Guard.
func Open(cfg Config, log *slog.Logger) (*Guard, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeAuto
	}
	switch cfg.Mode {
	case ModeAuto, ModeXDPNative, ModeXDPGeneric, ModeTCX:
	default:
		return nil, fmt.Errorf("bpf: unknown attach mode %q", cfg.Mode)
	}
	if cfg.FlowTableSize == 0 {
		cfg.FlowTableSize = DefaultFlowTableSize
	}
	if cfg.FlowTableSize < 0 {
		return nil, fmt.Errorf("bpf: flow table size %d is negative", cfg.FlowTableSize)
	}
	if cfg.PinPath == "" {
		cfg.PinPath = DefaultPinPath
	}

	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("bpf: remove memlock limit: %w", err)
	}
	g := &Guard{log: log, cfg: cfg, modes: make(map[string]string)}
	if err := g.load(); err != nil {
		return nil, err
	}
	if err := g.fill(); err != nil {
		g.unmapBlockHints()
		g.objs.Close()
		return nil, err
	}
	for _, name := range cfg.Interfaces {
		l, mode, err := g.attach(name)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.links = append(g.links, l)
		g.modes[name] = string(mode)
	}
	return g, nil
}

// fill writes the configuration maps, which are not pinned: every Open
// states the whole configuration.
func (g *Guard) fill() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.apply(Settings{
		Ports:              g.cfg.Ports,
		ProxyProtocolPorts: g.cfg.ProxyProtocolPorts,
		AllowOnly:          g.cfg.AllowOnly,
		DropFragments:      g.cfg.DropFragments,
		SourceRate:         g.cfg.SourceRate,
	})
}

// Flags shared with guard.c.
const (
	portAllowOnly       = 0x1
	portProxyHeader     = 0x2
	portGuarded         = 0x4
	configDropFragments = 0x1
	configSourceRate    = 0x2
)

// SourceRateTableSize is how many sources the kernel tracks the SYN rate
// of (SOURCE_RATE_MAX in guard.c); past it, the least recently seen
// source's bucket is dropped.
const SourceRateTableSize = 65536

// SourceRate limits how fast one source may open connections: SYNs to a
// guarded port beyond PerSecond a second, after a burst of Burst, are
// dropped (verdict drop_source_rate). A source is an IPv4 address or an
// IPv6 /64. The zero value is no limit.
type SourceRate struct {
	PerSecond  float64        // SYNs a second; 0 turns the limit off
	Burst      int            // SYNs a source may send at once after a quiet spell; at least 1
	NeverLimit []netip.Prefix // sources exempt from the limit
}

// rateParams are the kernel's form of r: the nanoseconds one SYN costs
// and how far ahead of the clock a source may run.
func (r SourceRate) rateParams() (interval, burst uint64) {
	if r.PerSecond <= 0 {
		return 0, 0
	}
	interval = uint64(math.Round(1e9 / r.PerSecond))
	if interval == 0 {
		interval = 1
	}
	return interval, interval * uint64(max(r.Burst, 1))
}

// Settings are the parts of a Config that a running guard can change: what
// it guards and how. The rest (interfaces, mode, table size, pin path)
// needs a new Guard.
type Settings struct {
	Ports              []uint16
	ProxyProtocolPorts []uint16
	AllowOnly          []netip.Prefix
	DropFragments      bool
	SourceRate         SourceRate
}

// Update makes s the guard's settings, as a configuration reload does. On
// error the guard is put back to the settings it had and the error says
// what failed, so a refused reload leaves the kernel as it was.
func (g *Guard) Update(s Settings) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.settings
	if err := g.apply(s); err != nil {
		// Part of s may be in the maps: count it as in force so that
		// restoring old removes it.
		g.settings.Ports = append(slices.Clone(old.Ports), s.Ports...)
		g.settings.AllowOnly = append(slices.Clone(old.AllowOnly), s.AllowOnly...)
		g.settings.SourceRate.NeverLimit = append(slices.Clone(old.SourceRate.NeverLimit), s.SourceRate.NeverLimit...)
		if rerr := g.apply(old); rerr != nil {
			return fmt.Errorf("%w (and restoring the previous settings failed: %v)", err, rerr)
		}
		return err
	}
	return nil
}

// apply writes s into the port, allow-list and rate-exemption maps and
// the config variable, removing what the settings in force had and s has not. The
// exemptions go in before the limit is turned on, so no exempt source is
// ever limited; a new rate empties the rate table, so every source starts
// afresh under it rather than paying for what it sent under the old one.
// g.mu must be held.
func (g *Guard) apply(s Settings) error {
	if err := putPrefixes(g.objs.NeverLimit, "exempt from the rate limit", s.SourceRate.NeverLimit, g.settings.SourceRate.NeverLimit); err != nil {
		return err
	}
	cfg := guardGuardConfig{}
	if s.DropFragments {
		cfg.Flags |= configDropFragments
	}
	if s.SourceRate.PerSecond > 0 {
		cfg.Flags |= configSourceRate
		cfg.RateIntervalNs, cfg.RateBurstNs = s.SourceRate.rateParams()
	}
	if err := g.objs.Config.Set(cfg); err != nil {
		return fmt.Errorf("bpf: write config: %w", err)
	}
	oldInterval, oldBurst := g.settings.SourceRate.rateParams()
	if cfg.RateIntervalNs != oldInterval || cfg.RateBurstNs != oldBurst {
		if err := g.clearSourceRate(); err != nil {
			return err
		}
	}
	if err := putPrefixes(g.objs.Allow, "allow", s.AllowOnly, g.settings.AllowOnly); err != nil {
		return err
	}
	for _, p := range s.Ports {
		pol := guardPortPolicy{Flags: portGuarded}
		if len(s.AllowOnly) > 0 {
			pol.Flags |= portAllowOnly
		}
		if slices.Contains(s.ProxyProtocolPorts, p) {
			pol.Flags |= portProxyHeader
		}
		if err := g.objs.Ports.Put(uint32(p), pol); err != nil {
			return fmt.Errorf("bpf: guard port %d: %w", p, err)
		}
	}
	for _, p := range g.settings.Ports {
		if slices.Contains(s.Ports, p) {
			continue
		}
		if err := g.objs.Ports.Put(uint32(p), guardPortPolicy{}); err != nil {
			return fmt.Errorf("bpf: unguard port %d: %w", p, err)
		}
	}
	g.settings = Settings{
		Ports:              slices.Clone(s.Ports),
		ProxyProtocolPorts: slices.Clone(s.ProxyProtocolPorts),
		AllowOnly:          slices.Clone(s.AllowOnly),
		DropFragments:      s.DropFragments,
		SourceRate: SourceRate{
			PerSecond:  s.SourceRate.PerSecond,
			Burst:      s.SourceRate.Burst,
			NeverLimit: slices.Clone(s.SourceRate.NeverLimit),
		},
	}
	return nil
}

// clearSourceRate empties the kernel's rate table.
func (g *Guard) clearSourceRate() error {
	keys := make([]guardAddrKey, flowBatch)
	vals := make([]uint64, flowBatch)
	for {
		var cursor ebpf.MapBatchCursor
		n, err := g.objs.SourceRate.BatchLookupAndDelete(&cursor, keys, vals, nil)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("bpf: empty the rate table: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
}

// putPrefixes makes an LPM trie hold want: it adds every prefix of want
// and removes those of had that want has not. what names the trie in
// errors.
func putPrefixes(m *ebpf.Map, what string, want, had []netip.Prefix) error {
	for _, p := range want {
		if err := m.Put(lpmKey(p), uint8(1)); err != nil {
			return fmt.Errorf("bpf: %s %s: %w", what, p, err)
		}
	}
	for _, p := range had {
		if slices.Contains(want, p) {
			continue
		}
		if err := m.Delete(lpmKey(p)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("bpf: %s: remove %s: %w", what, p, err)
		}
	}
	return nil
}

// Modes returns the attach mode actually used per interface.
func (g *Guard) Modes() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]string, len(g.modes))
	for k, v := range g.modes {
		out[k] = v
	}
	return out
}

// Close detaches the guard from every interface and releases the program
// and map handles. Pinned maps stay for the next Open.
func (g *Guard) Close() error {
	return g.close(true)
}

// Release lets go of the guard without detaching it: its pinned attachment
// keeps running whatever program it holds now, which after an upgrade is the
// successor's (see attach). Pinned maps stay, as with Close.
func (g *Guard) Release() error {
	return g.close(false)
}

func (g *Guard) close(detach bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	for _, l := range g.links {
		if detach {
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("bpf: unpin link: %w", err))
			}
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bpf: detach: %w", err))
		}
	}
	g.links = nil
	g.modes = map[string]string{}
	g.unmapBlockHints()
	if err := g.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bpf: close objects: %w", err))
	}
	return errors.Join(errs...)
}
