package bench

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true},
		{"4KiB", 4096, true},
		{"4k", 4096, true},
		{"256MiB", 256 << 20, true},
		{"256MB", 256 << 20, true},
		{" 1GiB ", 1 << 30, true},
		{"2T", 2 << 40, true},
		{"0", 0, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"12XB", 0, false},
		{"9999999999T", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1GiB", "4k", "0", "-3", "9223372036854775807", "8EiB", "1TB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative", s, v)
		}
		back, err := ParseSize(strconv.FormatInt(v, 10))
		if err != nil || back != v {
			t.Fatalf("round trip of %d (from %q): %d, %v", v, s, back, err)
		}
	})
}

func TestParseCounts(t *testing.T) {
	got, err := ParseCounts("1000, 10000,100000")
	if err != nil || len(got) != 3 || got[0] != 1000 || got[2] != 100000 {
		t.Fatalf("ParseCounts = %v, %v", got, err)
	}
	for _, bad := range []string{"", "1,,2", "0", "1,x", "-5"} {
		if _, err := ParseCounts(bad); err == nil {
			t.Errorf("ParseCounts(%q) accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Full().Validate(); err != nil {
		t.Fatalf("Full: %v", err)
	}
	if err := Smoke().Validate(); err != nil {
		t.Fatalf("Smoke: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"reps":         func(c *Config) { c.Reps = 0 },
		"seq unit":     func(c *Config) { c.SeqSize = 1<<20 + 1 },
		"dedup":        func(c *Config) { c.DedupSize = 0 },
		"duration":     func(c *Config) { c.RandDuration = 0 },
		"snap single":  func(c *Config) { c.SnapFiles = []int{10} },
		"snap order":   func(c *Config) { c.SnapFiles = []int{10, 5} },
		"small files":  func(c *Config) { c.SmallFiles = 0 },
		"fsync window": func(c *Config) { c.FsyncDuration = -time.Second },
		"fio size":     func(c *Config) { c.FioSize = 1000 },
		"sqlite":       func(c *Config) { c.SQLiteCommits = 0 },
		"pg scale":     func(c *Config) { c.PgScale = 0 },
		"pg duration":  func(c *Config) { c.PgDuration = time.Millisecond },
		"db reps":      func(c *Config) { c.DBReps = 0 },
	} {
		c := Smoke()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: invalid config accepted", name)
		}
	}
}

func TestParseTargetSpec(t *testing.T) {
	dir := t.TempDir()
	name, path, err := ParseTargetSpec("ext4=" + dir)
	if err != nil || name != "ext4" || path != dir {
		t.Fatalf("ParseTargetSpec = %q, %q, %v", name, path, err)
	}
	for _, bad := range []string{"ext4", "=" + dir, "ext4=", "native=" + dir, "a/b=" + dir, "x=" + dir + "/missing"} {
		if _, _, err := ParseTargetSpec(bad); err == nil {
			t.Errorf("ParseTargetSpec(%q) accepted", bad)
		}
	}
}

// Every 4 KiB block a source produces is unique, and the same stream reproduces the same bytes:
// the dedup workload relies on the second property, every other workload on the first.
func TestSourceBlocksUniqueAndReproducible(t *testing.T) {
	p := newPools()
	for _, mk := range []func(uint64) *source{p.randomSource, p.textSource} {
		a, b := make([]byte, 8<<20), make([]byte, 8<<20)
		mk(1).fill(a)
		mk(1).fill(b)
		if !bytes.Equal(a, b) {
			t.Fatal("same stream produced different bytes")
		}
		seen := map[string]bool{}
		for off := 0; off < len(a); off += blockSize {
			k := string(a[off : off+blockSize])
			if seen[k] {
				t.Fatalf("block at %d repeats an earlier block", off)
			}
			seen[k] = true
		}
		c := make([]byte, 1<<20)
		mk(2).fill(c)
		if bytes.Equal(a[:1<<20], c) {
			t.Fatal("different streams produced the same bytes")
		}
	}
}

func TestRatiosOrientation(t *testing.T) {
	up := Workload{Metric: Metric{ID: "x"}, Values: map[string]float64{TargetNative: 100, TargetFusevol: 50}}
	if r := ratios(up, TargetNative)[TargetFusevol]; r != 0.5 {
		t.Errorf("throughput ratio = %v, want 0.5", r)
	}
	down := Workload{Metric: Metric{ID: "y", Lower: true}, Values: map[string]float64{TargetNative: 100, TargetFusevol: 50}}
	if r := ratios(down, TargetNative)[TargetFusevol]; r != 2 {
		t.Errorf("latency ratio = %v, want 2 (half the latency is twice as good)", r)
	}
	if r := ratios(up, TargetLoopback); r != nil {
		t.Errorf("ratio to a missing reference = %v, want none", r)
	}
}

func TestMedianAndPercentile(t *testing.T) {
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is a number")
	}
	s := make([]float64, 100)
	for i := range s {
		s[i] = float64(i + 1)
	}
	if p := percentile(s, 50); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(s, 99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
}

func TestGoals(t *testing.T) {
	cfg := Smoke()
	rep := &Report{Meta: Meta{Config: cfg}, Targets: []string{TargetNative, TargetLoopback, TargetFusevol}}
	res := newResults(Catalogue(cfg), rep.Targets)
	for _, m := range Catalogue(cfg) {
		if !m.FusevolOnly && m.ID != MPgbenchTPS { // pgbench: skipped everywhere
			res.add(TargetNative, m.ID, 100)
			res.add(TargetLoopback, m.ID, 100)
			res.add(TargetFusevol, m.ID, 90)
		}
	}
	res.add(TargetFusevol, MSeqWrite, 70) // median of 90 and 70 is 80: exactly 0.8× loopback
	res.add(TargetFusevol, MRandWrite, 10)
	res.add(TargetFusevol, MRandWrite, 10) // median 10: 0.1× loopback
	res.add(TargetFusevol, SnapshotMetric(cfg.SnapFiles[0]), 2)
	res.add(TargetFusevol, SnapshotMetric(cfg.SnapFiles[2]), 2.9)
	res.add(TargetFusevol, CloneMetric(cfg.SnapFiles[0]), 2)
	res.add(TargetFusevol, CloneMetric(cfg.SnapFiles[2]), 3.1)
	res.add(TargetFusevol, MDedup, 1.05)
	res.fail(TargetFusevol, MPeakRSS, errString("no daemon"))
	res.add(TargetFusevol, MFsyncP99, 410)
	res.add(TargetFusevol, MFsyncP99, 410) // median 410 µs: 4.1× native's 100 µs
	res.add(TargetFusevol, MFsync4VolsX, 2)
	res.add(TargetFusevol, MFsync4VolsX, 2) // median 2: below 2.5× one writer
	rep.Workloads = res.workloads()
	got := map[string]string{}
	for _, g := range CheckGoals(rep) {
		got[g.Metric] = g.Status
		got[g.Goal+"/"+g.Metric] = g.Status
	}
	for metric, want := range map[string]string{
		MSeqWrite: Pass, MSeqReadCold: Pass, MRandWrite: Fail, MReaddir: Pass,
		SnapshotMetric(100): Pass, CloneMetric(100): Fail, MDedup: Pass, MPeakRSS: Fail,
		MPgbenchTPS: Skip, MSQLiteWAL: Pass, MSQLiteRollback: Pass,
		"write+fsync ≥ 1.0× loopback/" + MFsyncOps:     Fail, // 0.9×
		"write+fsync ≥ 0.8× native (aim)/" + MFsyncOps: Pass,
		MFsyncP99: Fail, MFsync4OneX: Pass, MFsync4VolsX: Fail,
	} {
		if got[metric] != want {
			t.Errorf("goal on %s = %q, want %s", metric, got[metric], want)
		}
	}
	rep.Targets = []string{TargetNative}
	for _, g := range CheckGoals(rep) {
		if g.Status != Skip {
			t.Errorf("without fusevol, goal on %s = %s, want SKIP", g.Metric, g.Status)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestCatalogueOnly(t *testing.T) {
	cfg := Smoke()
	all := Catalogue(cfg)
	seen := map[string]bool{}
	for _, m := range all {
		if seen[m.ID] {
			t.Errorf("metric %s listed twice", m.ID)
		}
		seen[m.ID] = true
		if groupOf(cfg, m.ID) == "" {
			t.Errorf("metric %s belongs to no workload group", m.ID)
		}
	}
	cfg.Only = []string{"small", "dedup"}
	var got []string
	for _, m := range Catalogue(cfg) {
		got = append(got, m.ID)
	}
	want := []string{MSmallCreate, MSmallStat, MSmallReadCold, MSmallUnlink, MReaddir, MDedup}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Catalogue with --only small,dedup = %v, want %v", got, want)
	}
	cfg.Only = []string{"small", "nope"}
	if err := cfg.Validate(); err == nil {
		t.Error("unknown workload group accepted")
	}
}

func TestUnavailable(t *testing.T) {
	t.Setenv("CI", "")
	if _, ok := isSkip(unavailable("w", "no tool")); !ok {
		t.Error("outside CI, a missing program is not a skip")
	}
	t.Setenv("CI", "true")
	if err := unavailable("w", "no tool"); err == nil {
		t.Error("no error")
	} else if _, ok := isSkip(err); ok {
		t.Error("under CI=true, a missing program is a skip")
	}
}

func TestParseFio(t *testing.T) {
	const out = `fio: some warning
{"fio version": "fio-3.33", "jobs": [
 {"jobname": "w0", "error": 0, "job_runtime": 2000, "write": {"total_ios": 1000},
  "sync": {"total_ios": 1000, "lat_ns": {"N": 1000, "percentile": {"50.000000": 250000, "99.000000": 4000000}}}},
 {"jobname": "w1", "error": 0, "job_runtime": 1000, "write": {"total_ios": 500},
  "sync": {"total_ios": 500, "lat_ns": {"N": 500, "percentile": {"50.000000": 1, "99.000000": 2}}}}]}`
	r, err := parseFio([]byte(out), 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.ops != 750 { // 1500 operations over the longest job's 2 s
		t.Errorf("ops = %v, want 750", r.ops)
	}
	if _, err := parseFio([]byte(out), 1); err == nil {
		t.Error("job count not checked")
	}
	one := strings.Replace(out, `"w1", "error": 0`, `"w1", "error": 5`, 1)
	if _, err := parseFio([]byte(one), 2); err == nil {
		t.Error("job error not reported")
	}
	single := `{"jobs": [{"jobname": "w0", "job_runtime": 500, "write": {"total_ios": 100},
  "sync": {"total_ios": 100, "lat_ns": {"percentile": {"50.000000": 250000, "99.000000": 4000000}}}}]}`
	if r, err = parseFio([]byte(single), 1); err != nil || r.ops != 200 || r.p50 != 250 || r.p99 != 4000 {
		t.Errorf("single writer: %+v, %v; want 200 ops/s, p50 250 µs, p99 4000 µs", r, err)
	}
}
