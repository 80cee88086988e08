package main

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// latencySVG draws two panels: on the left, each row's latency by
// percentile (the HdrHistogram picture, percentiles spread on a log scale of
// 1/(1-p)); on the right, p50, p99 and p99.9 of the open-loop steps against
// the rate offered, with the 2 ms target. Both latency axes are logarithmic.
func latencySVG(rep report) string {
	const width, height = 1000, 440
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)

	// One latency range for both panels, so they read alike.
	lo, hi := math.Inf(1), 0.0
	for _, r := range rep.rows {
		for _, p := range r.curve {
			v := ms(p.lat)
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 0.1, 10
	}
	hi = math.Max(hi, 2) // the 2 ms target stays in view
	y := logAxis{lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi)))}

	// Left panel: latency by percentile.
	left := panel{x0: 70, y0: 40, w: 400, h: 330}
	pctX := func(p float64) float64 { return -math.Log10(1 - p/100) } // 50% -> 0.3, 99.99% -> 4
	xlo, xhi := pctX(50), pctX(99.99)
	left.frame(&b, "Latency by percentile", "percentile", "latency (ms)")
	for _, p := range []float64{50, 90, 99, 99.9, 99.99} {
		x := left.x0 + left.w*(pctX(p)-xlo)/(xhi-xlo)
		left.vtick(&b, x, strconv.FormatFloat(p, 'f', -1, 64)+"%")
	}
	y.ticks(&b, left)
	for i, r := range rep.rows {
		var pts []string
		for _, p := range r.curve {
			if p.lat <= 0 {
				continue
			}
			x := left.x0 + left.w*(pctX(p.pct)-xlo)/(xhi-xlo)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y.pos(left, ms(p.lat))))
		}
		dash := ""
		if r.offered == 0 {
			dash = ` stroke-dasharray="6 3"` // closed loop: not an offered rate
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n",
			palette[i%len(palette)], dash, strings.Join(pts, " "))
	}
	// The legend goes over the lines, on a white ground.
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="215" height="%d" fill="white" fill-opacity="0.9" stroke="#ccc"/>`+"\n",
		left.x0+4, left.y0+2, 16*len(rep.rows)+6)
	for i, r := range rep.rows {
		dash := ""
		if r.offered == 0 {
			dash = ` stroke-dasharray="6 3"`
		}
		ly := left.y0 + 16 + 16*float64(i)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/>`+"\n",
			left.x0+10, ly-4, left.x0+30, ly-4, palette[i%len(palette)], dash)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", left.x0+35, ly, html.EscapeString(legend(r)))
	}

	// Right panel: latency against the offered rate.
	right := panel{x0: 570, y0: 40, w: 400, h: 330}
	right.frame(&b, "Open loop: latency against offered rate (row c)", "offered rate (requests/s)", "latency (ms)")
	y.ticks(&b, right)
	var open []row
	maxRate := 0.0
	for _, r := range rep.rows {
		if strings.HasPrefix(r.id, "c-") && r.offered > 0 {
			open = append(open, r)
		}
		if r.id == "c-max" {
			maxRate = r.rate
		}
	}
	xmax := maxRate
	for _, r := range open {
		xmax = math.Max(xmax, r.offered)
	}
	if xmax == 0 {
		xmax = 1
	}
	xmax *= 1.05
	rx := func(v float64) float64 { return right.x0 + right.w*v/xmax }
	for _, t := range niceTicks(xmax) {
		right.vtick(&b, rx(t), thousands(t))
	}
	target := y.pos(right, 2)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#c00" stroke-dasharray="4 4"/>`+"\n",
		right.x0, target, right.x0+right.w, target)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="#c00" text-anchor="end">2 ms target</text>`+"\n", right.x0+right.w-4, target-4)
	if maxRate > 0 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#888" stroke-dasharray="2 3"/>`+"\n",
			rx(maxRate), right.y0, rx(maxRate), right.y0+right.h)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" fill="#555" text-anchor="end">closed-loop max</text>`+"\n", rx(maxRate)-4, right.y0+14)
	}
	for i, s := range []struct {
		name string
		get  func(row) float64
	}{{"p50", func(r row) float64 { return r.p50 }}, {"p99", func(r row) float64 { return r.p99 }}, {"p99.9", func(r row) float64 { return r.p999 }}} {
		var pts []string
		for _, r := range open {
			if v := s.get(r); v > 0 {
				px, py := rx(r.offered), y.pos(right, v)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px, py, palette[i])
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", palette[i], strings.Join(pts, " "))
	}
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="80" height="56" fill="white" fill-opacity="0.9" stroke="#ccc"/>`+"\n", right.x0+4, right.y0+2)
	for i, name := range []string{"p50", "p99", "p99.9"} {
		ly := right.y0 + 16 + 16*float64(i)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"/>`+"\n",
			right.x0+10, ly-4, right.x0+30, ly-4, palette[i])
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", right.x0+35, ly, name)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">%s</text>`+"\n", 70, height-8,
		html.EscapeString(fmt.Sprintf("limiterbench %s · %s · dashed: closed loop", rep.when.Format("2006-01-02"), strings.Join(rep.cfg.args, " "))))
	b.WriteString("</svg>\n")
	return b.String()
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

func legend(r row) string {
	if r.offered > 0 {
		return fmt.Sprintf("%s: %s/s offered", r.id, thousands(r.offered))
	}
	return fmt.Sprintf("%s: %s/s", r.id, thousands(r.rate))
}

type panel struct{ x0, y0, w, h float64 }

func (p panel) frame(b *strings.Builder, title, xlabel, ylabel string) {
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", p.x0, p.y0, p.w, p.h)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14" font-weight="bold">%s</text>`+"\n", p.x0, p.y0-12, html.EscapeString(title))
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", p.x0+p.w/2, p.y0+p.h+34, html.EscapeString(xlabel))
	fmt.Fprintf(b, `<text transform="translate(%.0f %.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", p.x0-48, p.y0+p.h/2, html.EscapeString(ylabel))
}

func (p panel) vtick(b *strings.Builder, x float64, label string) {
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", x, p.y0, x, p.y0+p.h)
	fmt.Fprintf(b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x, p.y0+p.h+16, html.EscapeString(label))
}

// logAxis is a logarithmic latency axis from lo to hi milliseconds.
type logAxis struct{ lo, hi float64 }

func (a logAxis) pos(p panel, v float64) float64 {
	v = math.Min(math.Max(v, a.lo), a.hi)
	return p.y0 + p.h - p.h*(math.Log10(v)-math.Log10(a.lo))/(math.Log10(a.hi)-math.Log10(a.lo))
}

func (a logAxis) ticks(b *strings.Builder, p panel) {
	for decade := a.lo; decade <= a.hi*1.0001; decade *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := decade * m
			if v > a.hi*1.0001 {
				break
			}
			y := a.pos(p, v)
			fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", p.x0, y, p.x0+p.w, y)
			fmt.Fprintf(b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", p.x0-6, y+4, strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
}

// niceTicks returns about five round values from 0 to max.
func niceTicks(maxV float64) []float64 {
	step := math.Pow(10, math.Floor(math.Log10(maxV/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if maxV/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var out []float64
	for v := 0.0; v <= maxV; v += step {
		out = append(out, v)
	}
	return out
}
