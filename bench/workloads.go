package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ioSize is the request size of the sequential workloads.
const ioSize = 1 << 20

const mib = float64(1 << 20)

// env is what every workload needs besides its directory.
type env struct {
	cfg   Config
	pools *pools
	tree  *treeArchive
	// drop empties the kernel's caches before cold phases (a no-op when not permitted).
	drop func()
	// warn records a caveat about the run (shown in the report).
	warn func(string)
	// rss, when set, brackets the phases whose daemon peak RSS is reported.
	rss rssProbe
	// volumes, when set, returns n directories in separate volumes of the target (see volumeDirs).
	volumes func(ctx context.Context, n int) ([]string, error)
	// histogram, when set, adds a latency distribution to the report.
	histogram func(Histogram)
}

// rssProbe resets and reads a daemon's peak resident set size, and samples its anonymous part.
type rssProbe interface {
	ResetPeak() error
	PeakMiB() (float64, error)
	AnonMiB() (float64, error)
}

// sampleAnon polls the daemon's anonymous RSS every 20 ms until stop is called, which returns
// the largest value seen (and may be called again).
func sampleAnon(p rssProbe) (stop func() (float64, error)) {
	done, result := make(chan struct{}), make(chan error, 1)
	var peak float64
	var err error
	var once sync.Once
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			v, err := p.AnonMiB()
			if err != nil {
				result <- err
				return
			}
			peak = max(peak, v)
			select {
			case <-done:
				result <- nil
				return
			case <-tick.C:
			}
		}
	}()
	return func() (float64, error) {
		once.Do(func() {
			close(done)
			err = <-result
		})
		return peak, err
	}
}

// recorder receives one figure of the running workload.
type recorder func(metric string, v float64)

// group is a sequence of phases that share files; if one fails, the later ones cannot run.
type group struct {
	name    string // for --only
	metrics []string
	run     func(ctx context.Context, e *env, dir string, rep int, rec recorder) error
	// db marks the database workloads, which run only Config.DBReps of the repetitions.
	db bool
}

// commonGroups are the workloads every target runs, in order.
func commonGroups() []group {
	return []group{
		{name: "seq", metrics: []string{MSeqWrite, MSeqReadCold, MSeqReadWarm, MRandReadCold, MRandReadWarm, MRandWrite}, run: runSeqRand},
		{name: "fsync", metrics: []string{MFsyncOps, MFsyncP50, MFsyncP99, MFsync4One, MFsync4OneX, MFsync4Vols, MFsync4VolsX}, run: runFsync},
		{name: "small", metrics: []string{MSmallCreate, MSmallStat, MReaddir, MSmallReadCold, MSmallUnlink}, run: runSmallFiles},
		{name: "tree", metrics: []string{MUntar, MRmRf}, run: runTree},
		{name: "compress", metrics: []string{MCompressWrite}, run: runCompressWrite}, // in the target's compressed directory
		{name: "sqlite", metrics: []string{MSQLiteWAL, MSQLiteRollback}, run: runSQLite, db: true},
		{name: "pgbench", metrics: []string{MPgbenchTPS}, run: runPgbench, db: true},
	}
}

// runSeqRand writes one big file, reads it cold and warm, then runs the random phases on it.
func runSeqRand(ctx context.Context, e *env, dir string, rep int, rec recorder) error {
	path := filepath.Join(dir, "seq.dat")
	defer os.Remove(path)
	stream := uint64(100 + rep)
	if err := seqPhases(ctx, e, path, stream, rec); err != nil {
		return err
	}
	return randPhases(ctx, e, path, stream, rand.New(rand.NewPCG(uint64(rep), 1)), rec)
}

// seqPhases writes the file and reads it cold then warm; for the fusevol target it also reports
// the daemon's peak RSS over these phases, and the peak of its anonymous part.
func seqPhases(ctx context.Context, e *env, path string, stream uint64, rec recorder) error {
	if e.rss == nil {
		return seqIO(ctx, e, path, stream, rec)
	}
	if err := e.rss.ResetPeak(); err != nil {
		e.warn(fmt.Sprintf("%v: the peak RSS figure covers the daemon's whole life so far", err))
	}
	stopAnon := sampleAnon(e.rss)
	err := seqIO(ctx, e, path, stream, rec)
	anon, aerr := stopAnon()
	if err != nil {
		return err
	}
	peak, err := e.rss.PeakMiB()
	if err = errors.Join(err, aerr); err != nil {
		return err
	}
	rec(MPeakRSS, peak)
	rec(MPeakAnon, anon)
	return nil
}

