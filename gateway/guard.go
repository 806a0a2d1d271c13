package gateway

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegate/edgegate/bpf"
	"github.com/edgegate/edgegate/gateway/config"
)

// guard is the running eBPF guard and the offender table that feeds its
// blocklist. A nil *guard means edgegate runs without one.
type guard struct {
	g         *bpf.Guard
	offenders *bpf.Offenders
}

// openGuard loads and attaches the eBPF guard when the configuration asks
// for it. A failure is an error with ebpf.required; otherwise it is
// returned as failed, for commitGuard to report: edgegate then runs
// unguarded and says so loudly.
func (s *Server) openGuard(cfg *config.Config) (g *guard, failed, err error) {
	e := cfg.EBPF
	if !e.Enabled {
		return nil, nil, nil
	}
	bg, err := bpf.Open(bpf.Config{
		Interfaces:    e.Interfaces,
		Mode:          bpf.Mode(e.Mode),
		FlowTableSize: e.FlowTableSize,
		PinPath:       filepath.Join(e.PinPath, bpf.PinVersion),
	}, s.log)
	if err == nil {
		err = bg.Update(guardSettings(cfg))
		if err != nil {
			bg.Close()
		}
	}
	if err != nil {
		if e.Required {
			return nil, nil, cfg.ErrAt(fmt.Sprintf("ebpf guard (required): %v", err), "ebpf")
		}
		return nil, err, nil
	}
	bl := e.Blocklist
	return &guard{
		g:         bg,
		offenders: bpf.NewOffenders(bl.After, bl.Within.D(), bl.For.D(), bl.NeverBlockPrefixes, 0, bg.Block),
	}, nil, nil
}

// commitGuard makes the guard that openGuard returned the server's, with
// its metrics; edgegate_bpf_guard_up exists only where the guard is
// configured, so an alert on it never fires where it is not used.
func (s *Server) commitGuard(cfg *config.Config, g *guard, failed error) {
	if !cfg.EBPF.Enabled {
		return
	}
	s.metrics.reg.MustRegister(s.metrics.guardUp, s.metrics.blocked)
	if g == nil {
		s.log.Error("RUNNING WITHOUT THE EBPF GUARD: attach failed and ebpf.required is false", "err", failed)
		s.guardMode.Store("failed")
		return
	}
	s.guard = g
	s.metrics.guardUp.Set(1)
	s.metrics.reg.MustRegister(prometheus.Collector(g.g))
	modes := g.g.Modes()
	var desc []string
	for _, ifc := range cfg.EBPF.Interfaces {
		desc = append(desc, ifc+"="+modes[ifc])
	}
	s.guardMode.Store(fmt.Sprint(desc))
	s.log.Info("ebpf guard attached", "modes", modes, "ports", guardSettings(cfg).Ports)
}

// updateGuard applies what a reloaded configuration changes in the running
// guard: guarded ports, which of them take a PROXY header, allow_only,
// fragments, limits.rate, and the blocklist's rules. If the kernel refuses, the guard
// is left as it was and the reload must be refused.
func (s *Server) updateGuard(cfg *config.Config) error {
	if s.guard == nil {
		return nil
	}
	if err := s.guard.g.Update(guardSettings(cfg)); err != nil {
		return fmt.Errorf("ebpf guard: %w", err)
	}
	bl := cfg.EBPF.Blocklist
	s.guard.offenders.SetRules(bl.After, bl.Within.D(), bl.For.D(), bl.NeverBlockPrefixes)
	return nil
}

// guardSettings is what the guard derives from a configuration.
func guardSettings(cfg *config.Config) bpf.Settings {
	ports, proxied := guardedPorts(cfg)
	return bpf.Settings{
		Ports:              ports,
		ProxyProtocolPorts: proxied,
		AllowOnly:          cfg.EBPF.AllowOnlyPrefixes,
		DropFragments:      cfg.EBPF.Fragments == "drop",
		SourceRate: bpf.SourceRate{
			PerSecond:  cfg.Limits.Rate.PerSource.PerSecond(),
			Burst:      cfg.Limits.Rate.Burst,
			NeverLimit: cfg.Limits.Rate.NeverLimitPrefixes,
		},
	}
}

// guardedPorts lists the listeners' ports, and those of them that take an
// inbound PROXY header (the kernel cannot check their first bytes).
func guardedPorts(cfg *config.Config) (ports, proxied []uint16) {
	for _, l := range cfg.Listen {
		_, p, err := net.SplitHostPort(l.Address)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			continue
		}
		if !slices.Contains(ports, uint16(n)) {
			ports = append(ports, uint16(n))
		}
		if l.AcceptProxyProtocol && !slices.Contains(proxied, uint16(n)) {
			proxied = append(proxied, uint16(n))
		}
	}
	return ports, proxied
}

// offence records a source's misbehaviour; enough of them within the window
// put it in the kernel's blocklist. Only direct peers count: behind a
// balancer the kernel sees the balancer, not the client.
func (s *Server) offence(ss *session) {
	if s.guard == nil || ss.viaProxy {
		return
	}
	switch ss.outcome {
	case OutcomeNotTLS, OutcomeBadHello, OutcomeHelloTooLarge, OutcomeClientCert, OutcomeHandshake:
	default:
		return
	}
	if s.guard.offenders.Offence(ss.peer) {
		s.metrics.blocked.Inc()
		s.log.Info("source blocked in the kernel", "client", ss.peer.String(), "reason", string(ss.outcome))
	}
}

// closeGuard detaches the guard; its pinned maps (flows, blocklist) stay
// for the next process. After HandOver it only lets go of the guard: the
// successor has taken over its attachment.
func (s *Server) closeGuard() {
	if s.guard == nil {
		return
	}
	if s.handOver.Load() {
		s.guard.g.Release()
		return
	}
	s.guard.g.Close()
}
