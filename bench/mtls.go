package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// httpRequest is the one request each mtls connection sends. Connection:
// close makes the upstream close first, so TIME_WAIT stays on the server
// side and a flood of short connections never runs out of client ports.
var httpRequest = []byte("GET / HTTP/1.1\r\nHost: " + mtlsName + "\r\nUser-Agent: edgegate-bench\r\nConnection: close\r\n\r\n")

// keepAliveRequest is the request of idle mtls connections, which stay open.
var keepAliveRequest = []byte("GET / HTTP/1.1\r\nHost: " + mtlsName + "\r\nUser-Agent: edgegate-bench\r\n\r\n")

// Key-share offers of the client. Every system gets X25519 so OpenSSL 3.0
// (no ML-KEM) and Go do the same work; the post-quantum variant runs only
// against the Go systems.
var (
	curvesX25519 = []tls.CurveID{tls.X25519}
	curvesPQ     = []tls.CurveID{tls.X25519MLKEM768, tls.X25519}
)

// clientChain is a client certificate chain the mtls scenarios present,
// with the job whose CA trusts it.
type clientChain struct {
	name   string
	flavor flavor
	cert   func(p *pkiFiles) tls.Certificate
}

// The chains of the mtls scenarios. The Cloudflare-shaped one is the
// default: an RSA-2048 leaf from an RSA-4096 CA that signs with SHA-512.
var (
	chainCloudflare = clientChain{"cloudflare chain", flavorMTLS, func(p *pkiFiles) tls.Certificate { return p.client }}
	chainECDSALeaf  = clientChain{"cloudflare CA, ECDSA leaf", flavorMTLS, func(p *pkiFiles) tls.Certificate { return p.clientECDSA }}
	chainTestCA     = clientChain{"ECDSA test chain", flavorMTLSTestCA, func(p *pkiFiles) tls.Certificate { return p.clientTest }}
)

// mtlsClientConfig is the client side of the mtls job: TLS 1.3 only, the
// Cloudflare-shaped client certificate when withCert, and the server's
// certificate checked by its exact bytes. The load generator has one core,
// and a chain verification per handshake would spend it on work that
// measures nothing about the server; comparing the leaf with the one the
// harness issued is as strict for this closed setup.
func (h *harness) mtlsClientConfig(withCert bool, curves []tls.CurveID) *tls.Config {
	if withCert {
		return h.mtlsClientConfigWith(&h.pki.client, curves)
	}
	return h.mtlsClientConfigWith(nil, curves)
}

// mtlsClientConfigWith is mtlsClientConfig presenting cert, or no
// certificate when cert is nil.
func (h *harness) mtlsClientConfigWith(cert *tls.Certificate, curves []tls.CurveID) *tls.Config {
	want := h.pki.serverLeaf
	cfg := &tls.Config{
		ServerName:         mtlsName,
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return errors.New("server did not present the harness's certificate")
			}
			return nil
		},
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: curves,
		NextProtos:       []string{"http/1.1"},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// mtlsOp makes one TLS connection with the client certificate, sends one
// request, expects the fixed response and end of stream, and closes. With
// resume each worker keeps its own session cache and counts resumptions.
func (h *harness) mtlsOp(r *running, cert tls.Certificate, curves []tls.CurveID, resume bool, resumed, handshakes *atomic.Int64) func(i int) op {
	return h.mtlsOpWith(r, func() *tls.Config { return h.mtlsClientConfigWith(&cert, curves) }, resume, resumed, handshakes)
}

// mtlsOpWith is mtlsOp with each worker's client configuration from
// newConfig.
func (h *harness) mtlsOpWith(r *running, newConfig func() *tls.Config, resume bool, resumed, handshakes *atomic.Int64) func(i int) op {
	return func(int) op {
		buf := make([]byte, 2*len(httpResponse))
		cfg := newConfig()
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		return func(ctx context.Context) error {
			c, err := dialer.DialContext(ctx, "tcp", r.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(opTimeout))
			if r.direct {
				// The baseline without TLS: the same request
				// straight to the upstream.
				if _, err := c.Write(append(slices.Clone(directHeader), httpRequest...)); err != nil {
					return err
				}
				return expectResponse(c, buf)
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("handshake: %w", err)
			}
			if handshakes != nil {
				handshakes.Add(1)
				if resumed != nil && tc.ConnectionState().DidResume {
					resumed.Add(1)
				}
			}
			if _, err := tc.Write(httpRequest); err != nil {
				return fmt.Errorf("write request: %w", err)
			}
			return expectResponse(tc, buf)
		}
	}
}

