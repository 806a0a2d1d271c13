package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// opTimeout bounds every single operation of the load generator.
const opTimeout = 10 * time.Second

// directHeader is the PROXY v2 header a direct client writes itself, so the
// upstream does exactly the work it does behind a gateway.
var directHeader = func() []byte {
	h := proxyproto.HeaderProxyFromAddrs(2,
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443})
	b, err := h.Format()
	if err != nil {
		panic(err)
	}
	return b
}()

var dialer = net.Dialer{Timeout: opTimeout}

// readAll reads from c until end of stream into buf and returns how many
// bytes arrived; more than len(buf) is an error.
func readAll(c net.Conn, buf []byte) (int, error) {
	n := 0
	for {
		if n == len(buf) {
			return n, errors.New("answer longer than expected")
		}
		m, err := c.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// passConnectOp opens a connection, sends hello, expects the upstream's
// fixed reply and end of stream, and closes.
func passConnectOp(r *running, hello []byte) func(i int) op {
	msg := hello
	if r.direct {
		msg = append(slices.Clone(directHeader), hello...)
	}
	d := dialer
	if r.legitFrom != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(r.legitFrom)}
	}
	return func(int) op {
		buf := make([]byte, 2*len(passthroughReply))
		return func(ctx context.Context) error {
			c, err := d.DialContext(ctx, "tcp", r.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(opTimeout))
			if _, err := c.Write(msg); err != nil {
				return fmt.Errorf("write hello: %w", err)
			}
			n, err := readAll(c, buf)
			if err != nil {
				return fmt.Errorf("read reply: %w", err)
			}
			if !bytes.Equal(buf[:n], passthroughReply) {
				return fmt.Errorf("got %d bytes instead of the upstream's reply", n)
			}
			return nil
		}
	}
}

var passthroughSystems = []string{sysEdgegate, sysNginx, sysHAProxy, sysDirect}

func runPassthroughConnect(ctx context.Context, h *harness, sc *scenario) []Row {
	var all []Row
	for _, hl := range h.hellos {
		h.progress("- hello %s (%d bytes)", hl.Name, len(hl.Bytes))
		rows := h.eachSystem(ctx, sc, hl.Name, passthroughSystems, flavorPassthrough, func(r *running, row *Row) {
			h.measure(ctx, r, row, measureCfg{
				label:       r.system,
				conc:        h.opts.Concurrency,
				ops:         passConnectOp(r, hl.Bytes),
				latencyRate: 1000,
			})
			if h.opts.Syscalls && !r.direct && row.Status != statusFailed {
				h.traceSyscalls(ctx, r, row, hl.Name, passConnectOp(r, hl.Bytes))
			}
		})
		addLatencyOverDirect(rows)
		all = append(all, rows...)
	}
	return all
}

// runPassthroughBulk pushes one stream each way through one connection for
// the whole run and samples the byte counters and the system's CPU time
// around each repetition.
func runPassthroughBulk(ctx context.Context, h *harness, sc *scenario) []Row {
	return h.eachSystem(ctx, sc, "", passthroughSystems, flavorPassthrough, func(r *running, row *Row) {
		addr := r.addr
		if r.direct {
			addr = h.ups.bulk.addr()
		}
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			row.Status, row.Note = statusFailed, err.Error()
			return
		}
		defer c.Close()
		first := h.goHello
		if r.direct {
			first = append(slices.Clone(directHeader), first...)
		}
		if _, err := c.Write(first); err != nil {
			row.Status, row.Note = statusFailed, "write hello: "+err.Error()
			return
		}
		h.measureStream(ctx, r, row, c)
	})
}

// measureStream pushes one stream each way through c (bulkChunk written
// over and over, everything read and counted) for the warm-up and the
// repetitions, and fills row with the throughput and the system's CPU time
// per GiB. It closes c.
func (h *harness) measureStream(ctx context.Context, r *running, row *Row, c net.Conn) {
	defer c.Close()
	var up, down atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			n, err := c.Write(bulkChunk)
			up.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			down.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		c.Close()
		wg.Wait()
	}()
	// Bytes must flow both ways before the warm-up counts: a busy
	// machine can take longer than a short warm-up to get them going.
	for start := time.Now(); down.Load() == 0 || up.Load() == 0; {
		if time.Since(start) > bulkStartLimit {
			row.Status, row.Note = statusFailed, fmt.Sprintf("no data flowing after %v (%d bytes up, %d down)", bulkStartLimit, up.Load(), down.Load())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(h.opts.Warmup)
	var mibs, cpuPerGiB, shares, othersSys, othersLoad, loadBusy []float64
	var totalTicks uint64
	for rep := 1; rep <= h.opts.Reps && ctx.Err() == nil; rep++ {
		noise := startInterference(r.pid, !h.opts.NoPin)
		u0, d0, w0 := up.Load(), down.Load(), time.Now()
		l0 := cpuAllBusy(loadCPU)
		var t0 uint64
		if r.pid != 0 {
			t0 = cpuTicks(r.pid)
		}
		select {
		case <-time.After(h.opts.Duration):
		case <-ctx.Done():
		}
		u1, d1, w1 := up.Load(), down.Load(), time.Now()
		oSys, oLoad := noise.others(r.pid)
		othersSys, othersLoad = append(othersSys, oSys), append(othersLoad, oLoad)
		bytesMoved := float64(u1 - u0 + d1 - d0)
		el := w1.Sub(w0).Seconds()
		mibs = append(mibs, bytesMoved/el/(1<<20))
		busy := float64(cpuAllBusy(loadCPU)-l0) / clockTicks / el
		loadBusy = append(loadBusy, busy)
		line := fmt.Sprintf("  %s rep %d/%d: %.0f MiB/s up, %.0f MiB/s down, load CPU %.0f%% busy", r.system, rep, h.opts.Reps,
			float64(u1-u0)/el/(1<<20), float64(d1-d0)/el/(1<<20), busy*100)
		if r.pid != 0 {
			ticks := max(cpuTicks(r.pid), t0) - t0
			totalTicks += ticks
			sec := float64(ticks) / clockTicks
			shares = append(shares, sec/el)
			if bytesMoved > 0 {
				cpuPerGiB = append(cpuPerGiB, sec/(bytesMoved/(1<<30)))
			}
			line += fmt.Sprintf(", system CPU %.0f%% of a core", sec/el*100)
		}
		h.progress("%s", line)
	}
	row.Metrics = map[string]Stat{mMiBs: statOf(mibs), mLoadBusy: statOf(loadBusy), mOthersSys: statOf(othersSys), mOthersLoad: statOf(othersLoad)}
	if len(shares) > 0 {
		row.Metrics[mCoreShare] = statOf(shares)
		row.Metrics[mCPUPerGiB] = statOf(cpuPerGiB)
	}
	row.Status = judge(r, row.Metrics, totalTicks)
	row.Note = busyNote(row.Metrics)
}

// bulkStartLimit bounds the wait for a bulk stream to flow both ways.
const bulkStartLimit = 10 * time.Second
