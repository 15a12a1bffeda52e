package fs

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"golang.org/x/sys/unix"
)

// BenchmarkCopyFile copies a 256 MiB file of random data on a mounted volume (default chunk
// size) twice per iteration, in the same run: with copy_file_range(2), which shares the chunks,
// and with a read+write loop (1 MiB buffers), the baseline. It reports both times, their ratio
// (speedup_x), and what each copy added to the store (unique chunk bytes, stored body bytes) and
// to the volume's usage as df sees it. FUSEVOL_COPY_MIB changes the size.
//
//	go test ./fs/ -run '^$' -bench BenchmarkCopyFile -benchtime 1x
func BenchmarkCopyFile(b *testing.B) {
	size := envMiB("FUSEVOL_COPY_MIB", 256) << 20
	tv := newVolume(b, backend.VolumeOptions{}, Options{})
	src := filepath.Join(tv.dir, "src")
	writeRandomFile(b, src, size)
	var cfr, rw time.Duration
	var cfrSpace, rwSpace copySpace
	b.ResetTimer()
	for i := range b.N {
		d, sp := timedCopy(b, tv, func() { copyWithRange(b, src, filepath.Join(tv.dir, "cfr"+strconv.Itoa(i)), size) })
		cfr, cfrSpace = cfr+d, sp
		d, sp = timedCopy(b, tv, func() { copyWithReadWrite(b, src, filepath.Join(tv.dir, "rw"+strconv.Itoa(i)), size) })
		rw, rwSpace = rw+d, sp
	}
	b.StopTimer()
	b.ReportMetric(float64(cfr.Milliseconds())/float64(b.N), "cfr_ms")
	b.ReportMetric(float64(rw.Milliseconds())/float64(b.N), "rw_ms")
	b.ReportMetric(rw.Seconds()/cfr.Seconds(), "speedup_x")
	b.ReportMetric(float64(cfrSpace.unique), "cfr_unique_B")
	b.ReportMetric(float64(rwSpace.unique), "rw_unique_B")
	b.ReportMetric(float64(cfrSpace.physical), "cfr_physical_B")
	b.ReportMetric(float64(rwSpace.physical), "rw_physical_B")
	b.ReportMetric(float64(cfrSpace.df), "cfr_df_used_B")
	b.ReportMetric(float64(rwSpace.df), "rw_df_used_B")
}

// copySpace is what a copy added: store chunk bytes (unique plain, stored) and df's used bytes.
type copySpace struct{ unique, physical, df int64 }

// timedCopy times fn, a copy closed before it returns, up to the commit of its data (the mount
// is flushed), and measures the space it took.
func timedCopy(b *testing.B, tv *testVolume, fn func()) (time.Duration, copySpace) {
	b.Helper()
	before := spaceOf(b, tv)
	b.StartTimer()
	start := time.Now()
	fn()
	if err := tv.mnt.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	b.StopTimer()
	after := spaceOf(b, tv)
	return d, copySpace{after.unique - before.unique, after.physical - before.physical, after.df - before.df}
}

func spaceOf(b *testing.B, tv *testVolume) copySpace {
	b.Helper()
	if err := tv.mnt.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	st, err := tv.store.Stats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(tv.dir, &fs); err != nil {
		b.Fatal(err)
	}
	return copySpace{st.UniqueBytes, st.PhysicalBytes, int64(fs.Blocks-fs.Bfree) * fs.Bsize}
}

func copyWithRange(b *testing.B, src, dst string, size int) {
	in, out := openPair(b, src, dst)
	defer in.Close()
	defer out.Close()
	for done := 0; done < size; {
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, size-done, 0)
		if err != nil || n == 0 {
			b.Fatalf("copy_file_range after %d bytes: %d, %v", done, n, err)
		}
		done += n
	}
}

// copyWithReadWrite copies by read(2) and write(2) (io.Copy would use copy_file_range).
func copyWithReadWrite(b *testing.B, src, dst string, size int) {
	in, out := openPair(b, src, dst)
	defer in.Close()
	defer out.Close()
	buf := make([]byte, 1<<20)
	for done := 0; done < size; {
		n, err := syscall.Read(int(in.Fd()), buf)
		if err != nil || n == 0 {
			b.Fatalf("read after %d bytes: %d, %v", done, n, err)
		}
		if _, err := out.Write(buf[:n]); err != nil {
			b.Fatal(err)
		}
		done += n
	}
}

func openPair(b *testing.B, src, dst string) (*os.File, *os.File) {
	b.Helper()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	return in, out
}

func writeRandomFile(b *testing.B, path string, size int) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for off := 0; off < size; off += len(buf) {
		p := buf[:min(len(buf), size-off)]
		_, _ = r.Read(p)
		if _, err := f.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// envMiB is a size in MiB from the environment, or def.
func envMiB(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
