package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
)

// Verdicts lists the guard's verdict names in the order of enum verdict in
// guard.c; the index of a name is its counter key. Every packet the program
// sees moves exactly one of them.
var Verdicts = []string{
	"pass_not_guarded", // not IP, or not to a guarded port
	"pass_syn",         // SYN without data: flow tracked in its slot
	"pass_tls",         // new stream bytes checked, a ClientHello so far
	"pass_no_payload",  // tracked flow, segment without data
	"pass_other_seq",   // tracked flow, data not at the first unchecked byte
	"pass_untracked",   // slot holds no state for the flow: already checked, older than the guard, or overwritten
	"pass_fragment",    // non-first IP fragment, fragments pass
	"drop_not_tls",     // stream does not start like a TLS ClientHello: segment turned into a RST for the local stack (dropped in a SYN)
	"drop_non_tcp",     // UDP or another non-TCP protocol to a guarded port
	"drop_bad_flags",   // impossible TCP flag combination
	"drop_blocked",     // source on the blocklist
	"drop_not_allowed", // allow-only port, source outside the allow list
	"drop_fragment",    // non-first IP fragment, fragments dropped
	"drop_malformed",   // truncated or inconsistent headers
	"pass_proxy_port",  // port expects an inbound PROXY header: first bytes not checked
	"drop_refused",     // later segment of a stream refused as not TLS
	"drop_source_rate", // SYN from a source over limits.rate (an IPv4 address or IPv6 /64)
}

// Counters returns packets per verdict, summed over CPUs.
func (g *Guard) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(Verdicts))
	for i, name := range Verdicts {
		var perCPU []uint64
		if err := g.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("bpf: read counter %s: %w", name, err)
		}
		var sum uint64
		for _, n := range perCPU {
			sum += n
		}
		out[name] = sum
	}
	return out, nil
}

var (
	packetsDesc = prometheus.NewDesc("edgegate_bpf_packets_total",
		"Packets judged by the kernel guard, by verdict.", []string{"verdict"}, nil)
	entriesDesc = prometheus.NewDesc("edgegate_bpf_map_entries",
		"Entries in a guard map.", []string{"map"}, nil)
	capacityDesc = prometheus.NewDesc("edgegate_bpf_map_capacity",
		"Maximum entries of a guard map.", []string{"map"}, nil)
	attachedDesc = prometheus.NewDesc("edgegate_bpf_attached",
		"1 for each interface the guard is attached to, with the mode used.", []string{"interface", "mode"}, nil)
)

// Describe implements prometheus.Collector.
func (g *Guard) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- entriesDesc
	ch <- capacityDesc
	ch <- attachedDesc
}

// Collect implements prometheus.Collector. Read errors leave the affected
// metrics out of the scrape rather than reporting wrong numbers.
func (g *Guard) Collect(ch chan<- prometheus.Metric) {
	if counters, err := g.Counters(); err == nil {
		for _, name := range Verdicts {
			ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(counters[name]), name)
		}
	}
	for name, m := range map[string]*ebpf.Map{
		"blocklist":   g.objs.Blocklist,
		"allow":       g.objs.Allow,
		"never_limit": g.objs.NeverLimit,
	} {
		if n, err := countEntries(m); err == nil {
			ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(n), name)
		}
	}
	// ports is an array with a slot for every port; only edgegate writes
	// it, so the guarded ports are its entries.
	g.mu.Lock()
	guardedPorts := len(g.settings.Ports)
	g.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(guardedPorts), "ports")
	if n, err := g.countFlows(); err == nil {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(n), "flows")
	}
	if n, err := g.SourceRateEntries(); err == nil {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(n), "source_rate")
	}
	for name, m := range map[string]*ebpf.Map{
		"blocklist":   g.objs.Blocklist,
		"allow":       g.objs.Allow,
		"ports":       g.objs.Ports,
		"flows":       g.objs.FlowSlots,
		"source_rate": g.objs.SourceRate,
		"never_limit": g.objs.NeverLimit,
	} {
		ch <- prometheus.MustNewConstMetric(capacityDesc, prometheus.GaugeValue, float64(m.MaxEntries()), name)
	}
	for iface, mode := range g.Modes() {
		ch <- prometheus.MustNewConstMetric(attachedDesc, prometheus.GaugeValue, 1, iface, mode)
	}
}

// countEntries walks a map's keys.
func countEntries(m *ebpf.Map) (int, error) {
	n := 0
	key := make([]byte, m.KeySize())
	val := make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(key, val) {
		n++
	}
	return n, it.Err()
}

// flowBatch is how many flow slots one batch syscall reads.
const flowBatch = 4096

// countFlows counts the flow table's slots in use, in batches: it has
// hundreds of thousands of slots, too many for one lookup syscall each at
// every scrape. A slot stays in use until its stream's first bytes are
// checked or another flow's SYN takes it, so the count includes streams
// that never sent data, and refused streams. It is approximate while the
// program changes the table.
func (g *Guard) countFlows() (int, error) {
	keys := make([]uint32, flowBatch)
	vals := make([]uint64, flowBatch)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := g.objs.FlowSlots.BatchLookup(&cursor, keys, vals, nil)
		for _, v := range vals[:n] {
			if v != 0 {
				total++
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return 0, fmt.Errorf("bpf: count flows: %w", err)
		}
	}
}

// SourceRateEntries counts the sources in the kernel's rate table, in
// batches: it holds up to SourceRateTableSize of them, too many for a
// lookup syscall each at every scrape.
func (g *Guard) SourceRateEntries() (int, error) {
	keys := make([]guardAddrKey, flowBatch)
	vals := make([]uint64, flowBatch)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := g.objs.SourceRate.BatchLookup(&cursor, keys, vals, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return 0, fmt.Errorf("bpf: count rate table: %w", err)
		}
	}
}
