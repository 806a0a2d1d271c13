package bpf

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded, allowOnly}, AllowOnly: allowed, FlowTableSize: 16384})
	for range 3 {
		judge(t, g, entryPoints[0], synFrom(outside4, guarded))
	}
	// More flows than one batch reads. Some share a slot: the gauge
	// counts slots in use.
	m := newModel(t, g)
	used := map[uint32]bool{}
	for i := range 5000 {
		f := newFlow(client6, server6, uint16(10000+i))
		judge(t, g, entryPoints[0], f.syn().bytes())
		idx, _ := slotOf(m.hashKey, m.nslots, f.src, f.dst, f.sport, f.dport)
		used[idx] = true
	}
	judge(t, g, entryPoints[1], synFrom(client4, notGuarded))

	reg := prometheus.NewRegistry()
	if err := reg.Register(g); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"edgegate_bpf_packets_total,verdict=drop_not_allowed": 3,
		"edgegate_bpf_packets_total,verdict=pass_not_guarded": 1,
		"edgegate_bpf_packets_total,verdict=pass_tls":         0,
		"edgegate_bpf_map_entries,map=ports":                  2,
		"edgegate_bpf_map_entries,map=allow":                  2,
		"edgegate_bpf_map_entries,map=blocklist":              0,
		"edgegate_bpf_map_capacity,map=flows":                 16384,
		"edgegate_bpf_map_entries,map=flows":                  float64(len(used)),
		"edgegate_bpf_map_capacity,map=source_rate":           SourceRateTableSize,
		"edgegate_bpf_map_entries,map=source_rate":            0,
		"edgegate_bpf_map_entries,map=never_limit":            0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	n := 0
	for key := range got {
		if len(key) > len("edgegate_bpf_packets_total") && key[:len("edgegate_bpf_packets_total")] == "edgegate_bpf_packets_total" {
			n++
		}
	}
	if n != len(Verdicts) {
		t.Errorf("%d verdict series, want %d", n, len(Verdicts))
	}
}
