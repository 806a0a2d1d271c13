package upstream

import (
	"math"
	"net/netip"
)

// pick chooses the next server for a connection from client among those up
// and not in tried, by the pool's balancing method, and counts the
// connection on it as active (Report or Release gives it back). It returns
// nil when there is no such server.
func (p *Pool) pick(client netip.Addr, tried uint64) *Server {
	eligible := func(s *Server) bool { return tried&(1<<s.index) == 0 && s.up.Load() }
	var s *Server
	switch {
	case len(p.servers) == 1:
		// The single-address upstream: nothing to balance.
		if eligible(p.servers[0]) {
			s = p.servers[0]
		}
	case p.balance == "source_hash":
		s = p.rendezvous(client, eligible)
	case p.balance == "least_conn":
		p.mu.Lock()
		s = p.leastConn(eligible)
		p.mu.Unlock()
	default:
		p.mu.Lock()
		s = p.roundRobin(eligible)
		p.mu.Unlock()
	}
	if s != nil {
		s.active.Add(1)
	}
	return s
}

// roundRobin is nginx's smooth weighted round robin among the servers ok
// accepts: each adds its weight to its current score, the highest score is
// chosen and loses the total. Over a cycle each server is chosen weight
// times, spread out rather than in runs. p.mu must be held.
func (p *Pool) roundRobin(ok func(*Server) bool) *Server {
	var best *Server
	total := 0
	for _, s := range p.servers {
		if !ok(s) {
			continue
		}
		s.current += s.weight
		total += s.weight
		if best == nil || s.current > best.current {
			best = s
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// leastConn chooses among the servers ok accepts those with the fewest
// active connections for their weight, and among those by round robin, so
// that idle servers share new connections by weight too. p.mu must be
// held, which also makes the active counts it reads and the one pick
// raises consistent between concurrent picks.
func (p *Pool) leastConn(ok func(*Server) bool) *Server {
	var best *Server
	for _, s := range p.servers {
		if !ok(s) {
			continue
		}
		// s.active/s.weight < best.active/best.weight, without division.
		if best == nil || s.active.Load()*int64(best.weight) < best.active.Load()*int64(s.weight) {
			best = s
		}
	}
	if best == nil {
		return nil
	}
	return p.roundRobin(func(s *Server) bool {
		return ok(s) && s.active.Load()*int64(best.weight) == best.active.Load()*int64(s.weight)
	})
}

// rendezvous is weighted rendezvous (highest random weight) hashing of the
// client's address: each server scores -weight/ln(u), u uniform in (0,1)
// from a hash of the client and the server, and the highest score wins.
// A client keeps its server while that server is up, whatever happens to
// the others; when it is down the client goes to its second-best server,
// and only the clients of the server that went away move.
func (p *Pool) rendezvous(client netip.Addr, ok func(*Server) bool) *Server {
	h := hashAddr(client)
	var best *Server
	bestScore := 0.0
	for _, s := range p.servers {
		if !ok(s) {
			continue
		}
		// 53 random bits, never 0 or 1.
		u := (float64(mix(h^s.hash)>>11) + 0.5) / (1 << 53)
		score := -float64(s.weight) / math.Log(u)
		if best == nil || score > bestScore {
			best, bestScore = s, score
		}
	}
	return best
}

// hashAddr hashes a client address (its IPv4 form when it is v4-mapped, so
// a client has one server whatever socket family it arrived on).
func hashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	h := uint64(14695981039346656037)
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return mix(h)
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return mix(h)
}

// mix is splitmix64's finaliser: every input bit moves every output bit.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
