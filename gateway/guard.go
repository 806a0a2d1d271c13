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

// startGuard loads and attaches the eBPF guard when the configuration asks
// for it. A failure is fatal with ebpf.required; otherwise edgegate runs
// unguarded and says so loudly (log and edgegate_bpf_guard_up 0).
func (s *Server) startGuard(cfg *config.Config) error {
	e := cfg.EBPF
	if !e.Enabled {
		return nil
	}
	s.metrics.guardConfigured()
	ports, proxied := guardedPorts(cfg)
	g, err := bpf.Open(bpf.Config{
		Interfaces:         e.Interfaces,
		Mode:               bpf.Mode(e.Mode),
		Ports:              ports,
		ProxyProtocolPorts: proxied,
		AllowOnly:          e.AllowOnlyPrefixes,
		DropFragments:      e.Fragments == "drop",
		FlowTableSize:      e.FlowTableSize,
		PinPath:            filepath.Join(e.PinPath, bpf.PinVersion),
	}, s.log)
	if err != nil {
		if e.Required {
			return fmt.Errorf("ebpf guard (required): %w", err)
		}
		s.log.Error("RUNNING WITHOUT THE EBPF GUARD: attach failed and ebpf.required is false", "err", err)
		s.guardMode.Store("failed")
		return nil
	}
	bl := e.Blocklist
	s.guard = &guard{
		g:         g,
		offenders: bpf.NewOffenders(bl.After, bl.Within.D(), bl.For.D(), bl.NeverBlockPrefixes, 0, g.Block),
	}
	s.metrics.guardUp.Set(1)
	s.metrics.reg.MustRegister(prometheus.Collector(g))
	modes := g.Modes()
	var desc []string
	for _, ifc := range e.Interfaces {
		desc = append(desc, ifc+"="+modes[ifc])
	}
	s.guardMode.Store(fmt.Sprint(desc))
	s.log.Info("ebpf guard attached", "modes", modes, "ports", ports)
	return nil
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
