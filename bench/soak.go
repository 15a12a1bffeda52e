package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The fsync soak (issue 18): one writer overwrites random 4 KiB blocks of a large file and fsyncs
// after each, for SoakDuration (10 minutes in the full run). Every overwrite makes the chunk it
// lands in a new body and frees the old one, so the store has garbage to collect the whole time
// and background GC passes run under the writer. The figures are the fsync latency distribution
// (with a histogram in the report) and the fsyncs over 100 ms, split by whether a GC pass was
// or an intent-log checkpoint was running at that moment (from the daemon's "gc pass" and
// "intent log checkpoint" log lines), and the fsyncs that found the intent log full.

// Metric IDs of the soak.
const (
	MSoakOps      = "soak_ops"
	MSoakP50      = "soak_p50"
	MSoakP99      = "soak_p99"
	MSoakP999     = "soak_p999"
	MSoakMax      = "soak_max"
	MSoakTail     = "soak_p999_over_p50"
	MSoakSlow     = "soak_over_100ms"
	MSoakSlowGC   = "soak_over_100ms_in_gc"
	MSoakGCPass   = "soak_gc_passes"
	MSoakSlowCkpt = "soak_over_100ms_in_checkpoint"
	MSoakCkpts    = "soak_checkpoints"
	MSoakLogFull  = "soak_log_full"
	MSoakRefP50   = "soak_native_p50"
	MSoakRefP999  = "soak_native_p999"
	MSoakRefTail  = "soak_native_p999_over_p50"
	soakSlowMark  = 100 * time.Millisecond
)

func soakMetrics() []Metric {
	return []Metric{
		{ID: MSoakOps, Title: "soak: random 4 KiB overwrite+fsync", Unit: "ops/s", FusevolOnly: true, Once: true},
		{ID: MSoakP50, Title: "soak: fsync p50", Unit: "µs", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakP99, Title: "soak: fsync p99", Unit: "µs", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakP999, Title: "soak: fsync p99.9", Unit: "µs", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakMax, Title: "soak: fsync max", Unit: "ms", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakTail, Title: "soak: fsync p99.9 / p50", Unit: "x", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakSlow, Title: "soak: fsyncs over 100 ms", Unit: "count", Lower: true, FusevolOnly: true, Count: true, Once: true},
		{ID: MSoakSlowGC, Title: "soak: fsyncs over 100 ms during a GC pass", Unit: "count", Lower: true, FusevolOnly: true, Count: true, Once: true},
		{ID: MSoakGCPass, Title: "soak: GC passes of 10 ms or more", Unit: "count", FusevolOnly: true, Count: true, Once: true},
		{ID: MSoakSlowCkpt, Title: "soak: fsyncs over 100 ms during an intent-log checkpoint", Unit: "count", Lower: true, FusevolOnly: true, Count: true, Once: true},
		{ID: MSoakCkpts, Title: "soak: intent-log checkpoints", Unit: "count", FusevolOnly: true, Count: true, Once: true},
		{ID: MSoakLogFull, Title: "soak: fsyncs that found the intent log full", Unit: "count", Lower: true, FusevolOnly: true, Count: true, Once: true},
		{ID: MSoakRefP50, Title: "soak reference, native file: fsync p50", Unit: "µs", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakRefP999, Title: "soak reference, native file: fsync p99.9", Unit: "µs", Lower: true, FusevolOnly: true, Once: true},
		{ID: MSoakRefTail, Title: "soak reference, native file: p99.9 / p50", Unit: "x", Lower: true, FusevolOnly: true, Once: true},
	}
}

func soakIDs() []string {
	var ids []string
	for _, m := range soakMetrics() {
		ids = append(ids, m.ID)
	}
	return ids
}

// soakBounds are the histogram's bucket upper bounds, in µs (the last bucket is unbounded).
var soakBounds = []float64{100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6}

// Bucket is one histogram bar: samples with latency ≤ UpToUs (and above the previous bound);
// UpToUs is +Inf (encoded as 0 in JSON) for the last.
type Bucket struct {
	UpToUs float64 `json:"up_to_us"`
	Count  int     `json:"count"`
}

// Histogram is a latency distribution the report prints as a table.
type Histogram struct {
	Title   string   `json:"title"`
	Samples int      `json:"samples"`
	Buckets []Bucket `json:"buckets"`
}

