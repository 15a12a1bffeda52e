package bench

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config sets what one run measures. Full() is the documented benchmark; Smoke() runs every
// workload at a size that takes seconds, to prove the harness works.
type Config struct {
	Reps          int           `json:"reps"`              // repetitions of every workload; figures are medians
	SeqSize       int64         `json:"seq_size"`          // sequential file size (written in 1 MiB writes)
	RandDuration  time.Duration `json:"rand_duration_ns"`  // each random 4 KiB phase
	FsyncDuration time.Duration `json:"fsync_duration_ns"` // the 4 KiB write+fsync loop
	SoakDuration  time.Duration `json:"soak_duration_ns"`  // the fusevol-only random overwrite+fsync soak
	SoakSize      int64         `json:"soak_size"`         // the soak's file
	SmallFiles    int           `json:"small_files"`       // files in the small-file and readdir workloads
	SmallSize     int           `json:"small_size"`        // bytes per small file
	TreeFiles     int           `json:"tree_files"`        // regular files in the source-tree unpack
	CompressSize  int64         `json:"compress_size"`     // compressible sequential write
	DedupSize     int64         `json:"dedup_size"`        // bytes written into each of the four dedup volumes
	SnapFiles     []int         `json:"snap_files"`        // file counts at which snapshot and clone latency are measured
	SnapReps      int           `json:"snap_reps"`         // snapshots (and clones) timed at each file count
	Compression   string        `json:"compression"`       // fusevol compression for the compressible workload
	FioSize       int64         `json:"fio_size"`          // bytes each write+fsync writer writes at most (it also stops after FsyncDuration)
	SQLiteCommits int           `json:"sqlite_commits"`    // one-row commits in each SQLite journal mode
	PgScale       int           `json:"pg_scale"`          // pgbench -i -s
	PgDuration    time.Duration `json:"pg_duration_ns"`    // pgbench -T
	// DBReps caps the repetitions of the database workloads (SQLite, pgbench), which take minutes.
	DBReps int  `json:"db_reps"`
	Verify bool `json:"verify"` // read back and compare data (costs CPU inside timed phases)
	// Only restricts the run to these workload groups (see GroupNames); empty means all.
	Only []string `json:"only,omitempty"`
}

// GroupNames lists the workload groups --only accepts.
func GroupNames() []string {
	var names []string
	for _, g := range commonGroups() {
		names = append(names, g.name)
	}
	for _, g := range fusevolGroups(Config{}) {
		names = append(names, g.name)
	}
	return names
}

func (c Config) selected(group string) bool {
	return len(c.Only) == 0 || slices.Contains(c.Only, group)
}

// Full is the configuration `make bench` runs.
func Full() Config {
	return Config{
		Reps:          3,
		SeqSize:       1 << 30,
		RandDuration:  5 * time.Second,
		FsyncDuration: 5 * time.Second,
		SoakDuration:  10 * time.Minute,
		SoakSize:      256 << 20,
		SmallFiles:    10000,
		SmallSize:     4096,
		TreeFiles:     5000,
		CompressSize:  256 << 20,
		DedupSize:     256 << 20,
		SnapFiles:     []int{1000, 10000, 100000},
		SnapReps:      9,
		Compression:   "zstd",
		FioSize:       64 << 20,
		SQLiteCommits: 20000,
		PgScale:       10,
		PgDuration:    60 * time.Second,
		DBReps:        1,
	}
}

// Smoke is the tiny configuration `make bench-smoke` (and CI) runs: every workload, seconds in all.
func Smoke() Config {
	return Config{
		Reps:          1,
		SeqSize:       4 << 20,
		RandDuration:  100 * time.Millisecond,
		FsyncDuration: 100 * time.Millisecond,
		SoakDuration:  2 * time.Second,
		SoakSize:      4 << 20,
		SmallFiles:    200,
		SmallSize:     4096,
		TreeFiles:     100,
		CompressSize:  4 << 20,
		DedupSize:     2 << 20,
		SnapFiles:     []int{10, 50, 100},
		SnapReps:      3,
		Compression:   "zstd",
		FioSize:       1 << 20,
		SQLiteCommits: 200,
		PgScale:       1,
		PgDuration:    3 * time.Second,
		DBReps:        1,
		Verify:        true,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Reps < 1:
		return fmt.Errorf("reps %d: need at least 1", c.Reps)
	case c.SeqSize < ioSize || c.SeqSize%ioSize != 0:
		return fmt.Errorf("seq size %d: need a positive multiple of 1 MiB", c.SeqSize)
	case c.CompressSize < ioSize || c.CompressSize%ioSize != 0:
		return fmt.Errorf("compress size %d: need a positive multiple of 1 MiB", c.CompressSize)
	case c.DedupSize < ioSize || c.DedupSize%ioSize != 0:
		return fmt.Errorf("dedup size %d: need a positive multiple of 1 MiB", c.DedupSize)
	case c.RandDuration <= 0 || c.FsyncDuration <= 0 || c.SoakDuration <= 0 || c.PgDuration < time.Second:
		return fmt.Errorf("durations must be positive (pgbench's at least 1 s)")
	case c.SoakSize < ioSize || c.SoakSize%ioSize != 0:
		return fmt.Errorf("soak size %d: need a positive multiple of 1 MiB", c.SoakSize)
	case c.FioSize < blockSize || c.FioSize%blockSize != 0:
		return fmt.Errorf("fio size %d: need a positive multiple of 4 KiB", c.FioSize)
	case c.SQLiteCommits < 1 || c.PgScale < 1 || c.DBReps < 1:
		return fmt.Errorf("sqlite commits, pgbench scale and database reps must be positive")
	case c.SmallFiles < 1 || c.SmallSize < 1 || c.TreeFiles < 1:
		return fmt.Errorf("small files, small size and tree files must be positive")
	case len(c.SnapFiles) < 2:
		return fmt.Errorf("snapshot file counts %v: need at least two", c.SnapFiles)
	case c.SnapReps < 1:
		return fmt.Errorf("snapshot reps %d: need at least 1", c.SnapReps)
	}
	for _, g := range c.Only {
		if !slices.Contains(GroupNames(), g) {
			return fmt.Errorf("workload group %q: want one of %s", g, strings.Join(GroupNames(), ", "))
		}
	}
	for i, n := range c.SnapFiles {
		if n < 1 || (i > 0 && n <= c.SnapFiles[i-1]) {
			return fmt.Errorf("snapshot file counts %v: need positive, increasing counts", c.SnapFiles)
		}
	}
	return nil
}

// ParseSize reads a byte count: a plain number or one with a K/M/G/T suffix (KiB, MB... all
// binary multiples).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes like 4096, 256MiB or 1GiB", s)
	}
	if v > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return v * mult, nil
}

// ParseCounts reads a comma-separated list of positive integers ("1000,10000,100000").
func ParseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("count list %q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}
