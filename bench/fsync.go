package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// The write+fsync workloads: one writer appending 4 KiB and fsyncing, over and over (what a
// database's log does), then four such writers at once, first in one directory and then in four
// volumes (four subdirectories on targets that have a single filesystem). They run fio (psync,
// --rw=write --bs=4k --fsync=1, fresh random data in every write) when it is installed, and the
// harness's own loop with the same pattern otherwise (outside CI). Each writer stops after
// FsyncDuration or FioSize bytes, whichever comes first.

// fsyncWriters is the number of concurrent writers of the scaling figures.
const fsyncWriters = 4

// fsyncResult is what one write+fsync run measured.
type fsyncResult struct {
	ops      float64 // write+fsync operations per second, all writers together
	p50, p99 float64 // fsync latency, µs
}

// runFsync measures one writer, four in one directory and four in four volumes, and reports each
// scaling figure as a ratio to the one writer of the same repetition.
func runFsync(ctx context.Context, e *env, dir string, rep int, rec recorder) error {
	run, err := fsyncEngine(e)
	if err != nil {
		return err
	}
	seed := uint64(200 + 10*rep)
	one, err := run(ctx, e, []string{dir}, seed)
	if err != nil {
		return fmt.Errorf("one writer: %w", err)
	}
	rec(MFsyncOps, one.ops)
	rec(MFsyncP50, one.p50)
	rec(MFsyncP99, one.p99)
	same := slices.Repeat([]string{dir}, fsyncWriters)
	four, err := run(ctx, e, same, seed+1)
	if err != nil {
		return fmt.Errorf("%d writers in one directory: %w", fsyncWriters, err)
	}
	rec(MFsync4One, four.ops)
	rec(MFsync4OneX, four.ops/one.ops)
	dirs, err := e.volumeDirs(ctx, dir, fsyncWriters)
	if err != nil {
		return err
	}
	apart, err := run(ctx, e, dirs, seed+2)
	if err != nil {
		return fmt.Errorf("%d writers in %d volumes: %w", fsyncWriters, fsyncWriters, err)
	}
	rec(MFsync4Vols, apart.ops)
	rec(MFsync4VolsX, apart.ops/one.ops)
	return nil
}

// volumeDirs returns n directories on separate volumes of the target: its own volumes where it
// has them (fusevol), otherwise n subdirectories of dir, made empty.
func (e *env) volumeDirs(ctx context.Context, dir string, n int) ([]string, error) {
	if e.volumes != nil {
		return e.volumes(ctx, n)
	}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = filepath.Join(dir, fmt.Sprintf("vol%d", i))
		if err := os.RemoveAll(dirs[i]); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dirs[i], 0o755); err != nil {
			return nil, err
		}
	}
	return dirs, nil
}

// fsyncRun runs one writer per entry of dirs (entries may repeat: each writer has its own file).
type fsyncRun func(ctx context.Context, e *env, dirs []string, seed uint64) (fsyncResult, error)

// fsyncEngine picks fio, or the built-in loop when fio is missing (an error under CI=true).
func fsyncEngine(e *env) (fsyncRun, error) {
	if _, err := exec.LookPath("fio"); err == nil {
		return fioWriters, nil
	}
	if inCI() {
		return nil, errors.New("fio is not installed (an error because CI=true: .ci/run installs it)")
	}
	e.warn("fio is not installed: the write+fsync figures come from the harness's own loop (same pattern: 4 KiB appends, fsync after each)")
	return goWriters, nil
}

// fioWriters runs fio with one job per directory, all at once.
func fioWriters(ctx context.Context, e *env, dirs []string, seed uint64) (fsyncResult, error) {
	args := []string{"--output-format=json", "--ioengine=psync", "--rw=write", "--bs=4k", "--fsync=1",
		fmt.Sprintf("--size=%d", e.cfg.FioSize), fmt.Sprintf("--runtime=%dms", max(1, e.cfg.FsyncDuration.Milliseconds())),
		"--fallocate=none", "--refill_buffers=1", "--unlink=1", fmt.Sprintf("--randseed=%d", seed)}
	for i, d := range dirs {
		args = append(args, fmt.Sprintf("--name=w%d", i), "--directory="+d)
	}
	out, err := runTool(exec.CommandContext(ctx, "fio", args...))
	if err != nil {
		return fsyncResult{}, err
	}
	return parseFio(out, len(dirs))
}

