package backend

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/zeebo/blake3"
)

// TestTreeRootIsChunkHash: a tree body's root is the chunk's plain BLAKE3-256 hash, at every
// length (so addresses and dedup do not depend on the body format), and the body round-trips.
func TestTreeRootIsChunkHash(t *testing.T) {
	c, err := newCodecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 1000, 1024, GroupSize - 1, GroupSize, GroupSize + 1, 3 * GroupSize, 64 << 10, 256<<10 - 7, 256 << 10, MaxChunkSize} {
		plain := randBytes(n)
		body, h := encodeTree(plain)
		if h != blake3.Sum256(plain) {
			t.Fatalf("%d bytes: tree root differs from BLAKE3-256", n)
		}
		out, err := c.decode(body, make([]byte, MaxChunkSize))
		if err != nil || !bytes.Equal(out, plain) {
			t.Fatalf("%d bytes: decode: %v", n, err)
		}
		if !c.verifyBody(body, h, make([]byte, MaxChunkSize)) {
			t.Fatalf("%d bytes: verifyBody refuses an intact body", n)
		}
	}
}

// chunkHash returns the address of chunk index of ino.
func chunkHash(t *testing.T, v *View, ino Ino, index uint64) Hash {
	t.Helper()
	var h Hash
	if err := v.read(func(tx *tx) error {
		ref, _, err := tx.getChunk(ino, index)
		if err == nil && ref != nil {
			h = ref.hash
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

func setBody(t *testing.T, s *Store, h Hash, body []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(bodyKey(h), body) }); err != nil {
		t.Fatal(err)
	}
}

func getBody(t *testing.T, s *Store, h Hash) []byte {
	t.Helper()
	var body []byte
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(bodyKey(h))
		if err != nil {
			return err
		}
		body, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return body
}

// TestReadChunkPart reads parts of chunks of every kind: what verifies in part returns the
// chunk's bytes (zeros past its end), what cannot (compressed, old, extents) says so, and damage
// inside the part read is ErrCorrupt while damage elsewhere in the body is left to whole reads.
func TestReadChunkPart(t *testing.T) {
	ctx := context.Background()
	const cs = 256 << 10
	data := randBytes(cs + 40<<10) // one whole chunk and a short one
	tests := []struct {
		name    string
		opts    map[string]string
		prepare func(t *testing.T, s *Store, v *View, f Ino) // damage or rewrite before reading
		index   uint64
		off, n  int
		ok      bool
		corrupt bool
		damaged bool // whole reads fail: compare with the written bytes
	}{
		{name: "one group", index: 0, off: 5 * GroupSize, n: 4096, ok: true},
		{name: "across groups", index: 0, off: 2*GroupSize - 100, n: 4096, ok: true},
		{name: "whole chunk", index: 0, off: 0, n: cs, ok: true},
		{name: "short chunk, past its end", index: 1, off: 36 << 10, n: 16 << 10, ok: true},
		{name: "short chunk, all past its end", index: 1, off: 128 << 10, n: 4096, ok: true},
		{name: "hole", index: 7, off: 0, n: 4096, ok: true},
		{name: "compressed volume, incompressible chunk", opts: map[string]string{"compression": "zstd"}, index: 0, off: 0, n: 4096, ok: true},
		{name: "compressed body", opts: map[string]string{"compression": "zstd"}, index: 0, off: 0, n: 4096, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			setBody(t, s, chunkHash(t, v, f, 0), s.codecs.zenc.EncodeAll(data[:cs], []byte{codecZstd}))
		}},
		{name: "extents elsewhere in the file", index: 0, off: 0, n: 4096, ok: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			if _, err := v.WriteAt(ctx, f, []byte("x"), 3*cs); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "extents over the part", index: 0, off: 5 * GroupSize, n: 4096, ok: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			for _, w := range []struct{ off, n int }{{5*GroupSize - 10, 20}, {5*GroupSize + 100, 50}, {5*GroupSize + 120, 4000}, {5*GroupSize + 4090, 100}} {
				if _, err := v.WriteAt(ctx, f, randBytes(w.n), int64(w.off)); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{name: "extent past a short chunk's end", index: 1, off: 32 << 10, n: 16 << 10, ok: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			if _, err := v.WriteAt(ctx, f, randBytes(300), int64(cs+44<<10)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "extent in a hole", index: 7, off: 0, n: 4096, ok: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			if _, err := v.WriteAt(ctx, f, randBytes(300), int64(7*cs+1000)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "old body without outboard", index: 0, off: 0, n: 4096, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			setBody(t, s, chunkHash(t, v, f, 0), append([]byte{codecNone}, data[:cs]...))
		}},
		{name: "damage inside the part", index: 0, off: 5 * GroupSize, n: 4096, corrupt: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			h := chunkHash(t, v, f, 0)
			body := getBody(t, s, h)
			body[len(body)-cs+5*GroupSize+GroupSize-1] ^= 1 // last byte of the group, outside the 4 KiB read
			setBody(t, s, h, body)
		}},
		{name: "damage outside the part", index: 0, off: 5 * GroupSize, n: 4096, ok: true, damaged: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			h := chunkHash(t, v, f, 0)
			body := getBody(t, s, h)
			body[len(body)-cs+7*GroupSize] ^= 1
			setBody(t, s, h, body)
		}},
		{name: "damaged outboard", index: 0, off: 5 * GroupSize, n: 4096, corrupt: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			h := chunkHash(t, v, f, 0)
			body := getBody(t, s, h)
			body[2+8+3] ^= 1 // the root's left child
			setBody(t, s, h, body)
		}},
		{name: "truncated body", index: 0, off: 0, n: 4096, corrupt: true, prepare: func(t *testing.T, s *Store, v *View, f Ino) {
			h := chunkHash(t, v, f, 0)
			setBody(t, s, h, getBody(t, s, h)[:100])
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			v := mustVolume(t, s, "v", tc.opts)
			f := mustFile(t, v, RootIno, "f")
			chunks := []Chunk{v.PrepareChunk(0, data[:cs]), v.PrepareChunk(1, data[cs:])}
			if _, err := v.CommitChunks(ctx, f, chunks, 0); err != nil {
				t.Fatal(err)
			}
			if tc.prepare != nil {
				tc.prepare(t, s, v, f)
			}
			dst := bytes.Repeat([]byte{0xaa}, tc.n)
			ok, err := v.ReadChunkPart(ctx, f, tc.index, tc.off, dst)
			if tc.corrupt {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("damaged body: ok %v, err %v; want ErrCorrupt", ok, err)
				}
				return
			}
			if err != nil || ok != tc.ok {
				t.Fatalf("ok %v, err %v; want ok %v", ok, err, tc.ok)
			}
			if !ok {
				if !bytes.Equal(dst, bytes.Repeat([]byte{0xaa}, tc.n)) {
					t.Fatal("a refused part read wrote into dst")
				}
				return
			}
			whole := make([]byte, cs)
			if tc.damaged {
				copy(whole, data[int(tc.index)*cs:])
			} else if _, err := v.ReadChunk(ctx, f, tc.index, whole); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst, whole[tc.off:tc.off+tc.n]) {
				t.Fatal("part read returns other bytes than a whole read")
			}
		})
	}
}

