package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// scalingPlot draws acq/s against workers for curve table t, one line per
// row; it returns nil if nothing was measured.
func scalingPlot(rs *Results, t Table) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = t.Curve.Title
	p.X.Label.Text = "workers (goroutines)"
	p.Y.Label.Text = "acquisitions per second (median)"
	p.X.Scale = plot.LogScale{}
	p.Y.Scale = plot.LogScale{}
	var ticks []plot.Tick
	for _, w := range scalingWorkers {
		ticks = append(ticks, plot.Tick{Value: float64(w), Label: strconv.Itoa(w)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Tick.Marker = humanTicks{}
	p.Legend.Top = true
	p.Legend.Left = false
	drawn := false
	ymin, ymax := math.Inf(1), 0.0
	for i, r := range t.Rows {
		var xys plotter.XYs
		for j, w := range scalingWorkers {
			s, ok := r.Cell(rs, t.Cols[j])
			if ok && s.Median > 0 {
				xys = append(xys, plotter.XY{X: float64(w), Y: s.Median})
				ymin, ymax = min(ymin, s.Median), max(ymax, s.Median)
			}
		}
		if len(xys) == 0 {
			continue
		}
		drawn = true
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		label := shorten(r.Label, 50)
		if r.Caesura {
			l.Width = vg.Points(2.5)
			label = "* " + label
		}
		pts.Color = plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(label, l, pts)
	}
	if !drawn {
		return nil, nil
	}
	p.Add(plotter.NewGrid())
	// Fixed x range, and a y range of at least a decade: a log axis of one
	// point would have no extent.
	p.X.Min, p.X.Max = float64(scalingWorkers[0]), float64(scalingWorkers[len(scalingWorkers)-1])
	p.Y.Min = min(ymin, ymax/10)
	p.Y.Max = ymax * 30 // room for the legend above the lines
	return p, nil
}

// humanTicks are log ticks labelled 10k, 1M, ...
type humanTicks struct{}

func (humanTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.LogTicks{Prec: -1}.Ticks(min, max)
	for i := range ts {
		switch v := ts[i].Value; {
		case ts[i].Label == "":
		case v < 1:
			ts[i].Label = strconv.FormatFloat(v, 'g', -1, 64)
		default:
			ts[i].Label = fmtNum(v)
		}
	}
	return ts
}

func plural(n int) string {
	if n == 1 {
		return "one key"
	}
	return fmt.Sprintf("%d keys (random)", n)
}

// handoffPoint is one mechanism's hand-off latency, in µs.
type handoffPoint struct {
	label    string
	p50, p99 float64
	caesura  bool
}

// handoffPoints collects the hand-off rows of every class.
func handoffPoints(rs *Results) []handoffPoint {
	var out []handoffPoint
	for _, t := range reportTables(rs) {
		if t.NoChart {
			continue
		}
		var c50, c99 *Col
		for i, c := range t.Cols {
			switch {
			case strings.HasPrefix(c.Head, "hand-off p50"):
				c50 = &t.Cols[i]
			case strings.HasPrefix(c.Head, "hand-off p99"):
				c99 = &t.Cols[i]
			}
		}
		if c50 == nil || c99 == nil {
			continue
		}
		k := 1.0
		if strings.HasSuffix(c50.Head, "ms") {
			k = 1e3
		}
		for _, r := range t.Rows {
			s50, ok1 := r.Cell(rs, *c50)
			s99, ok2 := r.Cell(rs, *c99)
			if !ok1 || !ok2 || s50.Median <= 0 || s99.Median <= 0 {
				continue
			}
			cls := strings.Fields(t.Class)[0]
			out = append(out, handoffPoint{label: cls + ": " + r.Label, p50: s50.Median * k, p99: s99.Median * k, caesura: r.Caesura})
		}
	}
	return out
}

// handoffPlot draws p50 and p99 hand-off per mechanism, log scale.
func handoffPlot(rs *Results) (*plot.Plot, int, error) {
	pts := handoffPoints(rs)
	var rows []dotRow
	for _, h := range pts {
		rows = append(rows, dotRow{label: h.label, caesura: h.caesura, vals: []float64{h.p50, h.p99}})
	}
	return dotPlot("Hand-off latency: release by one holder to acquisition by the next (8 workers; * caesura)",
		"µs (log scale; median over rounds)", []string{"p50", "p99"}, rows)
}

// uncontendedPoints collects the first ranking measure of every
// "Uncontended" table, in µs.
func uncontendedPoints(rs *Results) []dotRow {
	var out []dotRow
	for _, t := range reportTables(rs) {
		if !strings.HasPrefix(t.Title, "Uncontended") {
			continue
		}
		c := t.Cols[0]
		k := 1.0
		switch c.Head {
		case "ns/op":
			k = 1e-3
		case "ms":
			k = 1e3
		}
		for _, r := range t.Rows {
			s, ok := r.Cell(rs, c)
			if !ok || s.Median <= 0 {
				continue
			}
			out = append(out, dotRow{label: strings.Fields(t.Class)[0] + ": " + r.Label, caesura: r.Caesura,
				vals: []float64{s.Median * k, s.Min * k, s.Max * k}})
		}
	}
	return out
}

// dotRow is one line of a dot plot: one value per series.
type dotRow struct {
	label   string
	caesura bool
	vals    []float64
}

var dotStyles = []struct {
	shape draw.GlyphDrawer
	color color.RGBA
}{
	{draw.CircleGlyph{}, color.RGBA{R: 31, G: 119, B: 180, A: 255}},
	{draw.TriangleGlyph{}, color.RGBA{R: 214, G: 39, B: 40, A: 255}},
	{draw.RingGlyph{}, color.RGBA{R: 127, G: 127, B: 127, A: 255}},
}

// dotPlot draws one row per mechanism and one glyph per series on a log x
// axis; it returns the plot and its number of rows (nil if none).
func dotPlot(title, xlabel string, series []string, rows []dotRow) (*plot.Plot, int, error) {
	if len(rows) == 0 {
		return nil, 0, nil
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = humanTicks{}
	n := len(rows)
	labels := make([]string, n)
	xys := make([]plotter.XYs, len(series))
	for i, r := range rows {
		y := float64(n - 1 - i) // first row at the top
		l := shorten(r.label, 60)
		if r.caesura {
			l = "* " + l
		}
		labels[n-1-i] = l
		for j := range series {
			if j < len(r.vals) && r.vals[j] > 0 {
				xys[j] = append(xys[j], plotter.XY{X: r.vals[j], Y: y})
			}
		}
	}
	p.NominalY(labels...)
	p.Add(plotter.NewGrid())
	for j, name := range series {
		sc, err := plotter.NewScatter(xys[j])
		if err != nil {
			return nil, 0, err
		}
		st := dotStyles[j%len(dotStyles)]
		sc.Shape, sc.Color, sc.Radius = st.shape, st.color, vg.Points(4)
		if j > 0 && len(series) == 3 { // median, min, max: small grey range marks
			sc.Shape, sc.Color, sc.Radius = draw.RingGlyph{}, dotStyles[2].color, vg.Points(2.5)
		}
		p.Add(sc)
		if j < 2 || len(series) != 3 {
			if len(series) == 3 && j == 1 {
				name = "min and max over rounds"
			}
			p.Legend.Add(name, sc)
		}
	}
	p.Y.Max = float64(n) + 0.2 // an empty band at the top for the legend
	p.Legend.Top = true
	return p, n, nil
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// saveSVG writes p as SVG.
func saveSVG(p *plot.Plot, w, h vg.Length, path string) error {
	c := vgsvg.New(w, h)
	p.Draw(draw.New(c))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteCharts draws every chart into dir and returns the file names
// written.
func WriteCharts(rs *Results, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, t := range reportTables(rs) {
		if t.Curve == nil {
			continue
		}
		p, err := scalingPlot(rs, t)
		if err != nil {
			return nil, err
		}
		if p == nil {
			continue
		}
		if err := saveSVG(p, 7*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, t.Curve.Chart)); err != nil {
			return nil, err
		}
		files = append(files, t.Curve.Chart)
	}
	p, n, err := handoffPlot(rs)
	if err != nil {
		return nil, err
	}
	if p != nil {
		h := vg.Length(n+1)*0.28*vg.Inch + 1.5*vg.Inch
		if err := saveSVG(p, 9*vg.Inch, h, filepath.Join(dir, "handoff.svg")); err != nil {
			return nil, err
		}
		files = append(files, "handoff.svg")
	}
	p, n, err = dotPlot("Uncontended acquire + release, one goroutine (* caesura)", "µs per acquire + release (log scale; median over rounds)",
		[]string{"median", "min", "max"}, uncontendedPoints(rs))
	if err != nil {
		return nil, err
	}
	if p != nil {
		h := vg.Length(n+1)*0.28*vg.Inch + 1.5*vg.Inch
		if err := saveSVG(p, 9*vg.Inch, h, filepath.Join(dir, "uncontended.svg")); err != nil {
			return nil, err
		}
		files = append(files, "uncontended.svg")
	}
	return files, nil
}
