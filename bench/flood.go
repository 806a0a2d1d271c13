package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
)

// floodRequest is what a scanner sends to port 443: plain HTTP.
var floodRequest = []byte("GET / HTTP/1.1\r\nHost: flood.bench.test\r\n\r\n")

var errFloodAnswered = errors.New("a plain-text client got a response")

// Sizing of the flood: every system gets floodRate plain-text connections
// per second, whatever it does with them. A flood client waits at most
// floodWait for the system to close; one whose bytes were dropped in the
// kernel (the guard) is then aborted with RST, as a scanner moves on.
const (
	floodRate    = 3000
	floodWait    = time.Second
	floodWorkers = floodRate * 2 // enough for every arrival to wait floodWait
)

// floodOp connects, sends plain HTTP and succeeds unless the system
// answers. silent counts connections the system neither answered nor
// closed within floodWait.
func floodOp(addr string, total, silent *atomic.Int64) func(i int) op {
	return func(int) op {
		buf := make([]byte, 512)
		return func(ctx context.Context) error {
			d := net.Dialer{Timeout: floodWait}
			total.Add(1)
			c, err := d.DialContext(ctx, "tcp", addr)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// A blocklisted source: its SYN was dropped.
				silent.Add(1)
				return nil
			}
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(floodWait))
			if _, err := c.Write(floodRequest); err != nil {
				return nil
			}
			n, err := readAll(c, buf)
			if n > 0 {
				return errFloodAnswered
			}
			if errors.As(err, &ne) && ne.Timeout() {
				silent.Add(1)
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
			}
			return nil
		}
	}
}

// mSilent is the share of flood connections that got neither an answer nor
// a close within floodWait: dropped in the kernel.
const mSilent = "silent"

var floodSystems = []string{sysEdgegate, sysNginx, sysHAProxy}

// runNotTLSFlood offers the same plain-text flood to every system, beside a
// few legitimate passthrough clients, and charges each system's CPU time to
// the connections it turned away. edgegate also runs in a network namespace
// behind a veth pair, without and with the eBPF guard on the inner end.
func runNotTLSFlood(ctx context.Context, h *harness, sc *scenario) []Row {
	legitHello := h.hellos[0].Bytes
	// ballast, when not empty, is where the no-flood baseline sends the
	// same flood instead (see floodInNetns).
	measureFlood := func(r *running, row *Row, ballast string) {
		var total, silent, ballastTotal, ballastSilent atomic.Int64
		var ballastOps func(int) op
		if ballast != "" {
			ballastOps = floodOp(ballast, &ballastTotal, &ballastSilent)
		}
		h.measure(ctx, r, row, measureCfg{
			label:     r.system + " " + row.Variant,
			conc:      floodWorkers,
			floodRate: floodRate,
			ops:       floodOp(r.addr, &total, &silent),
			legit:     passConnectOp(r, legitHello),
			legitConc: max(1, h.opts.Concurrency/8),
			// The same legitimate clients without the flood, in each
			// repetition, against the same process behind the same
			// setup: the baseline of their rate during the flood.
			legitAlone: true,
			ballast:    ballastOps,
			// The flood runs in child processes (see floodInChild).
			flood: func(ctx context.Context, toBallast bool, dur time.Duration, window func(bool)) loopResult {
				if toBallast {
					return floodInChild(ctx, ballast, dur, &ballastTotal, &ballastSilent, window)
				}
				return floodInChild(ctx, r.addr, dur, &total, &silent, window)
			},
			// Only the repetitions' connections count.
			beforeReps: func() { total.Store(0); silent.Store(0) },
		})
		if n := total.Load(); row.Metrics != nil && n > 0 {
			f := float64(silent.Load()) / float64(n) * 100
			row.Metrics[mSilent] = Stat{Median: f, Min: f, Max: f, N: 1}
		}
	}
	rows := h.eachSystem(ctx, sc, "loopback", floodSystems, flavorPassthrough, func(r *running, row *Row) { measureFlood(r, row, "") })
	if h.selected(sysEdgegate) {
		rows = append(rows, h.floodInNetns(ctx, sc, measureFlood)...)
	}
	return rows
}

