// Package upstream holds a vhost's upstream servers: which one a connection
// goes to (balancing), which are fit to take it (health), and TLS to them.
//
// A Pool is built per vhost from its configuration and shared by the
// configuration generations that keep the same servers, so a reload does
// not forget which servers are down. The dial itself is the caller's, so
// that any dialer (net.Dialer, raw sockets) can use it:
//
//	w := pool.Walk(client)
//	for s := w.Next(); s != nil; s = w.Next() {
//		c, err := dial(s.Address())
//		s.Report(err)
//		if err == nil {
//			// ... relay; when the connection ends:
//			s.Release()
//			break
//		}
//	}
//
// Pool.Dial is that loop around a DialFunc. A Set holds the pools of one
// generation and starts and stops their health checkers.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
)

// MaxTries is how many servers one connection tries at most: a server that
// refuses or times out is followed by the next eligible one, up to this
// many dials in all (each bounded by the caller's timeout).
const MaxTries = 3

// ErrNoServer is returned by Dial when every server is down.
var ErrNoServer = errors.New("no upstream server is up")

// Pool is one vhost's upstream servers and what edgegate knows of them. Its
// methods are safe for concurrent use.
type Pool struct {
	vhost   string
	balance string
	key     poolKey
	servers []*Server
	check   *config.HealthCheck // nil: no active checks, servers never marked down
	proxy   string              // proxy_protocol, for checks with send_proxy

	mu sync.Mutex // round_robin and least_conn state (Server.current)

	life    sync.Mutex // start and close
	started bool
	closed  bool
	ctx     context.Context // ends when the pool is closed
	cancel  context.CancelFunc
	wg      sync.WaitGroup // health checkers
	log     *slog.Logger
}

// poolKey is what a pool is built from: a reload whose vhost has the same
// key keeps the pool (and the health of its servers).
type poolKey struct {
	servers string // address*weight, ...
	balance string
	check   config.HealthCheck
	proxy   string
}

func keyOf(u config.Upstream) poolKey {
	var b strings.Builder
	for _, s := range u.List() {
		fmt.Fprintf(&b, "%s*%d,", s.Address, s.Weight)
	}
	k := poolKey{servers: b.String(), balance: u.Balance, proxy: u.ProxyProtocol}
	if u.HealthCheck != nil {
		k.check = *u.HealthCheck
	}
	return k
}

// New builds vhost's pool from its validated upstream configuration. Every
// server starts up; no health check runs until Start.
func New(vhost string, u config.Upstream) *Pool {
	p := &Pool{
		vhost:   vhost,
		balance: u.Balance,
		key:     keyOf(u),
		check:   u.HealthCheck,
		proxy:   u.ProxyProtocol,
		log:     slog.New(slog.DiscardHandler),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.balance == "" {
		p.balance = "round_robin"
	}
	for i, sc := range u.List() {
		s := &Server{address: sc.Address, weight: max(sc.Weight, 1), index: i, pool: p, hash: hashString(sc.Address)}
		s.up.Store(true)
		s.m = discardMetrics()
		p.servers = append(p.servers, s)
	}
	return p
}

// Servers returns the pool's servers, in configuration order.
func (p *Pool) Servers() []*Server { return p.servers }

// Server is one upstream server of a pool.
type Server struct {
	address string
	weight  int
	index   int // in the pool, for Walk's tried set
	pool    *Pool
	hash    uint64 // of the address, for source_hash

	up     atomic.Bool
	active atomic.Int64 // connections dialling or open, for least_conn

	current int // smooth weighted round robin; under pool.mu

	health sync.Mutex // fails and succs
	fails  int        // consecutive failures
	succs  int        // consecutive successful checks
	m      serverMetrics
}

// Address returns the server's address (host:port or unix:/path).
func (s *Server) Address() string { return s.address }

// Up reports whether the server takes new connections.
func (s *Server) Up() bool { return s.up.Load() }

// Active returns the connections to the server being dialled or open.
func (s *Server) Active() int64 { return s.active.Load() }

// Report records the outcome of dialling a server Walk.Next returned: nil
// for a connection made, which must be given back with Release when it
// ends; an error for a dial that failed, which counts toward marking the
// server down when the pool has health checks.
func (s *Server) Report(err error) {
	if err != nil {
		s.active.Add(-1)
		s.m.dialFailures.Inc()
		s.pool.observe(s, err, "dial failed")
		return
	}
	s.m.connections.Inc()
	s.m.active.Inc()
	if s.pool.check != nil {
		s.pool.observe(s, nil, "")
	}
}

// Release gives back a connection Report counted as made. It does nothing
// on a nil Server, so a connection's end can call it whether or not it got
// as far as an upstream.
func (s *Server) Release() {
	if s == nil {
		return
	}
	s.active.Add(-1)
	s.m.active.Dec()
}

// observe moves a server's health by one result (err nil: success) of a
// check or a dial. Successes of dials only clear the run of failures: a
// down server is brought back by checks alone.
func (p *Pool) observe(s *Server, err error, what string) {
	if p.check == nil {
		return
	}
	s.health.Lock()
	defer s.health.Unlock()
	if err != nil {
		s.succs = 0
		s.fails++
		if s.up.Load() && s.fails >= p.check.Fall {
			s.up.Store(false)
			s.m.up.Set(0)
			p.log.Warn("upstream server down", "vhost", p.vhost, "server", s.address, "after", fmt.Sprintf("%d failures", s.fails), "last", what, "err", err.Error())
		}
		return
	}
	s.fails = 0
	if what == "" || s.up.Load() {
		return
	}
	s.succs++
	if s.succs >= p.check.Rise {
		s.up.Store(true)
		s.m.up.Set(1)
		p.log.Info("upstream server up", "vhost", p.vhost, "server", s.address, "after", fmt.Sprintf("%d checks", s.succs))
	}
}

// Walk is one connection's way through a pool: the servers to try, best
// first, each at most once and at most MaxTries in all.
type Walk struct {
	p      *Pool
	client netip.Addr
	tried  uint64 // by Server.index
	n      int
}

// Walk starts the choice of a server for a connection from client (the
// address source_hash hashes).
func (p *Pool) Walk(client netip.Addr) Walk { return Walk{p: p, client: client} }

// Next returns the next server to dial, or nil when none is left: every
// eligible server tried, MaxTries reached, or none up. The caller must
// Report the dial's outcome.
func (w *Walk) Next() *Server {
	if w.n >= MaxTries {
		return nil
	}
	s := w.p.pick(w.client, w.tried)
	if s == nil {
		return nil
	}
	w.tried |= 1 << s.index
	w.n++
	return s
}

// DialFunc connects to one server's address within timeout.
type DialFunc func(address string, timeout time.Duration) (net.Conn, error)

// Dial walks the pool for a connection from client: it dials each server
// Next gives with dial, each within timeout, until one answers. It returns
// the connection and its server (to Release when the connection ends), or
// the last dial's error, or ErrNoServer when no server is up. In all it
// takes at most MaxTries × timeout.
func (p *Pool) Dial(client netip.Addr, timeout time.Duration, dial DialFunc) (net.Conn, *Server, error) {
	w := p.Walk(client)
	var last error
	for s := w.Next(); s != nil; s = w.Next() {
		c, err := dial(s.address, timeout)
		s.Report(err)
		if err == nil {
			return c, s, nil
		}
		last = err
	}
	if last == nil {
		return nil, nil, fmt.Errorf("vhost %s: %w", p.vhost, ErrNoServer)
	}
	if w.n > 1 {
		return nil, nil, fmt.Errorf("%d servers tried, the last: %w", w.n, last)
	}
	return nil, nil, last
}
