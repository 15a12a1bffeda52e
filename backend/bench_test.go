package backend_test

// Benchmarks of the store's costs: snapshot and clone creation against volume size (they must
// not grow with it), live reads against the number of snapshots, chunk write/read throughput,
// metadata operations per second, and sequential throughput per chunk size (which picks the
// default). Run: go test -run '^$' -bench . -benchtime 200x ./backend/
// Snapshot and clone benchmarks report the median latency ("median-ns") besides the mean.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

func benchStore(b *testing.B) *backend.Store {
	b.Helper()
	st, err := backend.Open(context.Background(), b.TempDir(), backend.Options{GCInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func benchVolume(b *testing.B, st *backend.Store, name string, chunkSize int) *backend.View {
	b.Helper()
	ctx := context.Background()
	opts, err := backend.ParseVolumeOptions(nil)
	if err != nil {
		b.Fatal(err)
	}
	if chunkSize != 0 {
		opts.ChunkSize = chunkSize
	}
	if _, err := st.CreateVolume(ctx, name, opts); err != nil {
		b.Fatal(err)
	}
	v, err := st.OpenVolume(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// fillFiles creates n small files, 1000 per directory, each with one 4 KiB chunk so that the
// volume holds inodes, entries and chunk-map keys.
func fillFiles(b *testing.B, v *backend.View, n int) []backend.Ino {
	b.Helper()
	ctx := context.Background()
	data := make([]byte, 4096)
	var dir backend.Ino
	inos := make([]backend.Ino, 0, n)
	for i := 0; i < n; i++ {
		if i%1000 == 0 {
			a, err := v.Mknod(ctx, backend.RootIno, fmt.Sprintf("d%d", i/1000), backend.NewNode{Mode: syscall.S_IFDIR | 0o755})
			if err != nil {
				b.Fatal(err)
			}
			dir = a.Ino
		}
		a, err := v.Mknod(ctx, dir, fmt.Sprintf("f%d", i), backend.NewNode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			b.Fatal(err)
		}
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
		if _, err := v.WriteAt(ctx, a.Ino, data, 0); err != nil {
			b.Fatal(err)
		}
		inos = append(inos, a.Ino)
	}
	return inos
}

func reportMedian(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "median-ns")
}

var benchSizes = []int{1000, 100000}

// settle lets the filled store's LSM finish flushing and compacting (GC forces both), so that
// both volume sizes are measured on a quiet store rather than against background compaction.
func settle(b *testing.B, st *backend.Store) {
	b.Helper()
	if err := st.GC(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkSnapshotCreate(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		st := benchStore(b)
		fillFiles(b, benchVolume(b, st, "bench", 0), n)
		settle(b, st)
		seq := 0
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq++
				t0 := time.Now()
				if _, err := st.CreateSnapshot(ctx, "bench", fmt.Sprintf("s%d", seq)); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(t0))
			}
			b.StopTimer()
			reportMedian(b, times)
		})
	}
}

func BenchmarkCloneCreate(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes {
		st := benchStore(b)
		v := benchVolume(b, st, "bench", 0)
		fillFiles(b, v, n)
		if _, err := st.CreateSnapshot(ctx, "bench", "base"); err != nil {
			b.Fatal(err)
		}
		settle(b, st)
		opts := v.Volume().Options
		opts.From = "bench@base"
		seq := 0
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq++
				t0 := time.Now()
				if _, err := st.CreateVolume(ctx, fmt.Sprintf("c%d", seq), opts); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(t0))
			}
			b.StopTimer()
			reportMedian(b, times)
		})
	}
}

