package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewHistogram(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lats  []float64
		count map[float64]int // bucket upper bound (0 = unbounded) → count
	}{
		{"empty", nil, map[float64]int{}},
		{"bounds are inclusive", []float64{100, 100.5, 200}, map[float64]int{100: 1, 200: 2}},
		{"beyond the last bound", []float64{50, 2e6, 3e6}, map[float64]int{100: 1, 0: 2}},
	} {
		h := newHistogram(tc.name, tc.lats)
		if h.Samples != len(tc.lats) || len(h.Buckets) != len(soakBounds)+1 {
			t.Errorf("%s: %d samples in %d buckets", tc.name, h.Samples, len(h.Buckets))
		}
		total := 0
		for _, b := range h.Buckets {
			total += b.Count
			if b.Count != tc.count[b.UpToUs] {
				t.Errorf("%s: bucket ≤%g has %d, want %d", tc.name, b.UpToUs, b.Count, tc.count[b.UpToUs])
			}
		}
		if total != len(tc.lats) {
			t.Errorf("%s: buckets hold %d samples, want %d", tc.name, total, len(tc.lats))
		}
	}
}

// TestRecordSoak checks the slow-fsync attribution against GC passes and checkpoints read from a
// daemon log.
func TestRecordSoak(t *testing.T) {
	base := time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)
	log := strings.Join([]string{
		`time=2026-12-02T15:59:00.000Z level=INFO msg="gc pass" mode=busy rewrites=0 took=20ms`, // before the soak
		`time=2026-12-02T16:00:01.100Z level=INFO msg="gc pass" mode=busy rewrites=1 took=150ms`,
		`time=2026-12-02T16:00:03.110Z level=INFO msg="intent log checkpoint" segment=0 took=50ms fsyncs_found_log_full=3`,
		`time=2026-12-02T16:00:05.000Z level=INFO msg="mounted" volume=soak`,
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "daemon.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	work, err := readDaemonWork(path)
	if err != nil || len(work.gc) != 2 || !work.gc[1].from.Equal(base.Add(950*time.Millisecond)) ||
		len(work.checkpoints) != 1 || work.logFull != 3 {
		t.Fatalf("readDaemonWork = %+v, %v", work, err)
	}
	ms := time.Millisecond
	samples := []soakSample{
		{base, ms},
		{base.Add(time.Second), 200 * ms},     // overlaps the second pass
		{base.Add(3 * time.Second), 120 * ms}, // slow, no GC
		{base.Add(4 * time.Second), 2 * ms},
	}
	got := map[string]float64{}
	var hist []Histogram
	e := &env{cfg: Smoke(), histogram: func(h Histogram) { hist = append(hist, h) }}
	if err := recordSoak(e, samples, work, func(m string, v float64) { got[m] = v }); err != nil {
		t.Fatal(err)
	}
	for m, want := range map[string]float64{MSoakSlow: 2, MSoakSlowGC: 1, MSoakGCPass: 1,
		MSoakSlowCkpt: 1, MSoakCkpts: 1, MSoakLogFull: 3, MSoakMax: 200, MSoakP50: 2000} {
		if got[m] != want {
			t.Errorf("%s = %v, want %v", m, got[m], want)
		}
	}
	if len(hist) != 1 || hist[0].Samples != len(samples) {
		t.Errorf("histograms %+v", hist)
	}
	if _, err := readDaemonWork(filepath.Join(t.TempDir(), "missing.log")); err == nil {
		t.Error("readDaemonWork of a missing log succeeded")
	}
}
