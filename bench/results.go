package bench

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Metric is one figure a workload produces.
type Metric struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Unit  string `json:"unit"`
	// Lower marks figures where smaller is better (latencies, sizes); ratios are always
	// expressed so that above 1 means better than the reference.
	Lower bool `json:"lower_is_better"`
	// FusevolOnly figures are measured on the fusevol target alone.
	FusevolOnly bool `json:"fusevol_only"`
	// Peak figures aggregate repetitions with max instead of median.
	Peak bool `json:"peak,omitempty"`
	// Count figures count events (slow fsyncs, GC passes): 0 is a figure like any other.
	Count bool `json:"count,omitempty"`
	// Once figures come from one run of their workload, whatever the repetitions.
	Once bool `json:"once,omitempty"`
}

// Metric IDs of the workloads every target runs, in report order.
const (
	MSeqWrite       = "seq_write"
	MSeqReadCold    = "seq_read_cold"
	MSeqReadWarm    = "seq_read_warm"
	MRandReadCold   = "rand_read_cold"
	MRandReadWarm   = "rand_read_warm"
	MRandWrite      = "rand_write"
	MFsyncOps       = "fsync_loop"
	MFsyncP50       = "fsync_p50"
	MFsyncP99       = "fsync_p99"
	MFsync4One      = "fsync_4writers_1vol"
	MFsync4OneX     = "fsync_4writers_1vol_scaling"
	MFsync4Vols     = "fsync_4writers_4vols"
	MFsync4VolsX    = "fsync_4writers_4vols_scaling"
	MSmallCreate    = "small_create"
	MSmallStat      = "small_stat"
	MSmallReadCold  = "small_read_cold"
	MSmallUnlink    = "small_unlink"
	MReaddir        = "readdir"
	MUntar          = "untar"
	MRmRf           = "rm_rf"
	MCompressWrite  = "compress_write"
	MSQLiteWAL      = "sqlite_wal"
	MSQLiteRollback = "sqlite_rollback"
	MPgbenchTPS     = "pgbench_tps"
	// fusevol only
	MDedup       = "dedup_growth"
	MCompression = "compression_ratio"
	MPeakRSS     = "daemon_peak_rss"
	MPeakAnon    = "daemon_peak_anon"
)

// SnapshotMetric and CloneMetric name the latency figures at a file count.
func SnapshotMetric(files int) string { return fmt.Sprintf("snapshot_%d", files) }
func CloneMetric(files int) string    { return fmt.Sprintf("clone_%d", files) }

// Catalogue lists every metric a run with cfg reports, in order.
func Catalogue(cfg Config) []Metric {
	var out []Metric
	for _, m := range allMetrics(cfg) {
		if cfg.selected(groupOf(cfg, m.ID)) {
			out = append(out, m)
		}
	}
	return out
}

// groupOf names the workload group that produces a metric.
func groupOf(cfg Config, metric string) string {
	if metric == MPeakRSS || metric == MPeakAnon {
		return "seq"
	}
	for _, g := range commonGroups() {
		if slices.Contains(g.metrics, metric) {
			return g.name
		}
	}
	for _, g := range fusevolGroups(cfg) {
		if slices.Contains(g.metrics, metric) {
			return g.name
		}
	}
	return ""
}

