package bench

import (
	"fmt"
	"html"
	"io"
	"text/template"
)

// palette gives each target its colour, in target order.
var palette = [...]string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"}

const (
	svgWidth   = 1000
	svgBarX    = 250
	svgBarMax  = 480
	svgBarH    = 14
	svgBarGap  = 3
	svgGroupSp = 12
)

var svgTemplate = template.Must(template.New("svg").Funcs(template.FuncMap{"esc": html.EscapeString}).Parse(
	`<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="22" font-size="16" font-weight="bold">{{esc .Title}}</text>
<text x="10" y="40" fill="#555555">{{esc .Subtitle}}</text>
{{range .Legend}}<rect x="{{.X}}" y="52" width="12" height="12" fill="{{.Color}}"/><text x="{{.TX}}" y="62">{{esc .Name}}</text>
{{end}}{{range .Groups}}<text x="10" y="{{.TY}}">{{esc .Title}}</text>
{{range .Bars}}<rect x="{{$.BarX}}" y="{{.Y}}" width="{{printf "%.1f" .W}}" height="{{$.BarH}}" fill="{{.Color}}"><title>{{esc .Tip}}</title></rect><text x="{{printf "%.1f" .LX}}" y="{{.LY}}" font-size="11">{{esc .Label}}</text>
{{end}}{{end}}{{range .Notes}}<text x="10" y="{{.Y}}" font-size="11">{{esc .Text}}</text>
{{end}}</svg>
`))

type svgLegend struct {
	X, TX       int
	Color, Name string
}

type svgBar struct {
	Y, LY             int
	W, LX             float64
	Color, Label, Tip string
}

type svgGroup struct {
	TY    int
	Title string
	Bars  []svgBar
}

type svgNote struct {
	Y    int
	Text string
}

type svgView struct {
	W, H, BarX, BarH int
	Title, Subtitle  string
	Legend           []svgLegend
	Groups           []svgGroup
	Notes            []svgNote
}

// WriteSVG draws one group of bars per workload, one colour per target. Within a group the best
// figure spans the full width (for latencies the shortest is best), and each bar is labelled with
// its value and its ratio to native.
func (r *Report) WriteSVG(w io.Writer) error {
	v := svgView{W: svgWidth, BarX: svgBarX, BarH: svgBarH,
		Title:    "fusevol benchmark: bar length = relative speed within each workload (longer is better)",
		Subtitle: fmt.Sprintf("%s, %d CPUs, Linux %s, median of %d repetition(s)", r.Meta.Started.Format("2006-01-02 15:04 MST"), r.Meta.CPUs, r.Meta.Kernel, r.Meta.Config.Reps)}
	color := map[string]string{}
	x := 10
	for i, t := range r.Targets {
		color[t] = palette[i%len(palette)]
		v.Legend = append(v.Legend, svgLegend{X: x, TX: x + 16, Color: color[t], Name: t})
		x += 24 + 8*len(t)
	}
	y := 80
	for _, wl := range r.Workloads {
		if wl.FusevolOnly || len(wl.Values) == 0 {
			continue
		}
		best := 0.0
		for _, val := range wl.Values {
			best = max(best, speed(wl, val))
		}
		g := svgGroup{TY: y + svgBarH, Title: fmt.Sprintf("%s (%s)", wl.Title, wl.Unit)}
		for _, t := range r.Targets {
			val, ok := wl.Values[t]
			if !ok {
				continue
			}
			frac := 0.0
			if best > 0 {
				frac = speed(wl, val) / best
			}
			label := fmt.Sprintf("%s %s", formatValue(val), wl.Unit)
			if rn, ok := wl.VsNative[t]; ok && t != TargetNative {
				label += fmt.Sprintf("  (%.2f× native)", rn)
			}
			bw := max(1, frac*svgBarMax)
			g.Bars = append(g.Bars, svgBar{Y: y, LY: y + svgBarH - 3, W: bw, LX: float64(svgBarX) + bw + 6,
				Color: color[t], Label: label, Tip: t + ": " + label})
			y += svgBarH + svgBarGap
		}
		v.Groups = append(v.Groups, g)
		y += svgGroupSp
	}
	y += 8
	v.Notes = append(v.Notes, svgNote{Y: y, Text: "fusevol only:"})
	for _, wl := range r.Workloads {
		if !wl.FusevolOnly {
			continue
		}
		y += 16
		text := wl.Title + ": not measured"
		if val, ok := wl.Values[TargetFusevol]; ok {
			text = fmt.Sprintf("%s: %s %s", wl.Title, formatValue(val), wl.Unit)
		}
		v.Notes = append(v.Notes, svgNote{Y: y, Text: text})
	}
	v.H = y + 16
	return svgTemplate.Execute(w, v)
}

// speed orients a figure so that larger is better.
func speed(wl Workload, v float64) float64 {
	if !wl.Lower {
		return v
	}
	if v <= 0 {
		return 0
	}
	return 1 / v
}