// newHistogram buckets sorted latencies (µs) by soakBounds.
func newHistogram(title string, sorted []float64) Histogram {
	h := Histogram{Title: title, Samples: len(sorted)}
	i := 0
	for _, b := range append(slices.Clone(soakBounds), math.Inf(1)) {
		n := 0
		for i < len(sorted) && sorted[i] <= b {
			i, n = i+1, n+1
		}
		up := b
		if math.IsInf(b, 1) {
			up = 0
		}
		h.Buckets = append(h.Buckets, Bucket{UpToUs: up, Count: n})
	}
	return h
}

// soakSample is one fsync: when it started and how long it took.
type soakSample struct {
	at  time.Time
	lat time.Duration
}

// runSoak runs the soak in a volume of its own and records its figures and histogram, after a
// shorter run of the same loop on a file of the disk under the store: the disk's own fsync tail at
// that moment, the reference for the fusevol figures (these machines are shared and noisy).
func runSoak(ctx context.Context, e *env, t *fusevolTarget, rec recorder) error {
	if err := soakReference(ctx, e, filepath.Join(t.work, "soak-native.dat"), rec); err != nil {
		return err
	}
	dir := filepath.Join(t.work, "fv-soak")
	if err := t.newVolume(ctx, "soak", nil, dir); err != nil {
		return err
	}
	defer t.client.Unmount(context.WithoutCancel(ctx), dir)
	path := filepath.Join(dir, "soak.dat")
	if _, err := writeSeq(ctx, path, e.cfg.SoakSize, e.pools.randomSource(900)); err != nil {
		return fmt.Errorf("soak: fill %s: %w", path, err)
	}
	samples, err := soakLoop(ctx, path, e.cfg.SoakSize, e.cfg.SoakDuration, e.pools.randomSource(901))
	if err != nil {
		return err
	}
	work, err := readDaemonWork(t.logPath)
	if err != nil {
		return err
	}
	return recordSoak(e, samples, work, rec)
}

// soakReference runs the loop for a fifth of the soak's duration on a native file.
func soakReference(ctx context.Context, e *env, path string, rec recorder) error {
	defer os.Remove(path)
	if _, err := writeSeq(ctx, path, e.cfg.SoakSize, e.pools.randomSource(902)); err != nil {
		return fmt.Errorf("soak reference: fill %s: %w", path, err)
	}
	samples, err := soakLoop(ctx, path, e.cfg.SoakSize, e.cfg.SoakDuration/5, e.pools.randomSource(903))
	if err != nil {
		return err
	}
	lats := sortedLatencies(samples)
	p50, p999 := percentile(lats, 50), percentile(lats, 99.9)
	rec(MSoakRefP50, p50)
	rec(MSoakRefP999, p999)
	rec(MSoakRefTail, p999/p50)
	return nil
}

func sortedLatencies(samples []soakSample) []float64 {
	lats := make([]float64, len(samples))
	for i, s := range samples {
		lats[i] = float64(s.lat.Nanoseconds()) / 1000
	}
	slices.Sort(lats)
	return lats
}

// soakLoop overwrites random 4 KiB blocks of path and fsyncs each, until dur has passed.
func soakLoop(ctx context.Context, path string, size int64, dur time.Duration, src *source) ([]soakSample, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(size), 18))
	buf := make([]byte, blockSize)
	var out []soakSample
	for end := time.Now().Add(dur); len(out) < 3 || time.Now().Before(end); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		src.fill(buf)
		if _, err := f.WriteAt(buf, rng.Int64N(size/blockSize)*blockSize); err != nil {
			return nil, fmt.Errorf("soak: write %s: %w", path, err)
		}
		t0 := time.Now()
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("soak: fsync %s: %w", path, err)
		}
		out = append(out, soakSample{at: t0, lat: time.Since(t0)})
	}
	return out, nil
}

// span is a closed time interval.
type span struct{ from, to time.Time }

func (s span) overlaps(o span) bool { return !s.to.Before(o.from) && !o.to.Before(s.from) }

// daemonWork is what the daemon's log says it did in the background during the soak: GC passes
// and intent-log checkpoints (each line is written when the work ends, with how long it took),
// and the fsyncs that found the intent log full.
type daemonWork struct {
	gc, checkpoints []span
	logFull         int
}

