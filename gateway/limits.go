package gateway

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/edgegate/edgegate/gateway/config"
)

// admission enforces limits.rate, limits.max_connections and
// limits.per_source at accept time: a connection beyond them is closed at
// once, before a byte is read, and established connections are never
// touched. Its table of open connections holds only addresses with
// connections open, so it is bounded by the connections themselves; the
// rate table has a fixed size (sourceRate).
type admission struct {
	rate     sourceRate
	mu       sync.Mutex
	total    int
	bySource map[netip.Addr]int
}

// admit reserves a place for a connection from addr under lim, or says
// which limit refused it. The rate is checked first: a connection over it
// is not counted against the other limits.
func (a *admission) admit(addr netip.Addr, lim *config.Limits) (Outcome, bool) {
	if !a.rate.allow(addr, &lim.Rate) {
		return OutcomeSourceRate, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if lim.MaxConnections > 0 && a.total >= lim.MaxConnections {
		return OutcomeLimit, false
	}
	if lim.PerSource > 0 && !containsAddr(lim.NeverLimitPrefixes, addr) && a.bySource[addr] >= lim.PerSource {
		return OutcomeSourceLimit, false
	}
	a.total++
	if a.bySource == nil {
		a.bySource = map[netip.Addr]int{}
	}
	a.bySource[addr]++
	return "", true
}

// release gives back the place admit reserved.
func (a *admission) release(addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if n := a.bySource[addr] - 1; n > 0 {
		a.bySource[addr] = n
	} else {
		delete(a.bySource, addr)
	}
}

// sourceRateTableSize is how many sources the rate table remembers, as
// many as the kernel's (bpf.SourceRateTableSize).
const sourceRateTableSize = 65536

// sourceRate enforces limits.rate at accept: a source (an IPv4 address, or
// an IPv6 /64, see rateSource) may open connections at per_source a second
// after a burst of burst. Each source's bucket is one number, as in the
// kernel (guard.c, source_over_rate): the time at which its next connection
// would be on schedule (GCRA), advanced by 1/per_source for each connection
// let through; a connection that would put it more than burst intervals
// ahead of now is refused, and not charged.
//
// The table is an LRU of fixed size, so a flood from random sources costs
// a bounded amount of memory: the least recently seen source's bucket
// makes room, and that source starts afresh if it comes back. A new rate
// (a reload) starts every source afresh too.
type sourceRate struct {
	mu              sync.Mutex
	size            int // table size; 0 is sourceRateTableSize
	start           time.Time
	table           *simplelru.LRU[netip.Addr, int64] // source -> due time of its next connection, ns since start
	interval, burst int64                             // the rate the table's buckets are charged at, in ns
}

// allow charges a connection from addr to its source's bucket and reports
// whether the source is within the rate; it always is when the rate is
// off or the source is in never_limit.
func (r *sourceRate) allow(addr netip.Addr, lim *config.RateLimit) bool {
	per := lim.PerSource.PerSecond()
	if per <= 0 || containsAddr(lim.NeverLimitPrefixes, addr.Unmap()) {
		return true
	}
	interval := max(int64(math.Round(1e9/per)), 1)
	burst := interval * int64(max(lim.Burst, 1))
	src := rateSource(addr)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.table == nil || interval != r.interval || burst != r.burst {
		size := r.size
		if size <= 0 {
			size = sourceRateTableSize
		}
		r.table, _ = simplelru.NewLRU[netip.Addr, int64](size, nil) // size > 0: no error
		r.interval, r.burst = interval, burst
		if r.start.IsZero() {
			r.start = time.Now()
		}
	}
	now := int64(time.Since(r.start))
	due, _ := r.table.Peek(src)
	next := max(due, now) + interval
	if next-now > burst {
		return false
	}
	r.table.Add(src, next)
	return true
}

// sources returns how many sources the rate table holds.
func (r *sourceRate) sources() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.table == nil {
		return 0
	}
	return r.table.Len()
}

// rateSource is the source a connection from addr is charged to: the
// IPv4 address, or the IPv6 address's /64, the block a host or a site is
// usually given, so that a host cannot take a fresh address for every
// connection.
func rateSource(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() {
		return netip.PrefixFrom(addr, 64).Masked().Addr()
	}
	return addr
}
