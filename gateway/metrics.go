package gateway

import (
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgegate/edgegate/gateway/upstream"
	"github.com/edgegate/edgegate/sni"
)

// metricsSet holds a server's Prometheus metrics, every name prefixed edgegate_.
type metricsSet struct {
	reg          *prometheus.Registry
	connections  *prometheus.CounterVec // listener, vhost, outcome
	active       prometheus.Gauge
	bytes        *prometheus.CounterVec // vhost, direction
	helloBytes   prometheus.Histogram
	helloPQ      prometheus.Counter
	helloSeconds *prometheus.HistogramVec // vhost
	handshake    *prometheus.HistogramVec // vhost
	connect      *prometheus.HistogramVec // vhost
	duration     *prometheus.HistogramVec // vhost
	rejections   *prometheus.CounterVec   // vhost, reason
	acceptErrors prometheus.Counter
	reloads      *prometheus.CounterVec // result
	generation   prometheus.Gauge
	guardUp      prometheus.Gauge // registered by commitGuard only
	blocked      prometheus.Counter
	upstream     *upstream.Metrics // per upstream server

	// unrouted observes connections that never reached a vhost.
	unrouted *vhostMetrics
}

// vhostMetrics are one vhost's histograms with its label already applied,
// so that a connection's observations cost no label lookup: the server
// resolves them once per vhost and configuration generation (forState).
type vhostMetrics struct {
	hello, handshake, connect, duration prometheus.Observer
}

func newMetrics() *metricsSet {
	m := &metricsSet{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_connections_total", Help: "Connections by listener, vhost and outcome.",
		}, []string{"listener", "vhost", "outcome"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_connections_active", Help: "Connections being served now.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_bytes_total", Help: "Bytes relayed, by vhost and direction (to_upstream, to_client).",
		}, []string{"vhost", "direction"}),
		helloBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgegate_client_hello_bytes", Help: "Size of ClientHello messages.",
			Buckets: []float64{256, 512, 1024, 1536, 2048, 4096, 8192, 16384},
		}),
		helloPQ: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_client_hello_post_quantum_total", Help: "ClientHellos carrying a post-quantum key share.",
		}),
		helloSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgegate_client_hello_seconds", Help: "Time from accept (or the inbound PROXY header) to a complete ClientHello or its failure, by the vhost it routed to (\"\" for none).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"vhost"}),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgegate_tls_handshake_seconds", Help: "mtls handshake duration, successful or not, by vhost.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"vhost"}),
		connect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgegate_upstream_connect_seconds", Help: "Time to connect to the upstream, by vhost; failed dials are counted as upstream_unreachable instead.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"vhost"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgegate_connection_duration_seconds", Help: "Connection lifetime from accept to its end, whatever the outcome, by vhost (\"\" for none).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"vhost"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_mtls_rejections_total", Help: "mtls connections refused without a response, by vhost and reason.",
		}, []string{"vhost", "reason"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegate_accept_errors_total", Help: "Failed accept calls (e.g. out of file descriptors).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegate_config_reload_total", Help: "Configuration reloads by result (ok, error).",
		}, []string{"result"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgegate_config_generation", Help: "Generation of the configuration in force.",
		}),
	}
	// Registered only when the configuration enables the guard.
	m.guardUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgegate_bpf_guard_up", Help: "1 when the configured eBPF guard is attached, 0 when it failed to attach and edgegate runs without it (ebpf.required: false). Absent where ebpf.enabled is false.",
	})
	m.blocked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgegate_bpf_blocks_total", Help: "Sources put in the kernel blocklist for repeated offences.",
	})
	m.reg.MustRegister(m.connections, m.active, m.bytes, m.helloBytes, m.helloPQ, m.helloSeconds,
		m.handshake, m.connect, m.duration, m.rejections, m.acceptErrors, m.reloads, m.generation,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.upstream = upstream.NewMetrics(m.reg)
	m.unrouted = m.forVHost("")
	return m
}

// forVHost returns the observers of the vhost called name.
func (m *metricsSet) forVHost(name string) *vhostMetrics {
	return &vhostMetrics{
		hello:     m.helloSeconds.WithLabelValues(name),
		handshake: m.handshake.WithLabelValues(name),
		connect:   m.connect.WithLabelValues(name),
		duration:  m.duration.WithLabelValues(name),
	}
}

// forState gives every vhost of st its observers; st must not be serving
// yet.
func (m *metricsSet) forState(st *state) {
	for _, v := range st.vhosts {
		v.metrics = m.forVHost(v.name)
	}
}

// of returns v's observers, or those of connections without a vhost.
func (m *metricsSet) of(v *vhost) *vhostMetrics {
	if v == nil || v.metrics == nil {
		return m.unrouted
	}
	return v.metrics
}

// BuildInfo returns the edgegate_build_info gauge, always 1, labelled with
// the binary's version and the Go release it was built with. The command
// adds it to Server.Registry, as only it knows its version.
func BuildInfo(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "edgegate_build_info",
		Help:        "Always 1; the labels say which edgegate binary is running and the Go release it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

func (m *metricsSet) observeHello(h *sni.Hello) {
	m.helloBytes.Observe(float64(h.Length))
	if h.PostQuantum() {
		m.helloPQ.Inc()
	}
}

// chainCacheCollector reports the verified-chain cache of every mtls vhost
// in the configuration in force. A vhost's counts live in its cache, which a
// reload keeps while the vhost's trust is unchanged; a new CA or pin starts
// a new cache, and the counters restart from zero as after a restart.
type chainCacheCollector struct {
	state        *atomic.Pointer[state]
	hits, misses *prometheus.Desc
}

func newChainCacheCollector(st *atomic.Pointer[state]) *chainCacheCollector {
	return &chainCacheCollector{
		state: st,
		hits: prometheus.NewDesc("edgegate_client_chain_cache_hits_total",
			"mtls client chains accepted from the verified-chain cache, by vhost.", []string{"vhost"}, nil),
		misses: prometheus.NewDesc("edgegate_client_chain_cache_misses_total",
			"mtls client chains not in the verified-chain cache (verified in full), by vhost.", []string{"vhost"}, nil),
	}
}

func (c *chainCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hits
	ch <- c.misses
}

func (c *chainCacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.state.Load()
	if st == nil {
		return
	}
	for name, v := range st.vhosts {
		if v.mtls == nil || v.mtls.auth.Cache == nil {
			continue
		}
		h, m := v.mtls.auth.Cache.Stats()
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(h), name)
		ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(m), name)
	}
}
