package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	ucli "github.com/urfave/cli/v2"
)

// formatFlag is --format for commands with both a table and a JSON form.
func formatFlag() *ucli.StringFlag {
	return &ucli.StringFlag{Name: "format", Value: "table", Usage: "output format: table or json"}
}

// wantJSON reads --format; anything but table or json is a usage error.
func wantJSON(c *ucli.Context) (bool, error) {
	switch f := c.String("format"); f {
	case "table", "text":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, usageErrorf(c, "--format %q: want table or json", f)
	}
}

// writeJSON writes v as indented JSON; the shapes are documented in the README and kept stable.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table aligns columns separated by tabs; Flush writes it.
func table(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// humanBytes writes a byte count in binary units with at most one decimal: "512 B", "1.5 GiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	i := -1
	for (v >= unit || v <= -unit) && i < 5 {
		v /= unit
		i++
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTPE"[i]) + "iB"
}

// ago says how long before now t was, to the largest whole unit ("3 minutes ago").
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	plural := func(n int64, unit string) string { return count(n, unit) + " ago" }
	switch {
	case d < time.Minute:
		return plural(int64(d/time.Second), "second")
	case d < time.Hour:
		return plural(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int64(d/time.Hour), "hour")
	default:
		return plural(int64(d/(24*time.Hour)), "day")
	}
}

// timestamp is t in RFC 3339 (UTC, seconds) followed by how long ago it was.
func timestamp(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339) + " (" + ago(t, now) + ")"
}

// count is "1 file", "2 files".
func count(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// orDash keeps empty table cells visible.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
