package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

var (
	idlePassSystems = []string{sysEdgegate, sysNginx, sysHAProxy}
	idleMTLSSystems = []string{sysEdgegate, sysNginx, sysHAProxy, sysGoTLS}
)

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

// runIdleConnections opens IdleConns connections through each system, each
// proven to reach the upstream, holds them idle, and divides the growth of
// the system's memory (Pss) and descriptors by their number.
func runIdleConnections(ctx context.Context, h *harness, sc *scenario) []Row {
	idleHello, err := goClientHello(idleName, nil)
	if err != nil {
		return []Row{{Scenario: sc.name, System: sysEdgegate, Status: statusFailed, Note: err.Error()}}
	}
	var rows []Row
	for _, v := range []struct {
		f       flavor
		systems []string
	}{{flavorPassthrough, idlePassSystems}, {flavorMTLS, idleMTLSSystems}} {
		h.progress("- %s, %d connections", v.f, h.opts.IdleConns)
		for _, s := range AllSystems {
			if !slices.Contains(v.systems, s) || !h.selected(s) || ctx.Err() != nil {
				continue
			}
			row := Row{Scenario: sc.name, Variant: v.f.String(), System: s}
			if why, ok := h.missing[s]; ok {
				row.Status, row.Note = statusMissing, why
				rows = append(rows, row)
				continue
			}
			var kib, fds, conns []float64
			for rep := 1; rep <= h.idleReps() && ctx.Err() == nil; rep++ {
				r, err := h.start(ctx, s, v.f, sc.name+"-"+v.f.String())
				if err != nil {
					row.Status, row.Note = statusFailed, err.Error()
					break
				}
				k, f, n, err := h.idleOnce(ctx, r, idleHello)
				r.stop()
				if err != nil {
					row.Status, row.Note = statusFailed, err.Error()
					h.progress("  %s: %v", s, err)
					break
				}
				kib, fds, conns = append(kib, k), append(fds, f), append(conns, float64(n))
				h.progress("  %s rep %d/%d: %d connections, %.1f KiB and %.2f fds each", s, rep, h.idleReps(), n, k, f)
			}
			if row.Status == "" {
				row.Status = statusOK
				row.Metrics = map[string]Stat{mKiBPerConn: statOf(kib), mFDPerConn: statOf(fds), mConns: statOf(conns)}
				if n := statOf(conns).Min; int(n) < h.opts.IdleConns {
					row.Note = fmt.Sprintf("held %.0f, not %d: at %.2f descriptors per connection more would pass the 20,000-descriptor limit",
						n, h.opts.IdleConns, statOf(fds).Median)
				}
			}
			rows = append(rows, row)
		}
	}
	return rows
}

func (h *harness) idleOnce(ctx context.Context, r *running, idleHello []byte) (kibPerConn, fdsPerConn float64, n int, err error) {
	// One connection first, so lazily made state (pools, TLS caches) is
	// in the baseline and not charged to the idle connections.
	c, err := h.openIdle(ctx, r, idleHello)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("first idle connection: %w", err)
	}
	c.Close()
	time.Sleep(300 * time.Millisecond)
	pss0, _ := memoryKiB(r.pid)
	fd0 := openFDs(r.pid)

	n = h.opts.IdleConns
	// Probe with a few connections how many descriptors the system spends
	// on each, and hold no more than fit under its descriptor limit, so
	// the run measures every system instead of exhausting one of them.
	var probe []net.Conn
	for range idleProbe {
		c, err := h.openIdle(ctx, r, idleHello)
		if err != nil {
			for _, c := range probe {
				c.Close()
			}
			return 0, 0, 0, fmt.Errorf("probe connection: %w", err)
		}
		probe = append(probe, c)
	}
	if per := float64(openFDs(r.pid)-fd0) / idleProbe; per > 0 {
		n = min(n, int(float64(fdLimit-fdReserve-fd0)/per))
	}
	for _, c := range probe {
		c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	pss0, _ = memoryKiB(r.pid)
	fd0 = openFDs(r.pid)
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
				c, err := h.openIdle(ctx, r, idleHello)
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
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if firstErr != nil {
		return 0, 0, 0, fmt.Errorf("open idle connections: %w", firstErr)
	}
	// Let the system settle (deferred frees, buffers shrinking) before
	// reading its memory.
	time.Sleep(time.Second)
	pss1, _ := memoryKiB(r.pid)
	fd1 := openFDs(r.pid)
	return float64(int64(pss1)-int64(pss0)) / float64(n), float64(fd1-fd0) / float64(n), n, nil
}

// openIdle opens one connection through r that has reached the upstream
// (proven by the upstream's answer) and is left open.
func (h *harness) openIdle(ctx context.Context, r *running, idleHello []byte) (net.Conn, error) {
	c, err := dialer.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var conn net.Conn = c
	var want []byte
	if r.flavor == flavorPassthrough {
		if _, err := c.Write(idleHello); err != nil {
			c.Close()
			return nil, err
		}
		want = passthroughReply
	} else {
		tc := tls.Client(c, h.mtlsClientConfig(true, curvesX25519))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		if _, err := tc.Write(keepAliveRequest); err != nil {
			c.Close()
			return nil, err
		}
		conn, want = tc, httpResponse
	}
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(conn, buf); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read answer: %w", err)
	}
	c.SetDeadline(time.Time{})
	return conn, nil
}
