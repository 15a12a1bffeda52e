package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// fusevolGroups are the workloads only the fusevol target runs (once per run, not per repetition:
// each times its own repetitions).
func fusevolGroups(cfg Config) []extraGroup {
	var snap []string
	for _, n := range cfg.SnapFiles {
		snap = append(snap, SnapshotMetric(n), CloneMetric(n))
	}
	return []extraGroup{
		{"snapshot", snap, runSnapshots},
		{"dedup", []string{MDedup}, runDedup},
		{"compression", []string{MCompression}, runCompressionRatio},
		{"soak", soakIDs(), runSoak},
	}
}

type extraGroup struct {
	name    string // for --only
	metrics []string
	run     func(ctx context.Context, e *env, t *fusevolTarget, rec recorder) error
}

// runSnapshots fills one volume per file count, then times snapshots and then clones (writable
// volumes made from a snapshot) round-robin across the volumes, so that whatever else grows in
// the store meanwhile (snapshot and volume counts) weighs on every file count alike.
func runSnapshots(ctx context.Context, e *env, t *fusevolTarget, rec recorder) error {
	vols := make([]string, len(e.cfg.SnapFiles))
	for i, n := range e.cfg.SnapFiles {
		vols[i] = fmt.Sprintf("snap%d", n)
		dir := filepath.Join(t.work, "fv-"+vols[i])
		if err := t.newVolume(ctx, vols[i], nil, dir); err != nil {
			return err
		}
		defer t.client.Unmount(context.WithoutCancel(ctx), dir)
		if err := populate(ctx, e, dir, n); err != nil {
			return err
		}
	}
	for i := 0; i < e.cfg.SnapReps; i++ {
		for j, n := range e.cfg.SnapFiles {
			start := time.Now()
			if _, err := t.client.CreateSnapshot(ctx, vols[j], fmt.Sprintf("s%d", i)); err != nil {
				return fmt.Errorf("snapshot at %d files: %w", n, err)
			}
			rec(SnapshotMetric(n), msSince(start))
		}
	}
	for i := 0; i < e.cfg.SnapReps; i++ {
		for j, n := range e.cfg.SnapFiles {
			start := time.Now()
			from := vols[j] + "@s0"
			if _, err := t.client.CreateVolume(ctx, fmt.Sprintf("clone%d-%d", n, i), map[string]string{"from": from}); err != nil {
				return fmt.Errorf("clone of %s: %w", from, err)
			}
			rec(CloneMetric(n), msSince(start))
		}
	}
	if e.cfg.Verify {
		n := e.cfg.SnapFiles[len(e.cfg.SnapFiles)-1]
		return checkClone(ctx, t, fmt.Sprintf("clone%d-0", n), n)
	}
	return nil
}

