package fs

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"golang.org/x/sys/unix"
)

const coldFileSize = 256 << 20

// BenchmarkColdRandRead4K reads 4 KiB with O_DIRECT at a random block of a chunk-sized region
// not read before (a random permutation of the file's regions), so every read misses fusevol's
// chunk cache and reaches the store, as the first reads of a cold file do. The stores under the
// targets stay in the kernel's page cache (Badger's files are memory-mapped): this measures the
// FUSE server's cost of a cold read, not the disk. Run with -benchtime up to
// coldFileSize/ChunkSize x (1024x) for every read to be cold.
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
		r := rand.New(rand.NewPCG(5, 6))
		perm := r.Perm(coldFileSize / cs)
		b.SetBytes(4096)
		i := 0
		for b.Loop() {
			off := int64(perm[i%len(perm)])*cs + int64(r.IntN(cs/4096))*4096
			i++
			if _, err := unix.Pread(fd, buf, off); err != nil {
				b.Fatal(err)
			}
		}
	})
}
