package backend

import (
	"context"
	"testing"

	"github.com/zeebo/blake3"
	lblake3 "lukechampine.com/blake3"
)

// BenchmarkChunkHash hashes a default-size chunk: zeebo's BLAKE3 (what whole-chunk verification
// uses) and lukechampine's (AVX-512: would switching pay?); then what an uncompressed chunk write
// pays for its body, before tree bodies (hash, copy) and now (hash and outboard in one pass, copy).
func BenchmarkChunkHash(b *testing.B) {
	plain := randBytes(DefaultChunkSize)
	for _, bc := range []struct {
		name string
		fn   func()
	}{
		{"zeebo", func() { blake3.Sum256(plain) }},
		{"lukechampine", func() { lblake3.Sum256(plain) }},
		{"write/codec-0-body", func() { blake3.Sum256(plain); _ = append([]byte{codecNone}, plain...) }}, // before tree bodies
		{"write/tree-body", func() { encodeTree(plain) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				bc.fn()
			}
		})
	}
}

// BenchmarkRead4KOfChunk reads 4 KiB of a chunk from the store, verified: by reading (and hashing)
// the whole chunk, as every cold read did, and by ReadChunkPart.
func BenchmarkRead4KOfChunk(b *testing.B) {
	ctx := context.Background()
	s := openTestStore(b)
	v := mustVolume(b, s, "v", nil)
	f := mustFile(b, v, RootIno, "f")
	const chunks = 64
	var cs []Chunk
	for i := range uint64(chunks) {
		cs = append(cs, v.PrepareChunk(i, randBytes(DefaultChunkSize + int(i))[i:]))
	}
	if _, err := v.CommitChunks(ctx, f, cs, 0); err != nil {
		b.Fatal(err)
	}
	whole, part := make([]byte, DefaultChunkSize), make([]byte, 4096)
	b.Run("whole", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := v.ReadChunk(ctx, f, uint64(i%chunks), whole); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("part", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if ok, err := v.ReadChunkPart(ctx, f, uint64(i%chunks), (i%61)*4096, part); err != nil || !ok {
				b.Fatal(ok, err)
			}
			i++
		}
	})
}