// TestReadChunkPartExtents writes random small ranges (extents) over tree-body chunks and holes
// and compares random part reads with whole reads after each.
func TestReadChunkPartExtents(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", nil)
	f := mustFile(t, v, RootIno, "f")
	cs := v.ChunkSize()
	chunks := []Chunk{v.PrepareChunk(0, randBytes(cs)), v.PrepareChunk(2, randBytes(cs-5000))}
	if _, err := v.CommitChunks(ctx, f, chunks, uint64(4*cs)); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(7))
	whole, part := make([]byte, cs), make([]byte, 2*GroupSize)
	for i := range 200 {
		if i%4 == 0 {
			n := 1 + r.Intn(8000)
			if _, err := v.WriteAt(ctx, f, randBytes(n), int64(r.Intn(4*cs-n))); err != nil {
				t.Fatal(err)
			}
		}
		idx := uint64(r.Intn(4))
		n := 1 + r.Intn(len(part))
		off := r.Intn(cs - n + 1)
		ok, err := v.ReadChunkPart(ctx, f, idx, off, part[:n])
		if err != nil || !ok {
			t.Fatalf("step %d: part read: %v %v", i, ok, err)
		}
		if _, err := v.ReadChunk(ctx, f, idx, whole); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(part[:n], whole[off:off+n]) {
			t.Fatalf("step %d: chunk %d, %d bytes at %d: part read differs from a whole read", i, idx, n, off)
		}
	}
}

