package backend

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkCloneRange copies a 64 MiB file (default chunk size) in the store twice per
// iteration, in the same run: with CloneRange at aligned offsets (shared chunks) and by
// ReadAt+WriteAt in 1 MiB pieces (what a copy without it costs the store: every chunk read,
// hashed, deduplicated). It reports both times and their ratio.
//
//	go test ./backend/ -run '^$' -bench BenchmarkCloneRange -benchtime 3x
func BenchmarkCloneRange(b *testing.B) {
	const size = 64 << 20
	ctx := context.Background()
	s := openTestStore(b)
	v := mustVolume(b, s, "v", nil)
	src := mustFile(b, v, RootIno, "src")
	r := rand.NewChaCha8([32]byte{2})
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		_, _ = r.Read(buf)
		if _, err := v.WriteAt(ctx, src, buf, off); err != nil {
			b.Fatal(err)
		}
	}
	var clone, plain time.Duration
	b.ResetTimer()
	for i := range b.N {
		dst := mustFile(b, v, RootIno, "c"+string(rune('a'+i%26))+time.Now().Format("150405.000000"))
		start := time.Now()
		if n, err := v.CloneRange(ctx, src, 0, dst, 0, size); err != nil || n != size {
			b.Fatalf("CloneRange = %d, %v", n, err)
		}
		clone += time.Since(start)
		dst = mustFile(b, v, RootIno, "p"+string(rune('a'+i%26))+time.Now().Format("150405.000000"))
		start = time.Now()
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := v.ReadAt(ctx, src, buf, off); err != nil {
				b.Fatal(err)
			}
			if _, err := v.WriteAt(ctx, dst, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		plain += time.Since(start)
	}
	b.ReportMetric(float64(clone.Microseconds())/float64(b.N)/1000, "clone_ms")
	b.ReportMetric(float64(plain.Microseconds())/float64(b.N)/1000, "plain_ms")
	b.ReportMetric(plain.Seconds()/clone.Seconds(), "speedup_x")
}
