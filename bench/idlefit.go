package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The projection of idle memory: how much a system would need to hold
// projectedConns idle connections, and how many fit in an origin with
// originMemory (issue 5's 64 GiB machine).
const (
	projectedConns = 1_000_000
	originMemory   = 64 << 30
)

// IdleFit is memory = FixedBytes + BytesPerConn·n fitted by least squares
// to the points of every repetition of one system, and its projection.
type IdleFit struct {
	Points       []IdlePoint `json:"points"`
	BytesPerConn float64     `json:"bytes_per_conn"` // b, the slope
	FixedBytes   float64     `json:"fixed_bytes"`    // a, the intercept
	R2           float64     `json:"r2"`
	// BytesAtProjection is a + b·projectedConns; ConnsInOrigin is
	// (originMemory − a) / b, 0 when memory did not grow with n.
	ProjectedConns    int     `json:"projected_conns"`
	BytesAtProjection float64 `json:"bytes_at_projected_conns"`
	OriginBytes       int64   `json:"origin_bytes"`
	ConnsInOrigin     float64 `json:"conns_in_origin"`
}

// fitIdle fits memory against connections over points.
func fitIdle(points []IdlePoint) (*IdleFit, error) {
	var xs, ys []float64
	for _, p := range points {
		xs = append(xs, float64(p.Conns))
		ys = append(ys, float64(p.PssKiB)*1024)
	}
	a, b, r2, err := fitLine(xs, ys)
	if err != nil {
		return nil, err
	}
	f := &IdleFit{Points: points, BytesPerConn: b, FixedBytes: a, R2: r2,
		ProjectedConns: projectedConns, BytesAtProjection: a + b*projectedConns, OriginBytes: originMemory}
	if b > 0 {
		f.ConnsInOrigin = math.Floor((originMemory - a) / b)
	}
	return f, nil
}

// fitLine fits y = a + b·x by ordinary least squares and returns R², the
// share of y's variance the line explains (1 when y does not vary and the
// line goes through every point).
func fitLine(xs, ys []float64) (a, b, r2 float64, err error) {
	n := float64(len(xs))
	if len(xs) != len(ys) || len(xs) < 2 {
		return 0, 0, 0, fmt.Errorf("a line needs two points or more, have %d", len(xs))
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var sxx, sxy, syy float64
	for i := range xs {
		dx, dy := xs[i]-mx, ys[i]-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx == 0 {
		return 0, 0, 0, errors.New("a line needs two different connection counts")
	}
	b = sxy / sxx
	a = my - b*mx
	var ssRes float64
	for i := range xs {
		e := ys[i] - (a + b*xs[i])
		ssRes += e * e
	}
	r2 = 1
	if syy > 0 {
		r2 = 1 - ssRes/syy
	}
	return a, b, r2, nil
}

// fitTable renders the fits of g's rows, empty when none has one.
func fitTable(g group) string {
	var rows []Row
	for _, row := range g.rows {
		if row.Fit != nil {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("Memory (Pss of all the system's processes) against idle connections held, fitted by least squares")
	w("as a + b·n over every repetition's points, and extrapolated: to %s connections, and to how many", commas(projectedConns))
	w("fit in a %d GiB origin. Descriptors are a limit of their own (`LimitNOFILE`), shown at %s.", originMemory>>30, commas(projectedConns))
	w("")
	w("| system | measured at (repetitions) | b: bytes / conn | a: fixed MiB | R² | memory at %s conns | conns in %d GiB | descriptors at %s conns |",
		commas(projectedConns), originMemory>>30, commas(projectedConns))
	w("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, row := range rows {
		f := row.Fit
		counts := map[int]int{}
		var order []int
		for _, p := range f.Points {
			if counts[p.Conns] == 0 {
				order = append(order, p.Conns)
			}
			counts[p.Conns]++
		}
		slices.Sort(order)
		reps := counts[order[len(order)-1]]
		in := "–"
		if f.ConnsInOrigin > 0 {
			in = commas(int64(f.ConnsInOrigin))
		}
		fds := "–"
		if s, ok := row.Metrics[mFDPerConn]; ok {
			fds = commas(int64(math.Round(s.Median * projectedConns)))
		}
		w("| %s | %s (%d) | %s | %.1f | %.4f | %.1f GiB | %s | %s |", row.System, joinInts(order), reps,
			commas(int64(math.Round(f.BytesPerConn))), f.FixedBytes/(1<<20), f.R2, f.BytesAtProjection/(1<<30), in, fds)
	}
	return b.String()
}

// commas writes n with thousands separators: 1,000,000.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	out = append([]string{s}, out...)
	r := strings.Join(out, ",")
	if neg {
		r = "-" + r
	}
	return r
}
