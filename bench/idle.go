package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	idlePassSystems = []string{sysEdgegate, sysNginx, sysHAProxy}
	idleMTLSSystems = []string{sysEdgegate, sysNginx, sysHAProxy, sysGoTLS}
)

// idleKind is one way a connection comes to be idle, a variant of the
// scenario.
type idleKind struct {
	name    string
	f       flavor
	systems []string
	// mtls only: resume makes every connection but a first one (which
	// fetches the ticket) resume a session; request makes each carry one
	// request and its response before it goes idle, as Cloudflare's
	// kept-alive connections do.
	resume, request bool
}

var idleKinds = []idleKind{
	{name: "passthrough", f: flavorPassthrough, systems: idlePassSystems},
	{name: "mtls fresh", f: flavorMTLS, systems: idleMTLSSystems},
	{name: "mtls resumed", f: flavorMTLS, systems: idleMTLSSystems, resume: true},
	{name: "mtls", f: flavorMTLS, systems: idleMTLSSystems, request: true},
}

// Descriptor budget of a system: the hard limit of a process here, less a
// reserve for listeners, logs and connections still closing.
const (
	fdLimit   = 20000
	fdReserve = 500
	idleProbe = 100
)

// idleReps is how many fresh starts each idle row measures: memory is not
// returned to the system after connections close (Go's heap, allocators),
// so every repetition needs a new process.
func (h *harness) idleReps() int { return min(h.opts.Reps, 3) }

