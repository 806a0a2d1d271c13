package bpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// attach attaches the guard to one interface in the configured mode. In
// ModeAuto it tries native XDP (fastest: before the kernel allocates an
// skb), then generic XDP, then TCX ingress, and logs why each failed.
func (g *Guard) attach(name string) (link.Link, Mode, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return nil, "", fmt.Errorf("bpf: attach to %s: %w", name, err)
	}
	order := []Mode{g.cfg.Mode}
	if g.cfg.Mode == ModeAuto {
		order = []Mode{ModeXDPNative, ModeXDPGeneric, ModeTCX}
	}
	var errs []error
	for _, mode := range order {
		l, err := g.attachMode(iface.Index, mode)
		if err == nil {
			g.log.Info("bpf: guard attached", "interface", name, "mode", mode)
			return l, mode, nil
		}
		if g.cfg.Mode == ModeAuto {
			g.log.Info("bpf: attach mode unavailable, trying the next", "interface", name, "mode", mode, "err", err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", mode, err))
	}
	return nil, "", fmt.Errorf("bpf: attach to %s: %w", name, errors.Join(errs...))
}

func (g *Guard) attachMode(ifindex int, mode Mode) (link.Link, error) {
	switch mode {
	case ModeXDPNative:
		return link.AttachXDP(link.XDPOptions{Program: g.objs.GuardXdp, Interface: ifindex, Flags: link.XDPDriverMode})
	case ModeXDPGeneric:
		return link.AttachXDP(link.XDPOptions{Program: g.objs.GuardXdp, Interface: ifindex, Flags: link.XDPGenericMode})
	case ModeTCX:
		return link.AttachTCX(link.TCXOptions{Program: g.objs.GuardTc, Interface: ifindex, Attach: ebpf.AttachTCXIngress})
	}
	return nil, fmt.Errorf("unknown mode %q", mode)
}
