package bench

import "testing"

func TestParseBPFBenchReference(t *testing.T) {
	out := []byte(`BenchmarkVerdicts/xdp/pass_syn-2   	 1000000	        20.00 ns/op	         6.000 baseline-ns/pkt	        19.00 ns/pkt	        36.00 reference-ns/pkt	         3.167 x-baseline	         0.5278 x-reference
BenchmarkVerdicts/tc/drop_not_tls-2 	 1000000	        60.00 ns/op	        15.00 baseline-ns/pkt	        58.00 ns/pkt	        32.00 reference-ns/pkt	         3.867 x-baseline	         1.812 x-reference
`)
	order, v := parseBPFBench(out)
	if len(order) != 2 {
		t.Fatalf("paths = %v", order)
	}
	if got := v["xdp/pass_syn"][mReferenceNs]; len(got) != 1 || got[0] != 36 {
		t.Errorf("reference-ns/pkt = %v", got)
	}
	if got := v["tc/drop_not_tls"][mXReference]; len(got) != 1 || got[0] != 1.812 {
		t.Errorf("x-reference = %v", got)
	}
	for path, want := range map[string]string{
		"xdp/pass_syn":    "missed: guard SYN within 3× the trivial program (3.17×)",
		"tc/drop_not_tls": "missed: guard verdict within 1.5× the reference program (1.81×)",
	} {
		row := Row{Scenario: "bpf-program", System: "guard " + path, Status: statusOK, Metrics: map[string]Stat{}}
		for k, xs := range v[path] {
			row.Metrics[k] = statOf(xs)
		}
		if got := bpfTargetNote(row); got != want {
			t.Errorf("%s: note %q, want %q", path, got, want)
		}
	}
}

// The guard's targets: a SYN against the trivial program (3×), every
// verdict, the SYN included, against the reference program (1.5×). A
// verdict other than the SYN is not held to the trivial program.
func TestBPFTargets(t *testing.T) {
	row := func(path string, xTrivial, xRef float64) Row {
		return Row{Scenario: "bpf-program", System: "guard " + path, Status: statusOK, Metrics: map[string]Stat{
			mXTrivial: {Median: xTrivial, N: 1}, mXReference: {Median: xRef, N: 1}}}
	}
	r := &Report{Rows: []Row{
		row("xdp/pass_syn", 2.9, 0.8),
		row("tc/pass_syn", 3.1, 1.6),
		row("xdp/drop_not_tls", 6.3, 1.49),
		row("tc/drop_not_tls", 3.6, 1.7),
		row("tc/pass_not_guarded", 1.5, 1.5),
	}}
	type key struct{ variant, against string }
	got := map[key]targetResult{}
	for _, tr := range r.checkTargets() {
		got[key{tr.Variant, tr.Against}] = tr
	}
	want := map[key]bool{
		{"xdp/pass_syn", "trivial program"}:          true,
		{"xdp/pass_syn", "reference program"}:        true,
		{"tc/pass_syn", "trivial program"}:           false,
		{"tc/pass_syn", "reference program"}:         false,
		{"xdp/drop_not_tls", "reference program"}:    true,
		{"tc/drop_not_tls", "reference program"}:     false,
		{"tc/pass_not_guarded", "reference program"}: true,
	}
	if len(got) != len(want) {
		t.Errorf("%d guard targets judged, want %d: %v", len(got), len(want), got)
	}
	for k, met := range want {
		tr, ok := got[k]
		if !ok {
			t.Errorf("%s against the %s: not judged", k.variant, k.against)
			continue
		}
		if tr.Met != met {
			t.Errorf("%s against the %s: ratio %.2f met %v, want %v", k.variant, k.against, tr.Ratio, tr.Met, met)
		}
	}
}
