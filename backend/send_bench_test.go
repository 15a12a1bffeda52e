package backend

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// benchMiB is the size of the benchmarks' volumes: FUSEVOL_BENCH_SEND_MIB, 32 by default (the
// machine is shared; the figures in the README say which size they were taken at).
func benchMiB(b *testing.B) int {
	if s := os.Getenv("FUSEVOL_BENCH_SEND_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("FUSEVOL_BENCH_SEND_MIB=%q", s)
		}
		return n
	}
	return 32
}

// benchTree writes the same random tree (files of 4 KiB to 4 MiB, random bytes each: nothing
// for dedup to find) into dir and into volume v, mib MiB in all.
func benchTree(b *testing.B, v *View, dir string, mib int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	buf := make([]byte, 4<<20)
	for i, left := 0, mib<<20; left > 0; i++ {
		size := min(left, 4<<10<<rng.IntN(11))
		left -= size
		sub := fmt.Sprintf("d%d", i%16)
		name := fmt.Sprintf("f%d", i)
		parent := RootIno
		if a, err := v.Lookup(ctx, RootIno, sub); err == nil {
			parent = a.Ino
		} else {
			a, err := v.Mknod(ctx, RootIno, sub, NewNode{Mode: syscall.S_IFDIR | 0o755})
			if err != nil {
				b.Fatal(err)
			}
			parent = a.Ino
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		data := buf[:size]
		randomBytes(data, uint64(i))
		ino := mustFile(b, v, parent, name)
		for off := 0; off < size; off += 1 << 20 {
			if _, err := v.WriteAt(ctx, ino, data[off:min(size, off+1<<20)], int64(off)); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, sub, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendReceive: send a snapshot through a pipe into a new store, against
// `tar -c | tar -x` of the same tree in the same run (both write to the page cache, neither
// syncs). Metrics: MiB/s of each and their ratio.
func BenchmarkSendReceive(b *testing.B) {
	if _, err := exec.LookPath("tar"); err != nil {
		b.Fatalf("tar: %v", err)
	}
	ctx := context.Background()
	mib := benchMiB(b)
	src := openTestStore(b)
	v := mustVolume(b, src, "v", map[string]string{"chunk-size": "128KiB"})
	dir := b.TempDir()
	benchTree(b, v, filepath.Join(dir, "src"), mib)
	if _, err := src.CreateSnapshot(ctx, "v", "s"); err != nil {
		b.Fatal(err)
	}
	var ours, tars time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst, err := Open(ctx, filepath.Join(dir, fmt.Sprintf("dst%d", i)), Options{GCInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		out := filepath.Join(dir, fmt.Sprintf("tar%d", i))
		if err := os.Mkdir(out, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		pr, pw := io.Pipe()
		go func() {
			_, err := src.Send(ctx, pw, "v", "s", "")
			pw.CloseWithError(err)
		}()
		if _, err := dst.Receive(ctx, pr, "w", ReceiveOptions{}); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		start = time.Now()
		cmd := exec.Command("bash", "-c", `set -o pipefail; tar -C "$1" -cf - . | tar -C "$2" -xf -`, "tar", filepath.Join(dir, "src"), out)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("tar: %v %s", err, msg)
		}
		tars += time.Since(start)
		b.StopTimer()
		dst.Close()
		os.RemoveAll(out)
		b.StartTimer()
	}
	perS := func(d time.Duration) float64 { return float64(mib*b.N) / d.Seconds() }
	b.ReportMetric(perS(ours), "send+receive-MiB/s")
	b.ReportMetric(perS(tars), "tar|tar-MiB/s")
	b.ReportMetric(perS(ours)/perS(tars), "ratio")
}

// BenchmarkIncrementalStream: the stream after overwriting 1% of a volume's chunks, against
// the full stream. Metrics: both sizes and their ratio in percent.
func BenchmarkIncrementalStream(b *testing.B) {
	ctx := context.Background()
	mib := benchMiB(b)
	s := openTestStore(b)
	v := mustVolume(b, s, "v", map[string]string{"chunk-size": "128KiB"})
	f := mustFile(b, v, RootIno, "data")
	buf := make([]byte, 1<<20)
	for i := 0; i < mib; i++ {
		randomBytes(buf, uint64(i))
		if _, err := v.WriteAt(ctx, f, buf, int64(i)<<20); err != nil {
			b.Fatal(err)
		}
	}
	s.CreateSnapshot(ctx, "v", "a")
	chunks := mib * 8
	rng := rand.New(rand.NewPCG(5, 6))
	chunk := make([]byte, 128<<10)
	for i := 0; i < max(1, chunks/100); i++ {
		randomBytes(chunk, 1<<32+uint64(i)) // new bytes, none the base holds
		if _, err := v.WriteAt(ctx, f, chunk, int64(rng.IntN(chunks))<<17); err != nil {
			b.Fatal(err)
		}
	}
	s.CreateSnapshot(ctx, "v", "b")
	full, err := s.Send(ctx, io.Discard, "v", "b", "")
	if err != nil {
		b.Fatal(err)
	}
	var incr SendStats
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if incr, err = s.Send(ctx, io.Discard, "v", "b", "a"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(full.Bytes), "full-bytes")
	b.ReportMetric(float64(incr.Bytes), "incremental-bytes")
	b.ReportMetric(100*float64(incr.Bytes)/float64(full.Bytes), "incremental-%")
}
