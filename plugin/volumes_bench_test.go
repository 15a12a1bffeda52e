package plugin

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// Sizes of BenchmarkManyVolumes: 50 writers of 8 MiB each, 400 MiB per phase (a few seconds on
// two cores).
const (
	manyVolumes  = 50
	manyFileSize = 8 << 20
	manyWriteIO  = 1 << 20
)

// BenchmarkManyVolumes is issue 12 §5's goal: 50 volumes of one daemon written at once stay
// under 512 MiB of anonymous memory, at no loss of throughput against the same data written to
// one volume. One daemon (in this process, with the soft memory limit `volctl daemon` sets)
// mounts 51 volumes through Docker's protocol. Each iteration writes 400 MiB (incompressible, no
// chunk repeats), closing each file (which commits it), three ways in rotating order: one 8 MiB
// file in each of 50 volumes by 50 concurrent writers; 50 such files in one volume, also by 50
// writers; one 400 MiB file by one writer. Reported: the process's peak RssAnon during the
// 50-volume phase (sampled every 10 ms; anon-MiB) and during the others (anon-1vol-MiB), each
// phase's MiB/s, and the ratios 50 volumes / 1 volume with 50 writers (x-vs-1vol) and with one
// writer (x-vs-1vol-1writer). Run it with (make bench runs it too)
//
//	go test -run '^$' -bench ManyVolumes -benchtime 3x ./plugin/
func BenchmarkManyVolumes(b *testing.B) {
	fusetest.Require(b)
	// On disk, as a real store is: /tmp may be a tmpfs, whose pages would compete for memory.
	root, err := os.MkdirTemp("/var/tmp", "fusevol-many-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	td := startDaemon(b, root, quiet)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(td.MemoryLimit()))

	dirs := make([]string, manyVolumes+1)
	for i := range dirs {
		name := fmt.Sprintf("v%02d", i)
		td.ok(b, "VolumeDriver.Create", fmt.Sprintf(`{"Name":%q}`, name))
		out := td.ok(b, "VolumeDriver.Mount", fmt.Sprintf(`{"Name":%q,"ID":"bench"}`, name))
		dirs[i], _ = out["Mountpoint"].(string)
	}
	spread, one := dirs[:manyVolumes], dirs[manyVolumes]
	var phases [3]manyPhase // 50 volumes, 1 volume, 1 volume with 1 writer
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		perVol := make([]string, manyVolumes)
		sameVol := make([]string, manyVolumes)
		for w := range manyVolumes {
			perVol[w] = filepath.Join(spread[w], fmt.Sprintf("f%d", i))
			sameVol[w] = filepath.Join(one, fmt.Sprintf("f%d-%02d", i, w))
		}
		big := []string{filepath.Join(one, fmt.Sprintf("big%d", i))}
		// Rotated, so that no phase always runs right after another (the background work a
		// phase leaves, such as compactions, falls on each in turn).
		for k := range 3 {
			switch p := (i + k) % 3; p {
			case 0:
				phases[p].run(b, uint64(3*i+p), perVol, manyFileSize)
			case 1:
				phases[p].run(b, uint64(3*i+p), sameVol, manyFileSize)
			case 2:
				phases[p].run(b, uint64(3*i+p), big, manyVolumes*manyFileSize)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(phases[0].anonPeak, "anon-MiB")
	b.ReportMetric(max(phases[1].anonPeak, phases[2].anonPeak), "anon-1vol-MiB")
	b.ReportMetric(phases[0].mibps(), "MiB/s-50vols")
	b.ReportMetric(phases[1].mibps(), "MiB/s-1vol")
	b.ReportMetric(phases[2].mibps(), "MiB/s-1vol-1writer")
	b.ReportMetric(phases[0].mibps()/phases[1].mibps(), "x-vs-1vol")
	b.ReportMetric(phases[0].mibps()/phases[2].mibps(), "x-vs-1vol-1writer")
}

// manyPhase accumulates one phase of BenchmarkManyVolumes over the iterations.
type manyPhase struct {
	bytes    int64
	took     time.Duration
	anonPeak float64 // MiB
}

func (p *manyPhase) mibps() float64 { return float64(p.bytes) / (1 << 20) / p.took.Seconds() }

// run writes size bytes to each path, one writer per path, all at once, and samples RssAnon
// meanwhile. The heap is returned to the kernel first, so each phase's peak is its own.
func (p *manyPhase) run(b *testing.B, seed uint64, paths []string, size int64) {
	b.Helper()
	debug.FreeOSMemory()
	stop := sampleRssAnon(b)
	start := time.Now()
	errs := make(chan error, len(paths))
	var wg sync.WaitGroup
	for w, path := range paths {
		wg.Go(func() { errs <- writeUnique(path, seed<<16|uint64(w), size) })
	}
	wg.Wait()
	p.took += time.Since(start)
	p.anonPeak = max(p.anonPeak, stop())
	p.bytes += int64(len(paths)) * size
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// writeUnique writes size bytes of incompressible data to path in 1 MiB writes and closes it.
// Every 4 KiB block starts with its own (stream, offset) stamp, so no chunk is stored once for
// two places (deduplication would flatter the result); the rest is random bytes drawn once.
func writeUnique(path string, stream uint64, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// The writers stand for containers, other processes: their buffers are shared anonymous
	// memory (RssShmem, outside the Go heap), so neither the daemon's RssAnon nor its garbage
	// collector counts them.
	buf, err := unix.Mmap(-1, 0, manyWriteIO, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		f.Close()
		return fmt.Errorf("writer buffer: %w", err)
	}
	defer unix.Munmap(buf)
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], stream)
	rand.NewChaCha8(seed).Read(buf)
	for off := int64(0); off < size; off += manyWriteIO {
		for blk := 0; blk < manyWriteIO; blk += 4096 {
			binary.LittleEndian.PutUint64(buf[blk:], stream)
			binary.LittleEndian.PutUint64(buf[blk+8:], uint64(off)+uint64(blk))
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// sampleRssAnon reads this process's RssAnon every 10 ms until the returned stop is called,
// which returns the largest value seen, in MiB.
func sampleRssAnon(b *testing.B) (stop func() float64) {
	b.Helper()
	done, peak := make(chan struct{}), make(chan float64, 1)
	first, err := rssAnonMiB()
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		top := first
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				peak <- top
				return
			case <-tick.C:
				if v, err := rssAnonMiB(); err == nil {
					top = max(top, v)
				}
			}
		}
	}()
	return func() float64 {
		close(done)
		return <-peak
	}
}

// rssAnonMiB is the RssAnon line of /proc/self/status: the process's anonymous resident memory
// (heap, stacks, Badger's in-memory tables), without mapped files.
func rssAnonMiB() (float64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "RssAnon:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			return 0, fmt.Errorf("RssAnon %q: %w", rest, err)
		}
		return kb / 1024, nil
	}
	return 0, errors.New("no RssAnon line in /proc/self/status")
}
