package bench

import (
	"context"
	"errors"
	"net"
	"time"
)

// floodRequest is what a scanner sends to port 443: plain HTTP.
var floodRequest = []byte("GET / HTTP/1.1\r\nHost: flood.bench.test\r\n\r\n")

var errFloodAnswered = errors.New("a plain-text client got a response")

// floodOp connects, sends plain HTTP and succeeds when the system closes the
// connection without a byte of response.
func floodOp(r *running) func(i int) op {
	return func(int) op {
		buf := make([]byte, 512)
		return func(ctx context.Context) error {
			c, err := dialer.DialContext(ctx, "tcp", r.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(opTimeout))
			if _, err := c.Write(floodRequest); err != nil {
				return nil
			}
			n, err := readAll(c, buf)
			if n > 0 {
				return errFloodAnswered
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errors.New("plain-text connection not closed within the operation timeout")
			}
			return nil
		}
	}
}

var floodSystems = []string{sysEdgegate, sysNginx, sysHAProxy}

// runNotTLSFlood measures the cost of turning away plain-text connections in
// user space. The same flood against edgegate with the eBPF guard attached
// (in a network namespace pair) is a further row, reported as missing until
// the harness drives the guard.
func runNotTLSFlood(ctx context.Context, h *harness, sc *scenario) []Row {
	legitHello := h.hellos[0].Bytes
	rows := h.eachSystem(ctx, sc, "user-space", floodSystems, flavorPassthrough, func(r *running, row *Row) {
		h.measure(ctx, r, row, measureCfg{
			label:     r.system,
			conc:      h.opts.Concurrency,
			ops:       floodOp(r),
			legit:     passConnectOp(r, legitHello),
			legitConc: max(1, h.opts.Concurrency/8),
		})
	})
	if h.selected(sysEdgegate) {
		rows = append(rows, Row{
			Scenario: sc.name, Variant: "ebpf-guard", System: sysEdgegate, Status: statusMissing,
			Note: "edgegate with the eBPF guard in a network namespace pair is not driven by the harness yet (needs bpf.Open)",
		})
	}
	return rows
}