// fioReport is the part of fio's JSON output (fio 3.x) the harness reads.
type fioReport struct {
	Jobs []struct {
		Name      string `json:"jobname"`
		Error     int    `json:"error"`
		RuntimeMs int64  `json:"job_runtime"`
		Write     struct {
			TotalIOs int64 `json:"total_ios"`
		} `json:"write"`
		Sync struct {
			TotalIOs int64 `json:"total_ios"`
			Lat      struct {
				N          int64              `json:"N"`
				Percentile map[string]float64 `json:"percentile"`
			} `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

// parseFio sums the writers' operations over the longest writer's run time; the latency
// percentiles are those of a single writer's fsyncs.
func parseFio(out []byte, writers int) (fsyncResult, error) {
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:] // fio may print warnings before the JSON
	}
	var rep fioReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return fsyncResult{}, fmt.Errorf("fio output: %w: %s", err, tail(string(out), 500))
	}
	if len(rep.Jobs) != writers {
		return fsyncResult{}, fmt.Errorf("fio reported %d jobs, want %d", len(rep.Jobs), writers)
	}
	var ios, ms int64
	for _, j := range rep.Jobs {
		switch {
		case j.Error != 0:
			return fsyncResult{}, fmt.Errorf("fio job %s: error %d", j.Name, j.Error)
		case j.Write.TotalIOs < 1 || j.Sync.TotalIOs < j.Write.TotalIOs-1:
			return fsyncResult{}, fmt.Errorf("fio job %s: %d writes and %d fsyncs", j.Name, j.Write.TotalIOs, j.Sync.TotalIOs)
		}
		ios += j.Write.TotalIOs
		ms = max(ms, j.RuntimeMs)
	}
	r := fsyncResult{ops: float64(ios) / (float64(max(ms, 1)) / 1000)}
	if writers == 1 {
		p := rep.Jobs[0].Sync.Lat.Percentile
		p50, ok50 := p["50.000000"]
		p99, ok99 := p["99.000000"]
		if !ok50 || !ok99 {
			return fsyncResult{}, fmt.Errorf("fio output has no fsync latency percentiles (sync.lat_ns.percentile: %v)", p)
		}
		r.p50, r.p99 = p50/1000, p99/1000
	}
	return r, nil
}

// goWriters is the built-in equivalent of fioWriters.
func goWriters(ctx context.Context, e *env, dirs []string, seed uint64) (fsyncResult, error) {
	deadline := time.Now().Add(e.cfg.FsyncDuration)
	lats := make([][]float64, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats[i], errs[i] = goWriter(ctx, filepath.Join(d, fmt.Sprintf("w%d.dat", i)), e.cfg.FioSize,
				deadline, e.pools.randomSource(seed*16+uint64(i)))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return fsyncResult{}, err
	}
	n := 0
	for _, l := range lats {
		n += len(l)
	}
	r := fsyncResult{ops: float64(n) / elapsed.Seconds()}
	if len(dirs) == 1 {
		slices.Sort(lats[0])
		r.p50, r.p99 = percentile(lats[0], 50), percentile(lats[0], 99)
	}
	return r, nil
}

// goWriter appends 4 KiB and fsyncs until the deadline or size, returning each fsync's latency
// in µs; the file is removed afterwards.
func goWriter(ctx context.Context, path string, size int64, deadline time.Time, src *source) ([]float64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, blockSize)
	var lat []float64
	for written := int64(0); written < size && (len(lat) < 3 || time.Now().Before(deadline)); written += blockSize {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		src.fill(buf)
		if _, err := f.Write(buf); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		t0 := time.Now()
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("fsync %s: %w", path, err)
		}
		lat = append(lat, float64(time.Since(t0).Nanoseconds())/1000)
	}
	return lat, nil
}
