package bench

import (
	"context"
	"crypto/tls"
	"sync/atomic"
)

// hostileJunk is how many distinct throwaway certificates the hostile
// client cycles through. It must exceed what edgegate's chain cache (1,024
// chains) can hold of chains seen once, so each chain is gone from the
// cache before it comes round again: every hostile handshake is a full
// verification.
const hostileJunk = 2048

// hostileConfig returns a client configuration that presents leaf followed
// by the next of junk on every handshake: a chain no cache has seen.
func (h *harness) hostileConfig(leaf tls.Certificate, junk [][]byte, next *atomic.Uint64) *tls.Config {
	cfg := h.mtlsClientConfigWith(nil, curvesX25519)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		j := junk[next.Add(1)%uint64(len(junk))]
		return &tls.Certificate{Certificate: [][]byte{leaf.Certificate[0], j}, PrivateKey: leaf.PrivateKey}, nil
	}
	return cfg
}

// runMTLSHostile floods each system with a client whose chain is new on
// every handshake, with a legitimate client (the Cloudflare-shaped chain,
// the same on every handshake) beside it. Accepted: the leaf is valid, so
// each handshake is a full verification that succeeds and is cached once.
// Refused: the leaf is signed by a forged CA carrying the real CA's name
// and key identifier, so each handshake costs an RSA-4096 signature check
// that fails. The CPU figures are the flood's alone; the legitimate
// client's rate and, for edgegate, its chain cache hit rate are measured
// in a second run of the flood with it beside.
func runMTLSHostile(ctx context.Context, h *harness, sc *scenario) []Row {
	junk, err := junkCerts(hostileJunk)
	if err != nil {
		return []Row{{Scenario: sc.name, System: sysEdgegate, Status: statusFailed, Note: err.Error()}}
	}
	var all []Row
	for _, v := range []struct {
		name   string
		leaf   tls.Certificate
		accept bool
	}{
		{"fresh chain, accepted", h.pki.hostile, true},
		{"fresh chain, refused", h.pki.rogue, false},
	} {
		h.progress("- %s", v.name)
		rows := h.eachSystem(ctx, sc, v.name, rejectSystems, flavorMTLS, func(r *running, row *Row) {
			var next atomic.Uint64
			newConfig := func() *tls.Config { return h.hostileConfig(v.leaf, junk, &next) }
			hostile := h.rejectOpWith(r, newConfig)
			if v.accept {
				hostile = h.mtlsOpWith(r, newConfig, false, nil, nil)
			}
			var legitHandshakes atomic.Int64
			cache := h.chainCacheWatch(r)
			var hits, handshakes float64
			var h0 int64
			var watchErr error
			h.measure(ctx, r, row, measureCfg{
				label:     r.system,
				conc:      h.opts.Concurrency,
				ops:       hostile,
				legit:     h.mtlsOp(r, h.pki.client, curvesX25519, false, nil, &legitHandshakes),
				legitConc: max(1, h.opts.Concurrency/8),
				legitWindow: func(open bool) {
					if cache == nil {
						return
					}
					if open {
						cache.reset()
						h0 = legitHandshakes.Load()
						return
					}
					d, err := cache.since()
					if err != nil {
						watchErr = err
						return
					}
					hits += d.hits
					handshakes += float64(legitHandshakes.Load() - h0)
				},
			})
			cache.report(row)
			if watchErr != nil {
				row.Note += " chain cache counters unreadable: " + watchErr.Error()
			}
			if handshakes > 0 && row.Metrics != nil {
				// The flood's chains never hit (refused ones are not
				// cached, accepted ones are gone before they come
				// round), so the hits are the legitimate client's.
				f := min(hits/handshakes, 1) * 100
				row.Metrics[mLegitCacheHit] = Stat{Median: f, Min: f, Max: f, N: 1}
			}
		})
		all = append(all, rows...)
	}
	return all
}