func expectResponse(c net.Conn, buf []byte) error {
	n, err := readAll(c, buf)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if !bytes.Equal(buf[:n], httpResponse) {
		return fmt.Errorf("got %d bytes instead of the upstream's response", n)
	}
	return nil
}

// errRefusalAnswered is a refused client that got application data back:
// the system let it through.
var errRefusalAnswered = errors.New("a client without a certificate got a response")

// rejectOp makes a TLS 1.3 connection without a client certificate. Its
// handshake completes on the client's side (TLS 1.3 sends the certificate
// last), so it sends its request and succeeds when no byte of response
// comes back, whatever way the system ends the connection (silence and FIN
// for edgegate, an alert for the others).
func (h *harness) rejectOp(r *running) func(i int) op {
	return h.rejectOpWith(r, func() *tls.Config { return h.mtlsClientConfig(false, curvesX25519) })
}

// rejectOpWith is rejectOp with each worker's client configuration from
// newConfig (one that presents a certificate the system must refuse).
func (h *harness) rejectOpWith(r *running, newConfig func() *tls.Config) func(i int) op {
	return func(int) op {
		cfg := newConfig()
		buf := make([]byte, 512)
		return func(ctx context.Context) error {
			c, err := dialer.DialContext(ctx, "tcp", r.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(opTimeout))
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil
			}
			if _, err := tc.Write(httpRequest); err != nil {
				return nil
			}
			n, err := tc.Read(buf)
			if n > 0 {
				return errRefusalAnswered
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errors.New("refusal not closed within the operation timeout")
			}
			return nil
		}
	}
}

var (
	mtlsSystems   = []string{sysEdgegate, sysNginx, sysHAProxy, sysGoTLS, sysDirect}
	rejectSystems = []string{sysEdgegate, sysNginx, sysHAProxy, sysGoTLS}
	goSystems     = []string{sysEdgegate, sysGoTLS}
)

func runMTLSFull(ctx context.Context, h *harness, sc *scenario) []Row {
	var all []Row
	for _, v := range []struct {
		chain   clientChain
		name    string
		curves  []tls.CurveID
		systems []string
	}{
		{chainCloudflare, chainCloudflare.name, curvesX25519, mtlsSystems},
		{chainECDSALeaf, chainECDSALeaf.name, curvesX25519, mtlsSystems},
		{chainTestCA, chainTestCA.name, curvesX25519, mtlsSystems},
		{chainCloudflare, chainCloudflare.name + ", x25519mlkem768", curvesPQ, goSystems},
	} {
		h.progress("- %s", v.name)
		cert := v.chain.cert(h.pki)
		rows := h.eachSystem(ctx, sc, v.name, v.systems, v.chain.flavor, func(r *running, row *Row) {
			cache := h.chainCacheWatch(r)
			h.measure(ctx, r, row, measureCfg{
				label:       r.system,
				conc:        h.opts.Concurrency,
				ops:         h.mtlsOp(r, cert, v.curves, false, nil, nil),
				latencyRate: 200,
			})
			cache.report(row)
		})
		addLatencyOverDirect(rows)
		all = append(all, rows...)
	}
	return all
}

func runMTLSResumed(ctx context.Context, h *harness, sc *scenario) []Row {
	rows := h.eachSystem(ctx, sc, chainCloudflare.name, mtlsSystems, flavorMTLS, func(r *running, row *Row) {
		var resumed, handshakes atomic.Int64
		cache := h.chainCacheWatch(r)
		h.measure(ctx, r, row, measureCfg{
			label:       r.system,
			conc:        h.opts.Concurrency,
			ops:         h.mtlsOp(r, h.pki.client, curvesX25519, true, &resumed, &handshakes),
			latencyRate: 300,
		})
		cache.report(row)
		if n := handshakes.Load(); n > 0 && row.Metrics != nil {
			f := float64(resumed.Load()) / float64(n)
			row.Metrics[mResumed] = Stat{Median: f * 100, Min: f * 100, Max: f * 100, N: 1}
			if f < 0.9 {
				row.Note = strings.TrimSpace(fmt.Sprintf("only %.0f%% of handshakes resumed. %s", f*100, row.Note))
			}
		}
	})
	addLatencyOverDirect(rows)
	return rows
}

func runMTLSReject(ctx context.Context, h *harness, sc *scenario) []Row {
	return h.eachSystem(ctx, sc, "no certificate", rejectSystems, flavorMTLS, func(r *running, row *Row) {
		h.measure(ctx, r, row, measureCfg{
			label:     r.system,
			conc:      h.opts.Concurrency,
			ops:       h.rejectOp(r),
			legit:     h.mtlsOp(r, h.pki.client, curvesX25519, false, nil, nil),
			legitConc: max(1, h.opts.Concurrency/8),
		})
	})
}
