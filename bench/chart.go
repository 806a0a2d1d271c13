package bench

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// systemColours keeps each system's colour the same in every block.
var systemColours = map[string]string{
	sysEdgegate: "#1f77b4", sysNginx: "#2ca02c", sysHAProxy: "#d62728", sysGoTLS: "#9467bd", sysDirect: "#7f7f7f",
}

// SVG renders one block per scenario variant that has a peer result: a bar
// per system, its primary metric divided by the best peer's, with a line at
// 1.0. The chart is written by hand so it needs no plotting library.
func (r *Report) SVG() string {
	const (
		width   = 780
		labelW  = 190
		barMaxW = 500
		rowH    = 18
		titleH  = 22
		gap     = 14
	)
	type bar struct {
		system string
		ratio  float64
	}
	type block struct {
		title string
		bars  []bar
	}
	var blocks []block
	maxRatio := 1.0
	for _, g := range r.groups() {
		peer, ok := g.bestPeer()
		if !ok {
			continue
		}
		p := peer.Metrics[g.sc.primary].Median
		if p == 0 {
			continue
		}
		dir := "higher is better"
		if !g.sc.higherBetter {
			dir = "lower is better"
		}
		title := g.sc.name
		if g.variant != "" {
			title += " / " + g.variant
		}
		b := block{title: fmt.Sprintf("%s — %s ÷ best peer (%s, %s)", title, g.sc.primary, peer.System, dir)}
		for _, row := range g.rows {
			v, ok := row.Metrics[g.sc.primary]
			if !ok || (row.Status != statusOK && row.Status != statusBaseline) {
				continue
			}
			q := v.Median / p
			b.bars = append(b.bars, bar{row.System, q})
			maxRatio = math.Max(maxRatio, q)
		}
		blocks = append(blocks, b)
	}
	maxRatio = math.Min(maxRatio*1.1, 6)
	height := 40
	for _, b := range blocks {
		height += titleH + len(b.bars)*rowH + gap
	}
	if len(blocks) == 0 {
		height += 30
	}
	var s strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&s, format+"\n", a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>`)
	w(`<text x="10" y="22" font-size="15" font-weight="bold">edgegate-bench: each system ÷ the best of nginx and HAProxy, same run</text>`)
	y := 40
	if len(blocks) == 0 {
		w(`<text x="10" y="%d">No scenario has a peer result to compare with.</text>`, y+15)
	}
	x1 := labelW + int(barMaxW/maxRatio)
	for _, b := range blocks {
		w(`<text x="10" y="%d" font-weight="bold">%s</text>`, y+15, html.EscapeString(b.title))
		y += titleH
		top := y
		for _, br := range b.bars {
			bw := int(math.Min(br.ratio, maxRatio) / maxRatio * barMaxW)
			colour := systemColours[br.system]
			w(`<text x="%d" y="%d" text-anchor="end">%s</text>`, labelW-8, y+13, html.EscapeString(br.system))
			w(`<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, labelW, y+3, max(bw, 1), rowH-5, colour)
			w(`<text x="%d" y="%d">%.2f</text>`, labelW+max(bw, 1)+4, y+13, br.ratio)
			y += rowH
		}
		w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-dasharray="3,2"/>`, x1, top, x1, y)
		y += gap
	}
	w(`</svg>`)
	return s.String()
}

// fitChartName is the file of g's memory chart.
func fitChartName(g group) string {
	return "idle-" + strings.NewReplacer(" ", "-", ",", "", "/", "-").Replace(g.variant) + ".svg"
}

// fitSVG draws memory against idle connections for g's rows that have a
// fit: each repetition's points and the fitted line, from no connections to
// the largest count. Empty when no row has a fit.
func fitSVG(g group) string {
	const (
		width, height = 760, 340
		left, right   = 70, 210
		top, bottom   = 40, 45
		plotW, plotH  = width - left - right, height - top - bottom
	)
	var rows []Row
	maxN, maxMiB := 0.0, 0.0
	for _, row := range g.rows {
		f := row.Fit
		if f == nil {
			continue
		}
		rows = append(rows, row)
		for _, p := range f.Points {
			maxN = math.Max(maxN, float64(p.Conns))
			maxMiB = math.Max(maxMiB, float64(p.PssKiB)/1024)
		}
	}
	if len(rows) == 0 || maxN == 0 || maxMiB == 0 {
		return ""
	}
	for _, row := range rows {
		maxMiB = math.Max(maxMiB, (row.Fit.FixedBytes+row.Fit.BytesPerConn*maxN)/(1<<20))
	}
	maxMiB *= 1.1
	x := func(n float64) float64 { return left + n/maxN*plotW }
	y := func(mib float64) float64 { return top + plotH - math.Max(mib, 0)/maxMiB*plotH }

	var s strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&s, format+"\n", a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>`)
	w(`<text x="10" y="22" font-size="15" font-weight="bold">%s: memory (Pss, MiB) against idle connections, and the fit</text>`,
		html.EscapeString(g.sc.name+" / "+g.variant))
	w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`, left, top+plotH, left+plotW, top+plotH)
	w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`, left, top, left, top+plotH)
	var ticks []int
	for _, row := range rows {
		for _, p := range row.Fit.Points {
			if !slices.Contains(ticks, p.Conns) {
				ticks = append(ticks, p.Conns)
			}
		}
	}
	for _, n := range append(ticks, 0) {
		w(`<text x="%.1f" y="%d" text-anchor="middle">%d</text>`, x(float64(n)), top+plotH+16, n)
	}
	w(`<text x="%d" y="%d" text-anchor="middle">idle connections</text>`, left+plotW/2, height-8)
	for i := 0; i <= 4; i++ {
		mib := maxMiB * float64(i) / 4
		w(`<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`, left-6, y(mib)+4, mib)
		w(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, left, y(mib), left+plotW, y(mib))
	}
	for i, row := range rows {
		f, colour := row.Fit, systemColours[row.System]
		w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`,
			x(0), y(f.FixedBytes/(1<<20)), x(maxN), y((f.FixedBytes+f.BytesPerConn*maxN)/(1<<20)), colour)
		for _, p := range f.Points {
			w(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(float64(p.Conns)), y(float64(p.PssKiB)/1024), colour)
		}
		ly := top + 10 + i*34
		w(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`, left+plotW+14, ly-10, colour)
		w(`<text x="%d" y="%d">%s</text>`, left+plotW+32, ly, html.EscapeString(row.System))
		w(`<text x="%d" y="%d" font-size="11">%s bytes/conn, R² %.3f</text>`, left+plotW+32, ly+14, commas(int64(math.Round(f.BytesPerConn))), f.R2)
	}
	w(`</svg>`)
	return s.String()
}
