package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// points makes idle points from counts and the bytes each holds.
func points(counts []int, bytes func(i, n int) float64) []IdlePoint {
	var ps []IdlePoint
	for i, n := range counts {
		ps = append(ps, IdlePoint{Conns: n, PssKiB: uint64(math.Round(bytes(i, n) / 1024))})
	}
	return ps
}

func TestFitIdle(t *testing.T) {
	const a, b = 8 << 20, 16 * 1024 // 8 MiB fixed, 16 KiB per connection
	counts := []int{1000, 5000, 9000, 1000, 5000, 9000, 1000, 5000, 9000}

	exact, err := fitIdle(points(counts, func(_, n int) float64 { return a + b*float64(n) }))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(exact.BytesPerConn-b) > 1e-6 || math.Abs(exact.FixedBytes-a) > 1e-3 || math.Abs(exact.R2-1) > 1e-12 {
		t.Errorf("exact line: b %v a %v R² %v; want %v, %v, 1", exact.BytesPerConn, exact.FixedBytes, exact.R2, b, a)
	}
	if want := float64(a + b*projectedConns); math.Abs(exact.BytesAtProjection-want) > 1 {
		t.Errorf("at %d connections: %v bytes; want %v", projectedConns, exact.BytesAtProjection, want)
	}
	if want := math.Floor((64<<30 - a) / b); exact.ConnsInOrigin != want {
		t.Errorf("connections in 64 GiB: %v; want %v", exact.ConnsInOrigin, want)
	}

	// The same line with ±2 MiB of deterministic noise (a GC or an arena
	// more or less): the slope stays within 5%, R² drops below 1 but
	// stays high.
	noise := []float64{1, -1, 0.5, -0.5, 1, -1, 0, 0.8, -0.8}
	noisy, err := fitIdle(points(counts, func(i, n int) float64 { return a + b*float64(n) + noise[i]*(2<<20) }))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(noisy.BytesPerConn-b)/b > 0.05 || noisy.R2 >= 1 || noisy.R2 < 0.95 {
		t.Errorf("noisy line: b %v R² %v; want within 5%% of %v and 0.95 ≤ R² < 1", noisy.BytesPerConn, noisy.R2, b)
	}

	// Memory that does not grow fits a flat line: nothing to divide
	// 64 GiB by.
	flat, err := fitIdle(points([]int{100, 200}, func(int, int) float64 { return a }))
	if err != nil || flat.BytesPerConn != 0 || flat.ConnsInOrigin != 0 || flat.R2 != 1 {
		t.Errorf("flat: %+v, %v; want b 0, no origin count, R² 1", flat, err)
	}

	for name, ps := range map[string][]IdlePoint{
		"one point": points([]int{1000}, func(int, int) float64 { return a }),
		"one count": points([]int{1000, 1000, 1000}, func(i, _ int) float64 { return a + float64(i) }),
		"no points": nil,
	} {
		if f, err := fitIdle(ps); err == nil {
			t.Errorf("%s: fitted %+v; want an error", name, f)
		}
	}
}

func TestCountsUnder(t *testing.T) {
	for _, tc := range []struct {
		counts []int
		limit  int
		want   []int
	}{
		{[]int{1000, 5000, 9000}, 9500, []int{1000, 5000, 9000}},
		{[]int{1000, 5000, 9000}, 3269, []int{1000, 3269}},
		{[]int{1000, 5000, 9000}, 500, []int{500}},
		{[]int{1000, 1000, 0, 2000}, 9500, []int{1000, 2000}},
		{[]int{1000}, 0, nil},
	} {
		if got := countsUnder(tc.counts, tc.limit); !slices.Equal(got, tc.want) {
			t.Errorf("countsUnder(%v, %d) = %v; want %v", tc.counts, tc.limit, got, tc.want)
		}
	}
}

func TestFitTableAndChart(t *testing.T) {
	f, err := fitIdle(points([]int{1000, 5000, 9000}, func(_, n int) float64 { return 4<<20 + 3500*float64(n) }))
	if err != nil {
		t.Fatal(err)
	}
	g := group{sc: findScenario("idle-connections"), variant: "passthrough", rows: []Row{{
		Scenario: "idle-connections", Variant: "passthrough", System: sysHAProxy, Status: statusOK, Fit: f,
		Metrics: map[string]Stat{mFDPerConn: {Median: 2, N: 1}},
	}}}
	table := fitTable(g)
	for _, want := range []string{"| haproxy | 1000, 5000, 9000 (1) | 3,500 | 4.0 | 1.0000 | 3.3 GiB |", "| 2,000,000 |"} {
		if !strings.Contains(table, want) {
			t.Errorf("fit table lacks %q:\n%s", want, table)
		}
	}
	if svg := fitSVG(g); !strings.Contains(svg, "<svg") || !strings.Contains(svg, "3,500 bytes/conn") || strings.Count(svg, "<circle") != 3 {
		t.Errorf("chart lacks the points or the slope:\n%s", svg)
	}
	if fitChartName(g) != "idle-passthrough.svg" {
		t.Errorf("chart name %s", fitChartName(g))
	}
}