var (
	tookLine    = regexp.MustCompile(`^time=(\S+) .*msg="([^"]+)".* took=(\S+)`)
	logFullAttr = regexp.MustCompile(` fsyncs_found_log_full=(\d+)`)
)

// readDaemonWork reads a daemon log (slog's text format).
func readDaemonWork(logPath string) (daemonWork, error) {
	var w daemonWork
	f, err := os.Open(logPath)
	if err != nil {
		return w, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := tookLine.FindStringSubmatch(sc.Text())
		if m == nil || (m[2] != "gc pass" && m[2] != "intent log checkpoint") {
			continue
		}
		end, err1 := time.Parse(time.RFC3339Nano, m[1])
		took, err2 := time.ParseDuration(m[3])
		if err1 != nil || err2 != nil {
			return w, fmt.Errorf("daemon log %s: unreadable %s line %q", logPath, m[2], sc.Text())
		}
		sp := span{end.Add(-took), end}
		if m[2] == "gc pass" {
			w.gc = append(w.gc, sp)
			continue
		}
		w.checkpoints = append(w.checkpoints, sp)
		if n := logFullAttr.FindStringSubmatch(sc.Text()); n != nil {
			k, _ := strconv.Atoi(n[1])
			w.logFull += k
		}
	}
	return w, sc.Err()
}

// within keeps the spans that overlap window.
func within(spans []span, window span) []span {
	return slices.DeleteFunc(slices.Clone(spans), func(p span) bool { return !p.overlaps(window) })
}

// recordSoak reports the soak's figures and histogram.
func recordSoak(e *env, samples []soakSample, work daemonWork, rec recorder) error {
	if len(samples) == 0 {
		return fmt.Errorf("soak: no fsync measured")
	}
	window := span{samples[0].at, samples[len(samples)-1].at.Add(samples[len(samples)-1].lat)}
	passes, ckpts := within(work.gc, window), within(work.checkpoints, window)
	slow, slowGC, slowCkpt := 0, 0, 0
	for _, s := range samples {
		if s.lat <= soakSlowMark {
			continue
		}
		slow++
		at := span{s.at, s.at.Add(s.lat)}
		if slices.ContainsFunc(passes, at.overlaps) {
			slowGC++
		}
		if slices.ContainsFunc(ckpts, at.overlaps) {
			slowCkpt++
		}
	}
	elapsed := window.to.Sub(window.from)
	lats := sortedLatencies(samples)
	p50, p999 := percentile(lats, 50), percentile(lats, 99.9)
	rec(MSoakOps, float64(len(samples))/max(elapsed.Seconds(), 1e-9))
	rec(MSoakP50, p50)
	rec(MSoakP99, percentile(lats, 99))
	rec(MSoakP999, p999)
	rec(MSoakMax, lats[len(lats)-1]/1000)
	rec(MSoakTail, p999/p50)
	rec(MSoakSlow, float64(slow))
	rec(MSoakSlowGC, float64(slowGC))
	rec(MSoakGCPass, float64(len(passes)))
	rec(MSoakSlowCkpt, float64(slowCkpt))
	rec(MSoakCkpts, float64(len(ckpts)))
	rec(MSoakLogFull, float64(work.logFull))
	if e.histogram != nil {
		e.histogram(newHistogram(fmt.Sprintf("fsync latency, %s soak of random 4 KiB overwrites in a %d MiB file",
			e.cfg.SoakDuration, e.cfg.SoakSize>>20), lats))
	}
	return nil
}

// WriteMarkdown writes the histogram as a table with a bar per bucket.
func (h Histogram) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "%s (%d samples):\n\n| latency | count | share | |\n|---|---:|---:|---|\n", h.Title, h.Samples)
	lo := 0.0
	for _, b := range h.Buckets {
		if b.Count == 0 {
			lo = b.UpToUs
			continue
		}
		label := fmt.Sprintf("%s – %s", usLabel(lo), usLabel(b.UpToUs))
		if b.UpToUs == 0 {
			label = "> " + usLabel(lo)
		}
		share := float64(b.Count) / float64(max(h.Samples, 1))
		bar := strings.Repeat("█", int(math.Ceil(share*40)))
		fmt.Fprintf(w, "| %s | %d | %.3f%% | %s |\n", label, b.Count, share*100, bar)
		lo = b.UpToUs
	}
}

func usLabel(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%g ms", us/1000)
	}
	return fmt.Sprintf("%g µs", us)
}
