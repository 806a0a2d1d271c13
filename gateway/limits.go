package gateway

import (
	"net/netip"
	"sync"

	"github.com/edgegate/edgegate/gateway/config"
)

// admission enforces limits.max_connections and limits.per_source at
// accept time: a connection beyond them is closed at once, before a byte is
// read, and established connections are never touched. Its table holds only
// addresses with connections open, so it is bounded by the connections
// themselves.
type admission struct {
	mu       sync.Mutex
	total    int
	bySource map[netip.Addr]int
}

// admit reserves a place for a connection from addr under lim, or says
// which limit refused it.
func (a *admission) admit(addr netip.Addr, lim *config.Limits) (Outcome, bool) {
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
