package upstream

import (
	"log/slog"

	"github.com/edgegate/edgegate/gateway/config"
)

// Set is the pools of one configuration generation, by vhost name. A
// generation is compiled with NewSet and Add, which have no side effects,
// and put in force with Start, which starts its new pools' health checkers
// and stops those of the generation it replaces.
type Set struct {
	prev  *Set
	pools map[string]*Pool
}

// NewSet returns an empty set for a generation that will replace prev (nil
// at start).
func NewSet(prev *Set) *Set {
	return &Set{prev: prev, pools: map[string]*Pool{}}
}

// Add returns vhost's pool: the pool of the generation being replaced when
// the vhost's servers, balancing, health check and PROXY version are the
// same there (so it keeps what it knows of their health), a new one
// otherwise.
func (s *Set) Add(vhost string, u config.Upstream) *Pool {
	p := New(vhost, u)
	if s.prev != nil {
		if old := s.prev.pools[vhost]; old != nil && old.key == p.key {
			p = old
		}
	}
	s.pools[vhost] = p
	return p
}

// Start puts the set in force, replacing prev (nil at start): pools of
// prev that s does not keep are closed and their checkers waited for,
// series of servers that left are removed from m, and s's pools are
// started (their series set, their checkers running). m and log may be
// nil (no metrics, no log).
func (s *Set) Start(prev *Set, m *Metrics, log *slog.Logger) {
	if prev != nil {
		type series struct{ vhost, server string }
		kept := map[series]bool{}
		for name, p := range s.pools {
			for _, srv := range p.servers {
				kept[series{name, srv.address}] = true
			}
		}
		for name, p := range prev.pools {
			if s.pools[name] == p {
				continue
			}
			p.Close()
			for _, srv := range p.servers {
				if m != nil && !kept[series{name, srv.address}] {
					m.forget(name, srv.address)
				}
			}
		}
	}
	s.prev = nil // let the replaced generation go
	for _, p := range s.pools {
		p.start(m, log)
	}
}

// Close stops every pool's health checkers (at shutdown).
func (s *Set) Close() {
	for _, p := range s.pools {
		p.Close()
	}
}
