package upstream

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the per-server metrics of every pool of a process, labelled
// vhost and server (the server's address).
type Metrics struct {
	up            *prometheus.GaugeVec
	active        *prometheus.GaugeVec
	connections   *prometheus.CounterVec
	dialFailures  *prometheus.CounterVec
	checkFailures *prometheus.CounterVec
	tlsFailures   *prometheus.CounterVec
}

// NewMetrics creates the upstream metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"vhost", "server"}
	m := &Metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgegate_upstream_server_up", Help: "1 when an upstream server takes new connections, 0 when health checks or failed dials marked it down.",
		}, labels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgegate_upstream_connections_active", Help: "Connections open to an upstream server.",
		}, labels),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_upstream_connections_total", Help: "Connections made to an upstream server.",
		}, labels),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_upstream_dial_failures_total", Help: "Dials of client connections to an upstream server that were refused or timed out (the next server was tried).",
		}, labels),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_upstream_check_failures_total", Help: "Failed active health checks of an upstream server.",
		}, labels),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_upstream_tls_failures_total", Help: "TLS handshakes with an upstream server that failed (upstream.tls).",
		}, labels),
	}
	reg.MustRegister(m.up, m.active, m.connections, m.dialFailures, m.checkFailures, m.tlsFailures)
	return m
}

// serverMetrics are one server's series, resolved once.
type serverMetrics struct {
	up, active                               prometheus.Gauge
	connections, dialFailures, checkFailures prometheus.Counter
	tlsFailures                              prometheus.Counter
}

func (m *Metrics) server(vhost, server string) serverMetrics {
	return serverMetrics{
		up:            m.up.WithLabelValues(vhost, server),
		active:        m.active.WithLabelValues(vhost, server),
		connections:   m.connections.WithLabelValues(vhost, server),
		dialFailures:  m.dialFailures.WithLabelValues(vhost, server),
		checkFailures: m.checkFailures.WithLabelValues(vhost, server),
		tlsFailures:   m.tlsFailures.WithLabelValues(vhost, server),
	}
}

// forget removes a server's series (it left the configuration).
func (m *Metrics) forget(vhost, server string) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{
		m.up, m.active, m.connections, m.dialFailures, m.checkFailures, m.tlsFailures,
	} {
		v.DeleteLabelValues(vhost, server)
	}
}

// discardMetrics are series registered nowhere, for a pool not started.
func discardMetrics() serverMetrics {
	g := func() prometheus.Gauge { return prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"}) }
	c := func() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"}) }
	return serverMetrics{up: g(), active: g(), connections: c(), dialFailures: c(), checkFailures: c(), tlsFailures: c()}
}
