package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// finish writes the connection's one log line and counts its outcome.
// Proxied connections log at info; the noise every open port receives at
// debug; mtls refusals at info but rate-limited, so a flood cannot fill the
// disk (the ones left out are summed into the next line that is written).
func (s *Server) finish(ss *session) {
	if ss.cut.Load() && ss.outcome == OutcomeProxied {
		ss.outcome = OutcomeShutdown
	}
	vname, mode := "", ""
	if ss.vhost != nil {
		vname, mode = ss.vhost.name, string(ss.vhost.mode)
	}
	s.metrics.connections.WithLabelValues(ss.listener, vname, string(ss.outcome)).Inc()
	duration := time.Since(ss.start)
	s.metrics.of(ss.vhost).duration.Observe(duration.Seconds())
	s.offence(ss)
	if ss.toUp > 0 {
		s.metrics.bytes.WithLabelValues(vname, "to_upstream").Add(float64(ss.toUp))
	}
	if ss.toClient > 0 {
		s.metrics.bytes.WithLabelValues(vname, "to_client").Add(float64(ss.toClient))
	}

	level := slog.LevelInfo
	var suppressed int64
	switch {
	case ss.outcome.junk():
		level = slog.LevelDebug
	case ss.outcome == OutcomeClientCert || ss.outcome == OutcomeNotAllowed || ss.outcome == OutcomeHandshake:
		var ok bool
		if ok, suppressed = s.refusalLog.allow(time.Now()); !ok {
			return
		}
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs,
		slog.String("client", ss.client.String()),
		slog.String("listener", ss.listener),
		slog.String("sni", ss.sni),
	)
	if ss.sni == "" && ss.rawSNI != "" {
		attrs = append(attrs, slog.String("raw_sni", ss.rawSNI))
	}
	attrs = append(attrs,
		slog.String("vhost", vname),
		slog.String("mode", mode),
		slog.String("outcome", string(ss.outcome)),
	)
	if ss.id != "" {
		attrs = append(attrs, slog.String("conn_id", ss.id))
	}
	if ss.reason != "" {
		attrs = append(attrs, slog.String("reason", ss.reason))
	}
	attrs = append(attrs,
		slog.Int64("bytes_to_upstream", ss.toUp),
		slog.Int64("bytes_to_client", ss.toClient),
		slog.Duration("duration", duration),
	)
	if f := &ss.tls; f.version != 0 {
		attrs = append(attrs,
			slog.String("tls_version", tls.VersionName(f.version)),
			slog.String("tls_cipher", cipherSuiteName(f.cipher)),
			slog.Bool("tls_resumed", f.resumed),
		)
		if l := f.leaf; l != nil {
			spki := sha256.Sum256(l.RawSubjectPublicKeyInfo)
			attrs = append(attrs,
				slog.String("client_cn", l.Subject.CommonName),
				slog.String("client_serial", strings.ToUpper(l.SerialNumber.Text(16))),
				slog.String("client_spki_sha256", hex.EncodeToString(spki[:])),
			)
		}
	}
	if ss.err != nil {
		attrs = append(attrs, slog.String("err", ss.err.Error()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int64("refusals_not_logged", suppressed))
	}
	// The record is handed to the handler directly: Logger.LogAttrs would
	// first walk the stack for the caller's PC (runtime.Callers), which
	// no edgegate handler prints.
	r := slog.NewRecord(time.Now(), level, "connection", 0)
	r.AddAttrs(attrs...)
	s.log.Handler().Handle(context.Background(), r)
}

// cipherNames are crypto/tls's names of its cipher suites, made once:
// tls.CipherSuiteName builds the list of every suite on each call.
var cipherNames = func() map[uint16]string {
	m := map[uint16]string{}
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[c.ID] = c.Name
	}
	return m
}()

// cipherSuiteName is tls.CipherSuiteName without its allocations.
func cipherSuiteName(id uint16) string {
	if n, ok := cipherNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}

// rateLimit is a token bucket for log lines: burst lines at once, then
// perSecond a second.
type rateLimit struct {
	mu         sync.Mutex
	perSecond  float64
	burst      float64
	tokens     float64
	last       time.Time
	suppressed int64
}

// allow reports whether a line may be written now, and how many were
// refused since the last one allowed.
func (r *rateLimit) allow(now time.Time) (bool, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.IsZero() {
		r.tokens = r.burst
	} else {
		r.tokens = min(r.burst, r.tokens+now.Sub(r.last).Seconds()*r.perSecond)
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		return false, 0
	}
	r.tokens--
	n := r.suppressed
	r.suppressed = 0
	return true, n
}
