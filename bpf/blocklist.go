package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Block drops every packet from addr to a guarded port until the given
// time. The kernel compares against CLOCK_MONOTONIC, so until is converted
// relative to now: wall-clock jumps do not shorten or lengthen a block.
func (g *Guard) Block(addr netip.Addr, until time.Time) error {
	now, err := monotonicNow()
	if err != nil {
		return err
	}
	d := time.Until(until)
	if d <= 0 {
		return g.Unblock(addr)
	}
	expiry := uint64(now + d.Nanoseconds())
	if err := g.objs.Blocklist.Put(addrKey(addr), expiry); err != nil {
		return fmt.Errorf("bpf: block %s: %w", addr, err)
	}
	return nil
}

// Unblock removes addr from the blocklist. Unblocking an address that is
// not blocked is not an error.
func (g *Guard) Unblock(addr netip.Addr) error {
	err := g.objs.Blocklist.Delete(addrKey(addr))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("bpf: unblock %s: %w", addr, err)
	}
	return nil
}

// Blocked reports whether addr is on the blocklist with an expiry in the
// future.
func (g *Guard) Blocked(addr netip.Addr) (bool, error) {
	var expiry uint64
	err := g.objs.Blocklist.Lookup(addrKey(addr), &expiry)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bpf: look up %s in blocklist: %w", addr, err)
	}
	now, err := monotonicNow()
	if err != nil {
		return false, err
	}
	return int64(expiry) > now, nil
}

// monotonicNow returns CLOCK_MONOTONIC in nanoseconds, the clock of
// bpf_ktime_get_ns.
func monotonicNow() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("bpf: read monotonic clock: %w", err)
	}
	return ts.Nano(), nil
}

// addrKey is the 16-byte form guard.c uses: IPv4 v4-mapped.
func addrKey(addr netip.Addr) guardAddrKey {
	return guardAddrKey{Addr: addr.Unmap().As16()}
}

// lpmKey converts a prefix to the allow trie's key; IPv4 prefixes become
// v4-mapped prefixes 96 bits longer.
func lpmKey(p netip.Prefix) guardLpmKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return guardLpmKey{Prefixlen: uint32(bits), Addr: p.Addr().As16()}
}
