package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

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
	key := addrKey(addr)
	// The hint first: the program looks at the blocklist only where the
	// hint is set.
	g.raiseBlockHint(key, expiry)
	if err := g.objs.Blocklist.Put(key, expiry); err != nil {
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

// Block hints: see block_hints in guard.c.
const (
	blockHintBits = 16
	blockHintMul  = 0x9e3779b1
)

// blockHintIndex is guard.c's block_hint_index: the address's four
// 32-bit words as the BPF target (little-endian) reads them.
func blockHintIndex(key guardAddrKey) uint32 {
	a := key.Addr[:]
	x := binary.LittleEndian.Uint32(a[0:]) ^ binary.LittleEndian.Uint32(a[4:]) ^
		binary.LittleEndian.Uint32(a[8:]) ^ binary.LittleEndian.Uint32(a[12:])
	return (x * blockHintMul) >> (32 - blockHintBits)
}

// mapBlockHints maps the block_hints array into memory, where
// raiseBlockHint changes it with compare-and-swap, as the program does.
func (g *Guard) mapBlockHints() error {
	size := int(g.objs.BlockHints.MaxEntries()) * 8
	mem, err := unix.Mmap(g.objs.BlockHints.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("bpf: map the block hints: %w", err)
	}
	g.hints = mem
	return nil
}

// blockHint returns the hint an address's blocks are noted in.
func (g *Guard) blockHint(key guardAddrKey) *uint64 {
	return (*uint64)(unsafe.Pointer(&g.hints[8*blockHintIndex(key)]))
}

// raiseBlockHint makes the address's hint at least expiry.
func (g *Guard) raiseBlockHint(key guardAddrKey, expiry uint64) {
	h := g.blockHint(key)
	for {
		old := atomic.LoadUint64(h)
		if old >= expiry || atomic.CompareAndSwapUint64(h, old, expiry) {
			return
		}
	}
}

// hintBlocklist raises the hints of every block in the (pinned) blocklist,
// which a blocklist pinned by an edgegate from before the hints lacks.
func (g *Guard) hintBlocklist() error {
	keys := make([]guardAddrKey, 4096)
	vals := make([]uint64, len(keys))
	var cursor ebpf.MapBatchCursor
	for {
		n, err := g.objs.Blocklist.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			g.raiseBlockHint(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("bpf: read the blocklist: %w", err)
		}
	}
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