// TestReadChunkPartBounds refuses spans outside the chunk.
func TestReadChunkPartBounds(t *testing.T) {
	s := openTestStore(t)
	v := mustVolume(t, s, "v", nil)
	f := mustFile(t, v, RootIno, "f")
	for _, c := range []struct{ off, n int }{{-1, 10}, {v.ChunkSize() - 10, 11}} {
		if _, err := v.ReadChunkPart(context.Background(), f, 0, c.off, make([]byte, c.n)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%d bytes at %d: %v, want ErrInvalid", c.n, c.off, err)
		}
	}
}

// TestFsckChecksOutboard: a damaged outboard is a damaged body, even though whole reads of the
// chunk (which do not use it) still verify.
func TestFsckChecksOutboard(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", nil)
	f := mustFile(t, v, RootIno, "f")
	if _, err := v.WriteAt(ctx, f, randBytes(256<<10), 0); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
	h := chunkHash(t, v, f, 0)
	body := getBody(t, s, h)
	body[20] ^= 1
	setBody(t, s, h, body)
	if _, err := v.ReadChunk(ctx, f, 0, make([]byte, 256<<10)); err != nil {
		t.Fatalf("whole read: %v", err)
	}
	rep, err := s.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() || len(rep.Damaged) != 1 || rep.Damaged[0] != "v:/f" {
		t.Fatalf("fsck: damaged %v, problems %v", rep.Damaged, rep.Problems)
	}
}

// FuzzTreeBody feeds arbitrary bytes to the tree-body parser and part verifier (errors and
// refusals are fine, panics are not), and uses them as a chunk's plain bytes: every group of the
// encoded body verifies, and a flipped byte fails its group.
func FuzzTreeBody(f *testing.F) {
	body, _ := encodeTree(randBytes(3*GroupSize + 5))
	f.Add(body, uint16(0), uint16(100))
	f.Add([]byte{codecTree, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'x'}, uint16(0), uint16(1))
	f.Add([]byte{codecTree, 13, 1, 0, 0, 0, 0, 0, 0, 0, 'x'}, uint16(0), uint16(1))
	c, err := newCodecs()
	if err != nil {
		f.Fatal(err)
	}
	buf := make([]byte, MaxChunkSize)
	f.Fuzz(func(t *testing.T, b []byte, off, n uint16) {
		var h Hash
		if tb, err := parseTree(b); err == nil {
			tb.verifyPart(int(off), int(off)+int(n), h)
		}
		if len(b) == 0 {
			return
		}
		if b[0] == codecTree { // the other codecs are the compression libraries' to fuzz
			c.decode(b, buf)
			c.verifyBody(b, h, buf)
		}
		body, h := encodeTree(b)
		tb, err := parseTree(body)
		if err != nil || !bytes.Equal(tb.plain, b) {
			t.Fatalf("tree body of %d bytes does not parse back: %v", len(b), err)
		}
		lo := int(off) % len(b)
		hi := lo + 1 + int(n)%GroupSize
		if !tb.verifyPart(lo, hi, h) {
			t.Fatalf("[%d,%d) of an intact %d-byte body fails", lo, hi, len(b))
		}
		tb.plain[lo] ^= 1
		if tb.verifyPart(lo, hi, h) {
			t.Fatalf("[%d,%d) verifies with byte %d flipped", lo, hi, lo)
		}
	})
}
