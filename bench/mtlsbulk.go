package bench

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"time"
)

// runMTLSBulk is passthrough-bulk for the mtls job: one TLS 1.3 connection
// with the Cloudflare-shaped client certificate asks the cleartext HTTP
// upstream for /bulk, after which a stream runs each way (client ↔ system
// ↔ upstream) for the whole run. The system decrypts one way and encrypts
// the other, so this measures its record path; direct is the same two
// streams without TLS, straight to the upstream.
func runMTLSBulk(ctx context.Context, h *harness, sc *scenario) []Row {
	return h.eachSystem(ctx, sc, chainCloudflare.name, mtlsSystems, flavorMTLS, func(r *running, row *Row) {
		c, err := dialer.DialContext(ctx, "tcp", r.addr)
		if err != nil {
			row.Status, row.Note = statusFailed, err.Error()
			return
		}
		conn := net.Conn(c)
		first := bulkRequest
		if r.direct {
			first = append(slices.Clone(directHeader), bulkRequest...)
		} else {
			tc := tls.Client(c, h.mtlsClientConfig(true, curvesX25519))
			hctx, cancel := context.WithTimeout(ctx, opTimeout)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				c.Close()
				row.Status, row.Note = statusFailed, "handshake: "+err.Error()
				return
			}
			conn = tc
		}
		conn.SetWriteDeadline(time.Now().Add(opTimeout))
		if _, err := conn.Write(first); err != nil {
			conn.Close()
			row.Status, row.Note = statusFailed, "write request: "+err.Error()
			return
		}
		conn.SetWriteDeadline(time.Time{})
		h.measureStream(ctx, r, row, conn)
	})
}
