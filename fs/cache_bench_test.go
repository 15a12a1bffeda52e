package fs

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"golang.org/x/sys/unix"
)

const coldFileSize = 256 << 20

// BenchmarkColdRandRead4K reads 4 KiB with O_DIRECT at a random block of a 16 KiB span (the unit
// fusevol verifies small reads by) not read before, so every read misses fusevol's chunk cache and
// reaches the store, as the first reads of a cold file do: the reads go round the file's chunks in
// a random order, a different span of each chunk every round, so a chunk comes back only after
// every other one was read (the cache holds half of the file) and a span never does, up to
// coldFileSize/spanSize reads (-benchtime 16384x). The stores under the targets stay in the
// kernel's page cache (Badger's files are memory-mapped): this measures the FUSE server's cost of a
// cold read, not the disk.
func BenchmarkColdRandRead4K(b *testing.B) {
	forEachTarget(b, func(b *testing.B, dir string) {
		p := filepath.Join(dir, "cold")
		writeFile(b, p, coldFileSize, benchIO)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		buf := alignedBuf(b, 4096)
		const cs = backend.DefaultChunkSize
		const spans = cs / spanSize
		r := rand.New(rand.NewPCG(5, 6))
		chunks := r.Perm(coldFileSize / cs)
		order := make([][]int, len(chunks)) // per chunk, the order its spans are read in
		for i := range order {
			order[i] = r.Perm(spans)
		}
		b.SetBytes(4096)
		i := 0
		for b.Loop() {
			round := i / len(chunks) % spans
			c := chunks[i%len(chunks)]
			off := int64(c)*cs + int64(order[c][round])*spanSize + int64(r.IntN(spanSize/4096))*4096
			i++
			if _, err := unix.Pread(fd, buf, off); err != nil {
				b.Fatal(err)
			}
		}
	})
}
