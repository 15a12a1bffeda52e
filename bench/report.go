package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Report is everything one run measured; it is what results.json holds.
type Report struct {
	Meta      Meta         `json:"meta"`
	Targets   []string     `json:"targets"`
	Workloads []Workload   `json:"workloads"`
	Goals     []GoalResult `json:"goals"`
	// Histograms are latency distributions of the workloads that make one (the fsync soak).
	Histograms []Histogram `json:"histograms,omitempty"`
}

// Meta says where, when and how the figures were made.
type Meta struct {
	Started       time.Time `json:"started"`
	Seconds       float64   `json:"seconds"`
	Command       string    `json:"command,omitempty"`
	Host          string    `json:"host"`
	Kernel        string    `json:"kernel"`
	GoVersion     string    `json:"go_version"`
	CPUs          int       `json:"cpus"`
	CachesDropped bool      `json:"caches_dropped"`
	Config        Config    `json:"config"`
	Warnings      []string  `json:"warnings,omitempty"`
}

// Failures lists "target/metric: error" for every figure that could not be measured.
func (r *Report) Failures() []string {
	var out []string
	for _, w := range r.Workloads {
		for t, e := range w.Errors {
			out = append(out, fmt.Sprintf("%s/%s: %s", t, w.ID, e))
		}
	}
	sort.Strings(out)
	return out
}

func (r *Report) writeOutputs(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", JSONFile, err)
	}
	var svg, md bytes.Buffer
	if err := r.WriteSVG(&svg); err != nil {
		return fmt.Errorf("render %s: %w", SVGFile, err)
	}
	r.WriteMarkdown(&md)
	for name, data := range map[string][]byte{JSONFile: append(js, '\n'), SVGFile: svg.Bytes(), MarkdownFile: md.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// WriteMarkdown writes the command, the table and the goals, ready to paste into the README.
func (r *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "Measured %s on %s (Linux %s, %d CPUs, %s), caches dropped: %v.\n\n",
		r.Meta.Started.Format(time.RFC3339), r.Meta.Host, r.Meta.Kernel, r.Meta.CPUs, r.Meta.GoVersion, r.Meta.CachesDropped)
	if r.Meta.Command != "" {
		fmt.Fprintf(w, "Command: `%s`\n\n", r.Meta.Command)
	}
	r.WriteTable(w)
	fmt.Fprintln(w)
	fmt.Fprintln(w, markdownNotes)
	fmt.Fprintln(w)
	for _, h := range r.Histograms {
		h.WriteMarkdown(w)
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "```")
	r.WriteGoals(w)
	fmt.Fprintln(w, "```")
}

const markdownNotes = `Each figure is the median of the repetitions (peak RSS: the maximum). "X vs native" and
"X vs loopback" are ratios oriented so that above 1× means better than the reference (for
latencies, the reference's latency divided by X's). "Cold" means the kernel's page, dentry and
inode caches were dropped first; the fusevol daemon's own chunk and Badger caches were not.
The loopback target is go-fuse's loopback filesystem with the same transport settings as fusevol
(1 MiB writes and read-ahead). Data is incompressible and never repeats, except in the
compressible and dedup workloads. The SQLite and pgbench figures come from fewer repetitions
(see db_reps in results.json); fsync latencies are fio's (fsync alone, not the write before it),
the soak's those of the harness's own loop (fsync alone too).`

// WriteTable writes an aligned (Markdown) table: one row per figure, each target's value, then
// every target's ratio to native and to loopback (above 1 means better than the reference).
func (r *Report) WriteTable(w io.Writer) {
	header := []string{"workload", "unit"}
	header = append(header, r.Targets...)
	type ratioCol struct{ target, ref string }
	var cols []ratioCol
	for _, ref := range []string{TargetNative, TargetLoopback} {
		if !r.has(ref) {
			continue
		}
		for _, t := range r.Targets {
			if t != TargetNative && t != ref {
				cols = append(cols, ratioCol{t, ref})
				header = append(header, t+" vs "+ref)
			}
		}
	}
	rows := [][]string{header}
	for _, wl := range r.Workloads {
		if wl.FusevolOnly && !r.has(TargetFusevol) {
			continue
		}
		row := []string{wl.Title, wl.Unit}
		for _, t := range r.Targets {
			row = append(row, r.cell(wl, t))
		}
		for _, c := range cols {
			ratios := wl.VsNative
			if c.ref == TargetLoopback {
				ratios = wl.VsLoopback
			}
			if v, ok := ratios[c.target]; ok {
				row = append(row, fmt.Sprintf("%.2f×", v))
			} else {
				row = append(row, "–")
			}
		}
		rows = append(rows, row)
	}
	writeAligned(w, rows)
}

func (r *Report) has(target string) bool {
	for _, t := range r.Targets {
		if t == target {
			return true
		}
	}
	return false
}

func (r *Report) cell(wl Workload, t string) string {
	if _, failed := wl.Errors[t]; failed {
		return "ERROR"
	}
	if v, ok := wl.Values[t]; ok {
		return formatValue(v)
	}
	return "–"
}

// formatValue prints about three significant digits.
func formatValue(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func writeAligned(w io.Writer, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(row []string) {
		var sb strings.Builder
		sb.WriteString("|")
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i < 2 {
				sb.WriteString(" " + c + pad + " |")
			} else {
				sb.WriteString(" " + pad + c + " |")
			}
		}
		fmt.Fprintln(w, sb.String())
	}
	line(rows[0])
	var sep strings.Builder
	sep.WriteString("|")
	for i, n := range width {
		if i < 2 {
			sep.WriteString(strings.Repeat("-", n+2) + "|")
		} else {
			sep.WriteString(strings.Repeat("-", n+1) + ":|")
		}
	}
	fmt.Fprintln(w, sep.String())
	for _, row := range rows[1:] {
		line(row)
	}
}