// BenchmarkLookupAfterSnapshots measures Lookup+GetAttr on the live volume after k snapshots,
// each taken after changing every file's attributes (so each file has k+1 inode versions).
func BenchmarkLookupAfterSnapshots(b *testing.B) {
	ctx := context.Background()
	const files = 200
	for _, k := range []int{0, 100, 1000} {
		st := benchStore(b)
		v := benchVolume(b, st, "bench", 0)
		inos := fillFiles(b, v, files)
		for s := 0; s < k; s++ {
			for _, ino := range inos[:files/(1+s%10)] {
				if _, err := v.SetAttr(ctx, ino, backend.SetAttr{Valid: backend.SetMode, Mode: uint32(0o600 + s%2)}); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := st.CreateSnapshot(ctx, "bench", fmt.Sprintf("s%d", s)); err != nil {
				b.Fatal(err)
			}
		}
		settle(b, st)
		dir, err := v.Lookup(ctx, backend.RootIno, "d0")
		if err != nil {
			b.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		b.Run(fmt.Sprintf("snapshots=%d", k), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				j := r.IntN(files)
				a, err := v.Lookup(ctx, dir.Ino, fmt.Sprintf("f%d", j))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := v.GetAttr(ctx, a.Ino); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// uniqueData fills buf with random bytes and stamps every 64 KiB piece with seq, so that no two
// calls produce an equal chunk (dedup would make writes look free).
type uniqueData struct {
	buf []byte
	seq uint64
}

func newUniqueData(n int) *uniqueData {
	u := &uniqueData{buf: make([]byte, n)}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range u.buf {
		u.buf[i] = byte(r.Uint32())
	}
	return u
}

func (u *uniqueData) next() []byte {
	u.seq++
	for off := 0; off < len(u.buf); off += 64 << 10 {
		for j := 0; j < 8; j++ {
			u.buf[off+j] = byte(u.seq >> (8 * j))
		}
	}
	return u.buf
}

const benchRing = 64 // MiB: writes cycle over a 64 MiB file, so overwrites free old chunks

func benchFile(b *testing.B, v *backend.View) backend.Ino {
	b.Helper()
	a, err := v.Mknod(context.Background(), backend.RootIno, "data", backend.NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		b.Fatal(err)
	}
	return a.Ino
}

func BenchmarkWriteAt(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b, benchStore(b), "bench", 0)
	ino := benchFile(b, v)
	u := newUniqueData(1 << 20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.WriteAt(ctx, ino, u.next(), int64(i%benchRing)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCommitChunks(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b, benchStore(b), "bench", 0)
	ino := benchFile(b, v)
	cs := v.ChunkSize()
	u := newUniqueData(1 << 20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data := u.next()
		var chunks []backend.Chunk
		base := uint64(i%benchRing) << 20
		for off := 0; off < len(data); off += cs {
			chunks = append(chunks, v.PrepareChunk((base+uint64(off))/uint64(cs), data[off:min(off+cs, len(data))]))
		}
		if _, err := v.CommitChunks(ctx, ino, chunks, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// prefill writes size bytes of unique data into a new file.
func prefill(b *testing.B, v *backend.View, size int) backend.Ino {
	b.Helper()
	ino := benchFile(b, v)
	u := newUniqueData(1 << 20)
	for off := 0; off < size; off += 1 << 20 {
		if _, err := v.WriteAt(context.Background(), ino, u.next(), int64(off)); err != nil {
			b.Fatal(err)
		}
	}
	return ino
}

func BenchmarkReadAt(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b, benchStore(b), "bench", 0)
	ino := prefill(b, v, benchRing<<20)
	buf := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, err := v.ReadAt(ctx, ino, buf, int64(i%benchRing)<<20); err != nil || n != len(buf) {
			b.Fatalf("ReadAt: %d, %v", n, err)
		}
	}
}

func BenchmarkReadChunk(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b, benchStore(b), "bench", 0)
	ino := prefill(b, v, benchRing<<20)
	cs := v.ChunkSize()
	chunks := uint64(benchRing<<20) / uint64(cs)
	buf := make([]byte, cs)
	b.SetBytes(int64(cs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, err := v.ReadChunk(ctx, ino, uint64(i)%chunks, buf); err != nil || n != cs {
			b.Fatalf("ReadChunk: %d, %v", n, err)
		}
	}
}

// BenchmarkMetadataOps: one op is Mknod + GetAttr + Unlink + Forget; ops/s counts each call.
func BenchmarkMetadataOps(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b, benchStore(b), "bench", 0)
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("f%d", i)
		a, err := v.Mknod(ctx, backend.RootIno, name, backend.NewNode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := v.GetAttr(ctx, a.Ino); err != nil {
			b.Fatal(err)
		}
		if err := v.Unlink(ctx, backend.RootIno, name); err != nil {
			b.Fatal(err)
		}
		if err := v.Forget(ctx, a.Ino); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(4*b.N)/time.Since(t0).Seconds(), "ops/s")
}

// BenchmarkChunkSize compares chunk sizes on what the fs layer does: sequential 64 MiB written as
// whole chunks (PrepareChunk + one CommitChunks per chunk, then Sync) and read back with ReadChunk.
func BenchmarkChunkSize(b *testing.B) {
	ctx := context.Background()
	const total = 64 << 20
	for _, cs := range []int{64 << 10, 256 << 10, 1 << 20, 4 << 20} {
		name := fmt.Sprintf("cs=%dKiB", cs>>10)
		st := benchStore(b)
		v := benchVolume(b, st, "bench", cs)
		ino := prefill(b, v, total) // so that read runs alone too
		u := newUniqueData(cs)
		buf := make([]byte, cs)
		b.Run(name+"/write", func(b *testing.B) {
			b.SetBytes(total)
			for i := 0; i < b.N; i++ {
				for idx := 0; idx < total/cs; idx++ {
					c := v.PrepareChunk(uint64(idx), u.next())
					if _, err := v.CommitChunks(ctx, ino, []backend.Chunk{c}, 0); err != nil {
						b.Fatal(err)
					}
				}
				if err := st.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/read", func(b *testing.B) {
			b.SetBytes(total)
			for i := 0; i < b.N; i++ {
				for idx := 0; idx < total/cs; idx++ {
					if n, err := v.ReadChunk(ctx, ino, uint64(idx), buf); err != nil || n != cs {
						b.Fatalf("ReadChunk: %d, %v", n, err)
					}
				}
			}
		})
	}
}

// BenchmarkSnapshotScaling alternates snapshot and clone creation on a 1k-file and a 100k-file
// volume, so that machine noise hits both alike, and reports each median and their ratio
// (100k / 1k: constant cost means close to 1). One op is one snapshot and one clone per volume.
func BenchmarkSnapshotScaling(b *testing.B) {
	ctx := context.Background()
	stores := make([]*backend.Store, len(benchSizes))
	opts := make([]backend.VolumeOptions, len(benchSizes))
	for i, n := range benchSizes {
		stores[i] = benchStore(b)
		v := benchVolume(b, stores[i], "bench", 0)
		fillFiles(b, v, n)
		if _, err := stores[i].CreateSnapshot(ctx, "bench", "base"); err != nil {
			b.Fatal(err)
		}
		settle(b, stores[i])
		opts[i] = v.Volume().Options
		opts[i].From = "bench@base"
	}
	snap := make([][]time.Duration, len(benchSizes))
	clone := make([][]time.Duration, len(benchSizes))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, st := range stores {
			t0 := time.Now()
			if _, err := st.CreateSnapshot(ctx, "bench", fmt.Sprintf("s%d", i)); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := st.CreateVolume(ctx, fmt.Sprintf("c%d", i), opts[j]); err != nil {
				b.Fatal(err)
			}
			snap[j] = append(snap[j], t1.Sub(t0))
			clone[j] = append(clone[j], time.Since(t1))
		}
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds())
	}
	s1, s2, c1, c2 := median(snap[0]), median(snap[1]), median(clone[0]), median(clone[1])
	b.ReportMetric(s1, "snap-1k-median-ns")
	b.ReportMetric(s2, "snap-100k-median-ns")
	b.ReportMetric(s2/s1, "snap-ratio")
	b.ReportMetric(c1, "clone-1k-median-ns")
	b.ReportMetric(c2, "clone-100k-median-ns")
	b.ReportMetric(c2/c1, "clone-ratio")
}

// BenchmarkSmallWrites: random 4 KiB writes into a prefilled file, committed as extents
// (PrepareExtent + CommitChunks, compacting as they accumulate) and, in the same run, as the
// whole-chunk read-modify-write the write-back did before extents (ReadChunk, merge, PrepareChunk,
// CommitChunks). Reports both costs and rmw/extent, the speed-up.
func BenchmarkSmallWrites(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	v := benchVolume(b, st, "bench", 0)
	ino := prefill(b, v, benchRing<<20)
	cs := v.ChunkSize()
	r := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, 4096)
	buf := make([]byte, cs)
	pick := func() (uint64, int) {
		off := r.IntN(benchRing<<20-len(page)) &^ (len(page) - 1)
		for i := range page {
			page[i] = byte(r.Uint32())
		}
		return uint64(off / cs), off % cs
	}
	run := func(extents bool) time.Duration {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			idx, in := pick()
			var c backend.Chunk
			if extents {
				c = v.PrepareExtent(idx, in, page)
			} else {
				n, err := v.ReadChunk(ctx, ino, idx, buf)
				if err != nil {
					b.Fatal(err)
				}
				copy(buf[in:], page)
				c = v.PrepareChunk(idx, buf[:max(n, in+len(page))])
			}
			if _, err := v.CommitChunks(ctx, ino, []backend.Chunk{c}, 0); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	b.ResetTimer()
	ext := run(true)
	rmw := run(false)
	b.StopTimer()
	b.ReportMetric(float64(ext.Nanoseconds())/float64(b.N), "extent-ns/write")
	b.ReportMetric(float64(rmw.Nanoseconds())/float64(b.N), "rmw-ns/write")
	b.ReportMetric(float64(rmw)/float64(ext), "rmw/extent")
}