func allMetrics(cfg Config) []Metric {
	ms := []Metric{
		{ID: MSeqWrite, Title: "seq write 1 MiB + fsync", Unit: "MiB/s"},
		{ID: MSeqReadCold, Title: "seq read cold", Unit: "MiB/s"},
		{ID: MSeqReadWarm, Title: "seq read warm", Unit: "MiB/s"},
		{ID: MRandReadCold, Title: "rand read 4 KiB cold", Unit: "IOPS"},
		{ID: MRandReadWarm, Title: "rand read 4 KiB warm", Unit: "IOPS"},
		{ID: MRandWrite, Title: "rand write 4 KiB + fsync", Unit: "IOPS"},
		{ID: MFsyncOps, Title: "4 KiB write+fsync loop", Unit: "ops/s"},
		{ID: MFsyncP50, Title: "fsync latency p50", Unit: "µs", Lower: true},
		{ID: MFsyncP99, Title: "fsync latency p99", Unit: "µs", Lower: true},
		{ID: MFsync4One, Title: "4 write+fsync writers, 1 volume", Unit: "ops/s"},
		{ID: MFsync4OneX, Title: "4 writers, 1 volume / 1 writer", Unit: "x"},
		{ID: MFsync4Vols, Title: "4 write+fsync writers, 4 volumes", Unit: "ops/s"},
		{ID: MFsync4VolsX, Title: "4 writers, 4 volumes / 1 writer", Unit: "x"},
		{ID: MSmallCreate, Title: "small files create", Unit: "files/s"},
		{ID: MSmallStat, Title: "small files stat", Unit: "files/s"},
		{ID: MSmallReadCold, Title: "small files read cold", Unit: "files/s"},
		{ID: MSmallUnlink, Title: "small files unlink", Unit: "files/s"},
		{ID: MReaddir, Title: "readdir", Unit: "entries/s"},
		{ID: MUntar, Title: "source tree unpack", Unit: "entries/s"},
		{ID: MRmRf, Title: "source tree rm -rf", Unit: "entries/s"},
		{ID: MCompressWrite, Title: "compressible write + fsync", Unit: "MiB/s"},
		{ID: MSQLiteWAL, Title: "SQLite commits, WAL", Unit: "commits/s"},
		{ID: MSQLiteRollback, Title: "SQLite commits, rollback journal", Unit: "commits/s"},
		{ID: MPgbenchTPS, Title: "pgbench read-write", Unit: "TPS"},
	}
	for _, n := range cfg.SnapFiles {
		ms = append(ms, Metric{ID: SnapshotMetric(n), Title: fmt.Sprintf("snapshot @ %d files", n),
			Unit: "ms", Lower: true, FusevolOnly: true})
	}
	for _, n := range cfg.SnapFiles {
		ms = append(ms, Metric{ID: CloneMetric(n), Title: fmt.Sprintf("clone @ %d files", n),
			Unit: "ms", Lower: true, FusevolOnly: true})
	}
	return append(append(ms,
		Metric{ID: MDedup, Title: "dedup: store growth 4 copies / 1 copy", Unit: "x", Lower: true, FusevolOnly: true},
		Metric{ID: MCompression, Title: "compression: logical / physical", Unit: "x", FusevolOnly: true},
		Metric{ID: MPeakRSS, Title: "daemon peak RSS (seq phases)", Unit: "MiB", Lower: true, FusevolOnly: true, Peak: true},
		Metric{ID: MPeakAnon, Title: "daemon peak anonymous RSS (sampled)", Unit: "MiB", Lower: true, FusevolOnly: true, Peak: true},
	), soakMetrics()...)
}

// results collects samples during a run.
type results struct {
	metrics []Metric
	targets []string
	samples map[string]map[string][]float64 // metric -> target -> samples
	errs    map[string]map[string]string    // metric -> target -> first error
}

func newResults(metrics []Metric, targets []string) *results {
	return &results{metrics: metrics, targets: targets,
		samples: map[string]map[string][]float64{}, errs: map[string]map[string]string{}}
}

func (r *results) add(target, metric string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.fail(target, metric, fmt.Errorf("measured %v (a phase too short to time?)", v))
		return
	}
	if r.samples[metric] == nil {
		r.samples[metric] = map[string][]float64{}
	}
	r.samples[metric][target] = append(r.samples[metric][target], v)
}

func (r *results) fail(target, metric string, err error) {
	if r.errs[metric] == nil {
		r.errs[metric] = map[string]string{}
	}
	if _, ok := r.errs[metric][target]; !ok {
		r.errs[metric][target] = err.Error()
	}
}

// Workload is one metric's outcome across targets, as reported.
type Workload struct {
	Metric
	Values     map[string]float64   `json:"values"`              // median (or peak) per target
	Samples    map[string][]float64 `json:"samples"`             // every repetition
	VsNative   map[string]float64   `json:"vs_native,omitempty"` // >1 means better than native
	VsLoopback map[string]float64   `json:"vs_loopback,omitempty"`
	Errors     map[string]string    `json:"errors,omitempty"`
}

func (r *results) workloads() []Workload {
	out := make([]Workload, 0, len(r.metrics))
	for _, m := range r.metrics {
		w := Workload{Metric: m, Values: map[string]float64{}, Samples: map[string][]float64{},
			Errors: r.errs[m.ID]}
		for t, s := range r.samples[m.ID] {
			if _, failed := w.Errors[t]; failed {
				continue
			}
			w.Samples[t] = s
			if m.Peak {
				w.Values[t] = slices.Max(s)
			} else {
				w.Values[t] = median(s)
			}
		}
		w.VsNative = ratios(w, TargetNative)
		w.VsLoopback = ratios(w, TargetLoopback)
		out = append(out, w)
	}
	return out
}

// ratios expresses every target's figure relative to ref's, oriented so that above 1 is better.
func ratios(w Workload, ref string) map[string]float64 {
	base, ok := w.Values[ref]
	if !ok || base == 0 || w.FusevolOnly {
		return nil
	}
	out := map[string]float64{}
	for t, v := range w.Values {
		switch {
		case w.Lower && v > 0:
			out[t] = base / v
		case !w.Lower:
			out[t] = v / base
		}
	}
	return out
}

func median(s []float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	sort.Float64s(c)
	if n := len(c); n%2 == 1 {
		return c[n/2]
	} else {
		return (c[n/2-1] + c[n/2]) / 2
	}
}

// percentile returns the p-th percentile (0..100) of sorted durations in microseconds.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