func seqIO(ctx context.Context, e *env, path string, stream uint64, rec recorder) error {
	mibps := func(d time.Duration) float64 { return float64(e.cfg.SeqSize) / mib / d.Seconds() }
	d, err := writeSeq(ctx, path, e.cfg.SeqSize, e.pools.randomSource(stream))
	if err != nil {
		return err
	}
	rec(MSeqWrite, mibps(d))
	e.drop()
	var want *source
	if e.cfg.Verify {
		want = e.pools.randomSource(stream)
	}
	if d, err = readSeq(ctx, path, e.cfg.SeqSize, want); err != nil {
		return fmt.Errorf("cold read: %w", err)
	}
	rec(MSeqReadCold, mibps(d))
	if d, err = readSeq(ctx, path, e.cfg.SeqSize, nil); err != nil {
		return fmt.Errorf("warm read: %w", err)
	}
	rec(MSeqReadWarm, mibps(d))
	return nil
}

// randPhases reads 4 KiB blocks at random cold, then warm (after reading the whole file), then
// writes 4 KiB blocks at random.
func randPhases(ctx context.Context, e *env, path string, stream uint64, rng *rand.Rand, rec recorder) error {
	e.drop()
	ops, err := randomIO(ctx, path, e.cfg.SeqSize, e.cfg.RandDuration, rng, nil)
	if err != nil {
		return fmt.Errorf("cold random read: %w", err)
	}
	rec(MRandReadCold, ops)
	if _, err := readSeq(ctx, path, e.cfg.SeqSize, nil); err != nil {
		return fmt.Errorf("warm-up read: %w", err)
	}
	if ops, err = randomIO(ctx, path, e.cfg.SeqSize, e.cfg.RandDuration, rng, nil); err != nil {
		return fmt.Errorf("warm random read: %w", err)
	}
	rec(MRandReadWarm, ops)
	if ops, err = randomIO(ctx, path, e.cfg.SeqSize, e.cfg.RandDuration, rng, e.pools.randomSource(stream+1000)); err != nil {
		return fmt.Errorf("random write: %w", err)
	}
	rec(MRandWrite, ops)
	return nil
}

// writeSeq writes size bytes from src in 1 MiB writes and fsyncs; the time includes the fsync.
func writeSeq(ctx context.Context, path string, size int64, src *source) (time.Duration, error) {
	buf := make([]byte, ioSize)
	start := time.Now()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	for off := int64(0); off < size; off += ioSize {
		if err := ctx.Err(); err != nil {
			f.Close()
			return 0, err
		}
		src.fill(buf)
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return 0, fmt.Errorf("write %s at %d: %w", path, off, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("close %s: %w", path, err)
	}
	return time.Since(start), nil
}

// readSeq reads the file in 1 MiB reads and checks its length (and its bytes, when want is set).
func readSeq(ctx context.Context, path string, size int64, want *source) (time.Duration, error) {
	buf, ref := make([]byte, ioSize), make([]byte, ioSize)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := io.ReadFull(f, buf)
		if want != nil && n > 0 {
			want.fill(ref[:n])
			if !bytes.Equal(buf[:n], ref[:n]) {
				return 0, fmt.Errorf("%s: data read back at offset %d differs from what was written", path, total)
			}
		}
		total += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", path, total, err)
		}
	}
	d := time.Since(start)
	if total != size {
		return 0, fmt.Errorf("%s: read %d bytes, want %d", path, total, size)
	}
	return d, nil
}

// randomIO does 4 KiB reads (src == nil) or writes at random aligned offsets for dur, then (for
// writes) fsyncs, and returns operations per second including the fsync.
func randomIO(ctx context.Context, path string, size int64, dur time.Duration, rng *rand.Rand, src *source) (float64, error) {
	flag := os.O_RDONLY
	if src != nil {
		flag = os.O_WRONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, blockSize)
	blocks := size / blockSize
	start := time.Now()
	deadline := start.Add(dur)
	ops := 0
	for ; ops == 0 || time.Now().Before(deadline); ops++ {
		if ops%256 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		off := rng.Int64N(blocks) * blockSize
		var n int
		if src != nil {
			src.fill(buf)
			n, err = f.WriteAt(buf, off)
		} else {
			n, err = f.ReadAt(buf, off)
		}
		if err != nil || n != blockSize {
			return 0, fmt.Errorf("%s at %d: %d bytes, %v", path, off, n, err)
		}
	}
	if src != nil {
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("fsync %s: %w", path, err)
		}
	}
	return float64(ops) / time.Since(start).Seconds(), nil
}