// floodInNetns runs edgegate in a fresh network namespace, first without
// and then with the guard, and tears everything down after.
//
// Behind the harness's guard, the no-flood baseline is fair to the load
// generator, which shares one core among the flood, the legitimate clients
// and the kernel's receive path of the veth (run on the sending CPU): the
// same flood still runs, at the same rate, but to a neighbour port the
// guard also guards, where a bare listener opened the way edgegate opens
// its own waits. The guard refuses it the same way, so the flood costs the
// load generator and the kernel what it costs during the flood; only
// edgegate's port is spared. Without the guard there is no such ballast
// (the flood's cost there is edgegate closing connections), and the
// baseline is the legitimate clients alone.
func (h *harness) floodInNetns(ctx context.Context, sc *scenario, measureFlood func(*running, *Row, string)) []Row {
	rowNoGuard := Row{Scenario: sc.name, Variant: "netns, no guard", System: sysEdgegate}
	rowGuard := Row{Scenario: sc.name, Variant: "netns, eBPF guard", System: sysEdgegate}
	rowOwn := Row{Scenario: sc.name, Variant: "netns, edgegate ebpf config", System: sysEdgegate}
	fail := func(note string) []Row {
		h.progress("  edgegate in a network namespace: %s", note)
		for _, r := range []*Row{&rowNoGuard, &rowGuard, &rowOwn} {
			r.Status, r.Note = statusFailed, note
		}
		return []Row{rowNoGuard, rowGuard, rowOwn}
	}
	if why, ok := h.missing[sysEdgegate]; ok {
		for _, r := range []*Row{&rowNoGuard, &rowGuard, &rowOwn} {
			r.Status, r.Note = statusMissing, why
		}
		return []Row{rowNoGuard, rowGuard, rowOwn}
	}
	ns, err := newNetnsPair(h.opts.NetnsPrefix)
	if err != nil {
		return fail(err.Error())
	}
	defer ns.close()
	up, err := startUpstreamOn(upConnect, ns.outerIP)
	if err != nil {
		return fail(err.Error())
	}
	defer up.close()
	ports, err := freePorts(2)
	if err != nil {
		return fail(err.Error())
	}
	_, portStr, _ := net.SplitHostPort(ports[0])
	port, _ := strconv.Atoi(portStr)
	_, ballastStr, _ := net.SplitHostPort(ports[1])
	ballastPort, _ := strconv.Atoi(ballastStr)
	p := h.params(flavorPassthrough, net.JoinHostPort(ns.innerIP, portStr))
	p.Connect, p.Bulk, p.Idle = up.addr(), up.addr(), up.addr()
	cfg := h.configFile(sysEdgegate, flavorPassthrough)
	cfg = cfg[:len(cfg)-len(".yaml")] + "-netns.yaml"
	if err := writeFile(cfg, edgegateConfig(p)); err != nil {
		return fail(err.Error())
	}
	run := func(row *Row, guard, own bool) {
		tag := sc.name + "-netns"
		config := cfg
		if own {
			// edgegate attaches its own guard and feeds its
			// blocklist from what userspace refuses.
			tag += "-ebpf-config"
			q := p
			q.EBPF = &ebpfParams{Interface: ns.inner, PinPath: "/sys/fs/bpf/edgegate-bench-own-" + ns.name, NeverBlock: ns.legitIP + "/32"}
			config = cfg[:len(cfg)-len(".yaml")] + "-ebpf.yaml"
			if err := writeFile(config, edgegateConfig(q)); err != nil {
				row.Status, row.Note = statusFailed, err.Error()
				return
			}
			defer os.RemoveAll(q.EBPF.PinPath)
		}
		ballast := ""
		if guard {
			tag += "-guard"
			stop, err := ns.ballastListener(net.JoinHostPort(ns.innerIP, ballastStr))
			if err != nil {
				row.Status, row.Note = statusFailed, "ballast listener: "+err.Error()
				return
			}
			defer stop()
			ballast = net.JoinHostPort(ns.innerIP, ballastStr)
			g, closeGuard, err := ns.openGuard(uint16(port), uint16(ballastPort))
			if err != nil {
				row.Status, row.Note = statusFailed, "attach the eBPF guard: "+err.Error()
				h.progress("  %s", row.Note)
				return
			}
			defer closeGuard()
			row.Note = fmt.Sprintf("guard attached as %v", g.Modes()[ns.inner])
		}
		logPath := h.out + "/logs/edgegate-" + tag + ".log"
		r, err := startProcess(ctx, sysEdgegate, flavorPassthrough, p.Listen, logPath, !h.opts.NoPin,
			[]string{"GOMAXPROCS=1"}, "ip", "netns", "exec", ns.name, h.bin[sysEdgegate], "run", "--config", config)
		if err != nil {
			row.Status, row.Note = statusFailed, err.Error()
			return
		}
		defer r.stop()
		r.legitFrom = ns.legitIP
		note := row.Note
		measureFlood(r, row, ballast)
		if note != "" {
			row.Note = strings.TrimSpace(note + ". " + row.Note)
		}
	}
	run(&rowNoGuard, false, false)
	run(&rowGuard, true, false)
	run(&rowOwn, false, true)
	return []Row{rowNoGuard, rowGuard, rowOwn}
}

// ballastListener listens on addr inside the namespace as edgegate listens
// (gateway.Listen: TCP_DEFER_ACCEPT), and closes whatever it accepts, until
// stop.
func (n *netnsPair) ballastListener(addr string) (stop func(), err error) {
	var ln net.Listener
	if err := n.inside(func() error {
		var err error
		ln, err = gateway.Listen(config.Listener{Address: addr})
		return err
	}); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { ln.Close(); <-done }, nil
}
