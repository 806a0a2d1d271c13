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
		"xdp/pass_syn":    "over 3× trivial",
		"tc/drop_not_tls": "over 1.5× reference",
	} {
		m := map[string]Stat{}
		for k, xs := range v[path] {
			m[k] = statOf(xs)
		}
		if got := bpfTargetNote(path, m); got != want {
			t.Errorf("%s: note %q, want %q", path, got, want)
		}
	}
}