// runIdleConnections holds idle connections through each system, each
// proven to reach the upstream, at every count of IdleConns in turn (the
// connections of one count stay open while the next are added), and
// records the system's memory (Pss) and descriptors at each. The table's
// per-connection figures are the growth from no connections to the largest
// count divided by it; the fit (see fitIdle) projects memory to many more.
func runIdleConnections(ctx context.Context, h *harness, sc *scenario) []Row {
	idleHello, err := goClientHello(idleName, nil)
	if err != nil {
		return []Row{{Scenario: sc.name, System: sysEdgegate, Status: statusFailed, Note: err.Error()}}
	}
	largest := h.opts.IdleConns[len(h.opts.IdleConns)-1]
	var rows []Row
	for _, v := range idleKinds {
		h.progress("- %s, %s connections", v.name, joinInts(h.opts.IdleConns))
		for _, s := range AllSystems {
			if !slices.Contains(v.systems, s) || !h.selected(s) || ctx.Err() != nil {
				continue
			}
			row := Row{Scenario: sc.name, Variant: v.name, System: s}
			if why, ok := h.missing[s]; ok {
				row.Status, row.Note = statusMissing, why
				rows = append(rows, row)
				continue
			}
			var kib, fds, conns []float64
			var points []IdlePoint
			for rep := 1; rep <= h.idleReps() && ctx.Err() == nil; rep++ {
				r, err := h.start(ctx, s, v.f, sc.name+"-"+v.f.String())
				if err != nil {
					row.Status, row.Note = statusFailed, err.Error()
					break
				}
				base, levels, err := h.idleLevels(ctx, r, h.idleOpener(v, r, idleHello))
				r.stop()
				if err != nil {
					row.Status, row.Note = statusFailed, err.Error()
					h.progress("  %s: %v", s, err)
					break
				}
				top := levels[len(levels)-1]
				k := float64(int64(top.PssKiB)-int64(base.PssKiB)) / float64(top.Conns)
				f := float64(top.FDs-base.FDs) / float64(top.Conns)
				kib, fds, conns = append(kib, k), append(fds, f), append(conns, float64(top.Conns))
				points = append(points, levels...)
				var mib []string
				for _, l := range levels {
					mib = append(mib, fmt.Sprintf("%d: %.1f MiB", l.Conns, float64(l.PssKiB)/1024))
				}
				h.progress("  %s rep %d/%d: %s; %.1f KiB and %.2f fds each at %d", s, rep, h.idleReps(), strings.Join(mib, ", "), k, f, top.Conns)
			}
			if row.Status == "" {
				row.Status = statusOK
				row.Metrics = map[string]Stat{mKiBPerConn: statOf(kib), mFDPerConn: statOf(fds), mConns: statOf(conns)}
				if n := statOf(conns).Min; int(n) < largest {
					row.Note = fmt.Sprintf("held %.0f, not %d: at %.2f descriptors per connection more would pass the 20,000-descriptor limit",
						n, largest, statOf(fds).Median)
				}
				if fit, err := fitIdle(points); err != nil {
					row.Note = strings.TrimSpace(row.Note + " no fit: " + err.Error())
				} else {
					row.Fit = fit
					h.progress("  %s fit: %.0f bytes per connection + %.1f MiB (R² %.4f); %.1f GiB at %s connections",
						s, fit.BytesPerConn, fit.FixedBytes/(1<<20), fit.R2, fit.BytesAtProjection/(1<<30), commas(projectedConns))
				}
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// IdlePoint is a system's memory and descriptors while it holds Conns idle
// connections.
type IdlePoint struct {
	Conns  int    `json:"conns"`
	PssKiB uint64 `json:"pss_kib"`
	FDs    int    `json:"fds"`
}

// idleLevels opens connections through r up to each count of IdleConns in
// turn, keeping them all open, and samples r's memory and descriptors with
// none (base) and at each count. Counts that would take the system past
// its descriptor limit are replaced by the most it can hold.
func (h *harness) idleLevels(ctx context.Context, r *running, o opener) (base IdlePoint, levels []IdlePoint, err error) {
	sample := func(n int) IdlePoint {
		pss, _ := memoryKiB(r.pid)
		return IdlePoint{Conns: n, PssKiB: pss, FDs: openFDs(r.pid)}
	}
	// One connection first, so lazily made state (pools, TLS caches) is
	// in the baseline and not charged to the idle connections.
	c, err := o.open(ctx)
	if err != nil {
		return base, nil, fmt.Errorf("first idle connection: %w", err)
	}
	c.Close()
	time.Sleep(300 * time.Millisecond)
	fd0 := openFDs(r.pid)

	// Probe with a few connections how many descriptors the system spends
	// on each, and hold no more than fit under its descriptor limit, so
	// the run measures every system instead of exhausting one of them.
	probe, err := h.openIdleMany(ctx, o, idleProbe)
	closeAll(probe)
	if err != nil {
		return base, nil, fmt.Errorf("probe connection: %w", err)
	}
	limit := maxConns
	if per := float64(openFDs(r.pid)-fd0) / idleProbe; per > 0 {
		limit = min(limit, int(float64(fdLimit-fdReserve-fd0)/per))
	}
	counts := countsUnder(h.opts.IdleConns, limit)
	if len(counts) == 0 {
		return base, nil, fmt.Errorf("no room under the %d-descriptor limit", fdLimit)
	}
	time.Sleep(300 * time.Millisecond)
	base = sample(0)

	var held []net.Conn
	defer func() { closeAll(held) }()
	for _, n := range counts {
		more, err := h.openIdleMany(ctx, o, n-len(held))
		held = append(held, more...)
		if err == nil && o.reached != nil {
			err = o.reached(ctx, n)
		}
		if err != nil {
			return base, nil, fmt.Errorf("open idle connections: %w", err)
		}
		// Let the system settle (deferred frees, buffers shrinking)
		// before reading its memory.
		time.Sleep(time.Second)
		levels = append(levels, sample(n))
	}
	return base, levels, nil
}

// countsUnder returns the counts (ascending) that are at most limit, and
// limit itself in place of those above it.
func countsUnder(counts []int, limit int) []int {
	var out []int
	for _, n := range counts {
		n = min(n, limit)
		if n > 0 && (len(out) == 0 || n > out[len(out)-1]) {
			out = append(out, n)
		}
	}
	return out
}

// openIdleMany opens n idle connections with o, 64 at a time, and
// returns those it opened; it stops at the first failure.
func (h *harness) openIdleMany(ctx context.Context, o opener, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := o.open(ctx)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	opened := slices.DeleteFunc(conns, func(c net.Conn) bool { return c == nil })
	return opened, firstErr
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, strconv.Itoa(x))
	}
	return strings.Join(s, ", ")
}

// opener opens one idle connection through the system under test.
type opener struct {
	open func(ctx context.Context) (net.Conn, error)
	// reached, when set, waits until the upstream holds at least n
	// connections: the proof that connections which sent nothing after
	// their handshake got through.
	reached func(ctx context.Context, n int) error
}

// idleOpener opens connections of kind k through r: a passthrough hello
// answered by the upstream, or an mtls handshake with the client
// certificate (resumed, or followed by one request and its response, as k
// says).
func (h *harness) idleOpener(k idleKind, r *running, idleHello []byte) opener {
	if r.flavor == flavorPassthrough {
		return opener{open: func(ctx context.Context) (net.Conn, error) {
			return h.openIdle(ctx, r, nil, idleHello, passthroughReply)
		}}
	}
	cfg := h.mtlsClientConfig(true, curvesX25519)
	o := opener{open: func(ctx context.Context) (net.Conn, error) {
		return h.openIdle(ctx, r, cfg, keepAliveRequest, httpResponse)
	}}
	if k.request {
		return o
	}
	o.reached = func(ctx context.Context, n int) error { return h.ups.http.awaitOpen(ctx, n) }
	var prime sync.Once
	var primeErr error
	if k.resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	o.open = func(ctx context.Context) (net.Conn, error) {
		if k.resume {
			// One connection that reads past its handshake, so that the
			// client holds a ticket for all the others.
			prime.Do(func() {
				var c net.Conn
				if c, primeErr = h.openIdle(ctx, r, cfg, keepAliveRequest, httpResponse); primeErr == nil {
					c.Close()
				}
			})
			if primeErr != nil {
				return nil, fmt.Errorf("fetch a session ticket: %w", primeErr)
			}
		}
		c, err := h.openIdle(ctx, r, cfg, nil, nil)
		if err == nil && k.resume && !c.(*tls.Conn).ConnectionState().DidResume {
			c.Close()
			return nil, errors.New("the connection did not resume its session")
		}
		return c, err
	}
	return o
}

// openIdle opens one connection through r and leaves it open: with cfg,
// a TLS connection through its handshake, else a plain one. It sends send
// (if any) and reads want, the upstream's answer, which proves the
// connection reached it.
func (h *harness) openIdle(ctx context.Context, r *running, cfg *tls.Config, send, want []byte) (net.Conn, error) {
	c, err := dialer.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var conn net.Conn = c
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		conn = tc
	}
	if len(send) > 0 {
		if _, err := conn.Write(send); err != nil {
			conn.Close()
			return nil, err
		}
	}
	if len(want) > 0 {
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(conn, buf); err != nil {
			conn.Close()
			return nil, fmt.Errorf("read answer: %w", err)
		}
	}
	c.SetDeadline(time.Time{})
	return conn, nil
}