// runSmallFiles creates, stats, lists, reads (cold) and unlinks many small files in one directory.
func runSmallFiles(ctx context.Context, e *env, dir string, rep int, rec recorder) error {
	sub := filepath.Join(dir, "small")
	if err := os.Mkdir(sub, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(sub)
	n := e.cfg.SmallFiles
	names := make([]string, n)
	for i := range names {
		names[i] = filepath.Join(sub, fmt.Sprintf("f%06d", i))
	}
	stream := uint64(300 + rep)
	phases := []struct {
		metric string
		run    func() error
	}{
		{MSmallCreate, func() error { return createSmall(e, names, stream) }},
		{MSmallStat, func() error { return statSmall(names, int64(e.cfg.SmallSize)) }},
		{MReaddir, func() error { return checkCount(sub, n) }},
		{MSmallReadCold, func() error { return readSmall(e, names, stream) }},
		{MSmallUnlink, func() error { return forEach(names, os.Remove) }},
	}
	for _, ph := range phases {
		if ph.metric == MSmallReadCold {
			e.drop()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		if err := ph.run(); err != nil {
			return err
		}
		rec(ph.metric, float64(n)/time.Since(start).Seconds())
	}
	return nil
}

func createSmall(e *env, names []string, stream uint64) error {
	src := e.pools.randomSource(stream)
	buf := make([]byte, roundUp(e.cfg.SmallSize))
	return forEach(names, func(p string) error {
		src.fill(buf)
		return writeSmall(p, buf[:e.cfg.SmallSize])
	})
}

func statSmall(names []string, size int64) error {
	return forEach(names, func(p string) error {
		st, err := os.Lstat(p)
		if err == nil && st.Size() != size {
			err = fmt.Errorf("stat %s: size %d, want %d", p, st.Size(), size)
		}
		return err
	})
}

func readSmall(e *env, names []string, stream uint64) error {
	want := e.pools.randomSource(stream)
	ref := make([]byte, roundUp(e.cfg.SmallSize))
	return forEach(names, func(p string) error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(b) != e.cfg.SmallSize {
			return fmt.Errorf("read %s: %d bytes, want %d", p, len(b), e.cfg.SmallSize)
		}
		if e.cfg.Verify {
			want.fill(ref)
			if !bytes.Equal(b, ref[:len(b)]) {
				return fmt.Errorf("read %s: content differs from what was written", p)
			}
		}
		return nil
	})
}

func checkCount(dir string, want int) error {
	got, err := listNames(dir)
	if err == nil && got != want {
		err = fmt.Errorf("readdir %s: %d entries, want %d", dir, got, want)
	}
	return err
}

func forEach(names []string, f func(string) error) error {
	for _, p := range names {
		if err := f(p); err != nil {
			return err
		}
	}
	return nil
}

func roundUp(n int) int { return (n + blockSize - 1) / blockSize * blockSize }

func writeSmall(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// listNames reads a directory's names (getdents only, no stat) and counts them.
func listNames(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

// runTree unpacks the source-tree archive, then removes it with the equivalent of rm -rf.
func runTree(ctx context.Context, e *env, dir string, rep int, rec recorder) error {
	sub := filepath.Join(dir, "tree")
	defer os.RemoveAll(sub)
	start := time.Now()
	if err := e.tree.extract(ctx, sub); err != nil {
		return err
	}
	rec(MUntar, float64(e.tree.entries)/time.Since(start).Seconds())
	if e.cfg.Verify {
		if err := e.tree.check(sub); err != nil {
			return err
		}
	}
	start = time.Now()
	if err := os.RemoveAll(sub); err != nil {
		return fmt.Errorf("rm -rf %s: %w", sub, err)
	}
	if _, err := os.Lstat(sub); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rm -rf %s: still there (%v)", sub, err)
	}
	rec(MRmRf, float64(e.tree.entries)/time.Since(start).Seconds())
	return nil
}

// runCompressWrite writes compressible text sequentially, ending with fsync.
func runCompressWrite(ctx context.Context, e *env, dir string, rep int, rec recorder) error {
	path := filepath.Join(dir, "text.dat")
	defer os.Remove(path)
	stream := uint64(400 + rep)
	d, err := writeSeq(ctx, path, e.cfg.CompressSize, e.pools.textSource(stream))
	if err != nil {
		return err
	}
	rec(MCompressWrite, float64(e.cfg.CompressSize)/mib/d.Seconds())
	if e.cfg.Verify {
		if _, err := readSeq(ctx, path, e.cfg.CompressSize, e.pools.textSource(stream)); err != nil {
			return err
		}
	}
	return nil
}