// populate creates n small files in directories of 1000, then syncs the filesystem so the
// snapshots that follow do not pay for flushing them.
func populate(ctx context.Context, e *env, dir string, n int) error {
	src := e.pools.randomSource(uint64(800 + n))
	buf := make([]byte, blockSize)
	for i := 0; i < n; i++ {
		if i%1000 == 0 {
			if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("d%04d", i/1000)), 0o755); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		src.fill(buf)
		if err := writeSmall(filepath.Join(dir, fmt.Sprintf("d%04d/f%06d", i/1000, i)), buf[:64]); err != nil {
			return err
		}
	}
	return syncFS(dir)
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// checkClone mounts a clone and counts its files, so a clone that is fast because it is empty
// cannot pass.
func checkClone(ctx context.Context, t *fusevolTarget, vol string, want int) error {
	dir := filepath.Join(t.work, "fv-clone")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := t.client.Mount(ctx, vol, dir); err != nil {
		return fmt.Errorf("mount clone %s: %w", vol, err)
	}
	defer t.client.Unmount(ctx, dir)
	got := 0
	subs, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, s := range subs {
		if !s.IsDir() || s.Name()[0] != 'd' {
			continue
		}
		n, err := listNames(filepath.Join(dir, s.Name()))
		if err != nil {
			return err
		}
		got += n
	}
	if got != want {
		return fmt.Errorf("clone %s holds %d files, want %d", vol, got, want)
	}
	return nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// runDedup writes the same data into four fresh volumes and compares the store's growth after
// four copies with its growth after one. A fifth volume then gets different data, which must
// grow the store: otherwise the measurement could not tell dedup from a store that hides writes.
// Growth is in the chunk bodies' stored bytes (volctl df's physical): the disk guard allocates
// Badger's files whole as they are made, so the blocks on disk grow in value-log-file steps.
func runDedup(ctx context.Context, e *env, t *fusevolTarget, rec recorder) (err error) {
	// A private daemon: no earlier deletes, so value-log GC cannot shrink the store meanwhile.
	d, err := startDaemon(ctx, t.volctl, filepath.Join(t.work, "fusevol-dedup"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.close(context.WithoutCancel(ctx))) }()
	before, err := d.physicalBytes(ctx)
	if err != nil {
		return err
	}
	sizes := make([]int64, 0, 5)
	for i := 1; i <= 5; i++ {
		stream := uint64(600)
		if i == 5 {
			stream = 601
		}
		dir := filepath.Join(t.work, fmt.Sprintf("fv-dedup%d", i))
		if err := d.writeVolume(ctx, fmt.Sprintf("dedup%d", i), dir, e.pools.randomSource(stream), e.cfg.DedupSize); err != nil {
			return err
		}
		after, err := d.physicalBytes(ctx)
		if err != nil {
			return err
		}
		sizes = append(sizes, after-before)
	}
	one, four, five := sizes[0], sizes[3], sizes[4]
	if one <= 0 {
		return fmt.Errorf("dedup: store did not grow after writing %d bytes", e.cfg.DedupSize)
	}
	if five-four < one/2 {
		return fmt.Errorf("dedup: store grew only %d bytes for %d bytes of new data (one copy: %d): its size does not show writes",
			five-four, e.cfg.DedupSize, one)
	}
	rec(MDedup, float64(four)/float64(one))
	return nil
}

func (d *daemon) physicalBytes(ctx context.Context) (int64, error) {
	df, err := d.client.DF(ctx)
	return df.PhysicalBytes, err
}

// writeVolume creates a volume, writes size bytes from src into one file with fsync, and unmounts it.
func (d *daemon) writeVolume(ctx context.Context, vol, dir string, src *source, size int64) error {
	if err := d.newVolume(ctx, vol, nil, dir); err != nil {
		return err
	}
	_, err := writeSeq(ctx, filepath.Join(dir, "copy.dat"), size, src)
	if uerr := d.client.Unmount(ctx, dir); err == nil && uerr != nil {
		err = fmt.Errorf("unmount %s: %w", dir, uerr)
	}
	return err
}

// runCompressionRatio writes compressible text into the compressed volume and reports how many
// plain bytes each stored byte holds.
func runCompressionRatio(ctx context.Context, e *env, t *fusevolTarget, rec recorder) error {
	df0, err := t.client.DF(ctx)
	if err != nil {
		return err
	}
	path := filepath.Join(t.cmpMnt, "ratio.dat")
	if _, err := writeSeq(ctx, path, e.cfg.CompressSize, e.pools.textSource(700)); err != nil {
		return err
	}
	df1, err := t.client.DF(ctx)
	if err != nil {
		return err
	}
	plain, stored := df1.UniqueBytes-df0.UniqueBytes, df1.PhysicalBytes-df0.PhysicalBytes
	if plain <= 0 || stored <= 0 {
		return fmt.Errorf("compression: df did not grow (unique %+d, physical %+d bytes)", plain, stored)
	}
	rec(MCompression, float64(plain)/float64(stored))
	return os.Remove(path)
}
