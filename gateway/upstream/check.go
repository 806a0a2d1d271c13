package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// The PROXY headers a check sends with send_proxy: the connection is the
// checker's own, so it announces no client (v2 LOCAL, v1 UNKNOWN), as
// HAProxy's check-send-proxy does.
var (
	localHeaderV1 = []byte("PROXY UNKNOWN\r\n")
	localHeaderV2 = []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
)

// start resolves the pool's metrics and starts one health checker per
// server when the pool has health checks. Starting a started or closed
// pool does nothing.
func (p *Pool) start(m *Metrics, log *slog.Logger) {
	p.life.Lock()
	defer p.life.Unlock()
	if p.started || p.closed {
		return
	}
	p.started = true
	if log != nil {
		p.log = log
	}
	for _, s := range p.servers {
		if m != nil {
			s.m = m.server(p.vhost, s.address)
		}
		if s.up.Load() {
			s.m.up.Set(1)
		} else {
			s.m.up.Set(0)
		}
	}
	if p.check == nil {
		return
	}
	for _, s := range p.servers {
		p.wg.Add(1)
		go p.checkLoop(s)
	}
}

// Close stops the pool's health checkers and waits for them to return. The
// pool still serves Walk and Dial (connections of an older configuration
// may use it), with its servers' health frozen.
func (p *Pool) Close() {
	p.life.Lock()
	if !p.closed {
		p.closed = true
		p.cancel()
	}
	p.life.Unlock()
	p.wg.Wait()
}

// checkLoop checks server s now and then every interval until the pool is
// closed.
func (p *Pool) checkLoop(s *Server) {
	defer p.wg.Done()
	ctx := p.ctx
	t := time.NewTicker(p.check.Interval.D())
	defer t.Stop()
	for {
		err := p.checkOnce(ctx, s)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.m.checkFailures.Inc()
		}
		p.observe(s, err, "check")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOnce connects to s within the check's timeout and, with send_proxy,
// writes a PROXY header, then closes.
func (p *Pool) checkOnce(ctx context.Context, s *Server) error {
	ctx, cancel := context.WithTimeout(ctx, p.check.Timeout.D())
	defer cancel()
	network, addr := "tcp", s.address
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
	}
	d := net.Dialer{KeepAlive: -1}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	defer c.Close()
	if p.check.SendProxy {
		hdr := localHeaderV2
		if p.proxy == "v1" {
			hdr = localHeaderV1
		}
		deadline, _ := ctx.Deadline()
		c.SetWriteDeadline(deadline)
		if _, err := c.Write(hdr); err != nil {
			return fmt.Errorf("health check: send PROXY header: %w", err)
		}
	}
	return nil
}
