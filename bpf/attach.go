package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// attach attaches the guard to one interface in the configured mode. In
// ModeAuto it tries native XDP (fastest: before the kernel allocates an
// skb), then generic XDP, then TCX ingress, and logs why each failed.
//
// The link is pinned, so that a successor process (an upgrade, or a restart
// after a crash) takes it over by swapping in its own program, atomically:
// the interface is never unguarded. A link pinned by a predecessor is
// adopted that way when its mode is the one asked for (or any, in auto);
// otherwise the new link is attached first and the old one removed after.
func (g *Guard) attach(name string) (link.Link, Mode, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return nil, "", fmt.Errorf("bpf: attach to %s: %w", name, err)
	}
	old, oldMode := g.pinnedLink(name)
	if old != nil && (g.cfg.Mode == ModeAuto || g.cfg.Mode == oldMode) {
		prog := g.objs.GuardXdp
		if oldMode == ModeTCX {
			prog = g.objs.GuardTc
		}
		if err := old.Update(prog); err == nil {
			g.log.Info("bpf: guard took over the attachment of its predecessor", "interface", name, "mode", oldMode)
			return old, oldMode, nil
		} else {
			g.log.Warn("bpf: could not take over the pinned attachment; attaching anew", "interface", name, "mode", oldMode, "err", err)
		}
	}
	l, mode, err := g.attachFresh(iface.Index, name)
	if err != nil {
		if old != nil {
			old.Close() // still pinned: the predecessor's program keeps guarding
		}
		return nil, "", err
	}
	if old != nil {
		old.Unpin()
		old.Close()
	}
	if err := l.Pin(g.linkPinPath(name, mode)); err != nil {
		g.log.Warn("bpf: could not pin the attachment; an upgrade will re-attach", "interface", name, "err", err)
	}
	return l, mode, nil
}

// linkPinPath is where the link for an interface is pinned; the mode is in
// the name so a successor knows which program type to swap in.
func (g *Guard) linkPinPath(name string, mode Mode) string {
	return filepath.Join(g.cfg.PinPath, "link-"+name+"-"+string(mode))
}

// pinnedLink loads the link a predecessor pinned for an interface, if any.
func (g *Guard) pinnedLink(name string) (link.Link, Mode) {
	for _, mode := range []Mode{ModeXDPNative, ModeXDPGeneric, ModeTCX} {
		path := g.linkPinPath(name, mode)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			g.log.Warn("bpf: unusable pinned attachment removed", "path", path, "err", err)
			os.Remove(path)
			continue
		}
		return l, mode
	}
	return nil, ""
}

// attachFresh makes a new attachment in the configured mode (or the best
// available, in auto).
func (g *Guard) attachFresh(ifindex int, name string) (link.Link, Mode, error) {
	order := []Mode{g.cfg.Mode}
	if g.cfg.Mode == ModeAuto {
		order = []Mode{ModeXDPNative, ModeXDPGeneric, ModeTCX}
	}
	var errs []error
	for _, mode := range order {
		l, err := g.attachMode(ifindex, mode)
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
