package bpf

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultOffendersSize bounds the offender table when NewOffenders gets a
// size below 1.
const DefaultOffendersSize = 65536

// Offenders counts offences per source address (non-TLS bytes that reached
// userspace, malformed hellos, refused handshakes) and blocks a source that
// commits after offences within a window. The table is a bounded LRU, so a
// flood of distinct addresses evicts the oldest records instead of growing
// memory; an evicted source simply starts counting again.
//
// An Offenders is safe for concurrent use.
type Offenders struct {
	block func(netip.Addr, time.Time) error
	now   func() time.Time // replaced in tests

	mu    sync.Mutex
	table *simplelru.LRU[netip.Addr, []time.Time]
	rules offenceRules
}

// offenceRules say when a source is blocked, and for how long.
type offenceRules struct {
	after      int
	within     time.Duration
	blockFor   time.Duration
	neverBlock []netip.Prefix
}

// NewOffenders returns a tracker that calls block(addr, now+blockFor) once
// addr has committed after offences within the duration within. Addresses
// in neverBlock are never counted. size bounds the table (DefaultOffendersSize
// if below 1); after below 1 is treated as 1. Typically block is
// (*Guard).Block.
func NewOffenders(after int, within, blockFor time.Duration, neverBlock []netip.Prefix, size int,
	block func(netip.Addr, time.Time) error) *Offenders {
	if size < 1 {
		size = DefaultOffendersSize
	}
	table, err := simplelru.NewLRU[netip.Addr, []time.Time](size, nil)
	if err != nil {
		// Only a non-positive size fails, which is excluded above.
		panic(err)
	}
	o := &Offenders{block: block, now: time.Now, table: table}
	o.SetRules(after, within, blockFor, neverBlock)
	return o
}

// SetRules replaces when a source is blocked (after offences within the
// duration within), for how long, and who never is, as a configuration
// reload does. Offences on record are kept and judged by the new rules.
func (o *Offenders) SetRules(after int, within, blockFor time.Duration, neverBlock []netip.Prefix) {
	if after < 1 {
		after = 1
	}
	never := make([]netip.Prefix, len(neverBlock))
	for i, p := range neverBlock {
		never[i] = netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)).Masked()
	}
	o.mu.Lock()
	o.rules = offenceRules{after: after, within: within, blockFor: blockFor, neverBlock: never}
	o.mu.Unlock()
}

// unmappedBits returns the prefix length once a v4-mapped prefix is
// expressed as IPv4.
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

// Offence records one offence by addr and reports whether it got addr
// blocked. A source is blocked on the offence that makes after offences
// within the window; its record is then cleared. If block fails the
// offence is not reported as a block and counting starts over.
func (o *Offenders) Offence(addr netip.Addr) (blocked bool) {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return false
	}
	now := o.now()

	o.mu.Lock()
	r := o.rules
	if r.exempt(addr) {
		o.mu.Unlock()
		return false
	}
	times, _ := o.table.Get(addr)
	// Times are appended in order, so expired ones are a prefix.
	cut := 0
	for cut < len(times) && now.Sub(times[cut]) >= r.within {
		cut++
	}
	times = append(times[cut:], now)
	full := len(times) >= r.after
	if full {
		o.table.Remove(addr)
	} else {
		o.table.Add(addr, times)
	}
	o.mu.Unlock()

	if !full {
		return false
	}
	return o.block(addr, now.Add(r.blockFor)) == nil
}

func (r offenceRules) exempt(addr netip.Addr) bool {
	for _, p := range r.neverBlock {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Len returns the number of sources with offences on record.
func (o *Offenders) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.table.Len()
}
