package main

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
)

// plotSeries is one column of the failover plot.
type plotSeries struct {
	label  string    // a short number; the legend lives in BENCHMARKS.md
	values []float64 // milliseconds
	target float64   // 0: none
}

var (
	colWhite  = color.RGBA{255, 255, 255, 255}
	colAxis   = color.RGBA{40, 40, 40, 255}
	colGrid   = color.RGBA{225, 225, 225, 255}
	colDot    = color.RGBA{31, 119, 180, 200}
	colMedian = color.RGBA{0, 0, 0, 255}
	colP99    = color.RGBA{214, 39, 40, 255}
	colTarget = color.RGBA{255, 127, 14, 255}
)

// Plot geometry: a log-scale y axis from 1 ms to 100 s.
const (
	plotW, plotH             = 960, 520
	marginL, marginR         = 80, 20
	marginT, marginB         = 20, 50
	yMinMS, yMaxMS   float64 = 1, 100_000
)

// writePlot draws a strip plot of every trial's gap per case (dots), the
// median (black bar), the p99 (red bar) and the target (orange dashes),
// on a log scale, and writes it as a PNG.
func writePlot(path string, series []plotSeries) error {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fill(img, img.Bounds(), colWhite)
	x0, x1 := marginL, plotW-marginR
	y0, y1 := marginT, plotH-marginB
	yOf := func(ms float64) int {
		ms = math.Min(math.Max(ms, yMinMS), yMaxMS)
		f := (math.Log10(ms) - math.Log10(yMinMS)) / (math.Log10(yMaxMS) - math.Log10(yMinMS))
		return y1 - int(f*float64(y1-y0))
	}
	// Grid and y labels at every decade, minor lines at 2 and 5.
	for dec := yMinMS; dec <= yMaxMS; dec *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := dec * m
			if v > yMaxMS {
				break
			}
			y := yOf(v)
			c := colGrid
			if m == 1 {
				c = color.RGBA{190, 190, 190, 255}
			}
			hline(img, x0, x1, y, c)
			if m == 1 || m == 5 {
				label := msLabel(v)
				drawText(img, x0-8-textWidth(label, 2), y-5, label, 2, colAxis)
			}
		}
	}
	// Axes.
	vline(img, x0, y0, y1, colAxis)
	hline(img, x0, x1, y1, colAxis)
	if len(series) == 0 {
		return save(path, img)
	}
	colW := (x1 - x0) / len(series)
	for i, s := range series {
		cx := x0 + colW*i + colW/2
		drawText(img, cx-textWidth(s.label, 2)/2, y1+14, s.label, 2, colAxis)
		half := min(colW/3, 60)
		if s.target > 0 {
			y := yOf(s.target)
			for x := cx - half - 6; x <= cx+half+6; x += 6 {
				hline(img, x, min(x+3, cx+half+6), y, colTarget)
				hline(img, x, min(x+3, cx+half+6), y+1, colTarget)
			}
		}
		if len(s.values) > 0 {
			p50, p99 := percentile(s.values, 50), percentile(s.values, 99)
			for d := -1; d <= 1; d++ {
				hline(img, cx-half, cx+half, yOf(p50)+d, colMedian)
			}
			for d := -1; d <= 1; d++ {
				hline(img, cx-half/2, cx+half/2, yOf(p99)+d, colP99)
			}
		}
		for j, v := range s.values {
			// Deterministic jitter so the dots of equal values spread.
			jit := int((float64((j*7919)%97)/96 - 0.5) * float64(half) * 1.4)
			dot(img, cx+jit, yOf(v), 3, colDot)
		}
	}
	return save(path, img)
}

func save(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func msLabel(v float64) string {
	if v >= 1000 {
		return trimFloat(v/1000) + "s"
	}
	return trimFloat(v) + "ms"
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.Set(x, y, c)
		}
	}
}

func hline(img *image.RGBA, xa, xb, y int, c color.Color) {
	for x := xa; x <= xb; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, ya, yb int, c color.Color) {
	for y := ya; y <= yb; y++ {
		img.Set(x, y, c)
	}
}

func dot(img *image.RGBA, cx, cy, r int, c color.RGBA) {
	for y := -r; y <= r; y++ {
		for x := -r; x <= r; x++ {
			if x*x+y*y <= r*r {
				img.Set(cx+x, cy+y, c)
			}
		}
	}
}

// A 3x5 bitmap font for the few characters the axis labels need.
var glyphs = map[rune][5]string{
	'0': {"111", "101", "101", "101", "111"},
	'1': {"010", "110", "010", "010", "111"},
	'2': {"111", "001", "111", "100", "111"},
	'3': {"111", "001", "111", "001", "111"},
	'4': {"101", "101", "111", "001", "001"},
	'5': {"111", "100", "111", "001", "111"},
	'6': {"111", "100", "111", "101", "111"},
	'7': {"111", "001", "010", "010", "010"},
	'8': {"111", "101", "111", "101", "111"},
	'9': {"111", "101", "111", "001", "111"},
	'.': {"000", "000", "000", "000", "010"},
	'm': {"000", "000", "111", "111", "101"},
	's': {"000", "011", "110", "011", "110"},
	'#': {"101", "111", "101", "111", "101"},
	'-': {"000", "000", "111", "000", "000"},
}

func textWidth(s string, scale int) int { return len([]rune(s)) * 4 * scale }

func drawText(img *image.RGBA, x, y int, s string, scale int, c color.Color) {
	for _, r := range s {
		g, ok := glyphs[r]
		if ok {
			for row := range 5 {
				for col := range 3 {
					if g[row][col] == '1' {
						for dy := range scale {
							for dx := range scale {
								img.Set(x+col*scale+dx, y+row*scale+dy, c)
							}
						}
					}
				}
			}
		}
		x += 4 * scale
	}
}
