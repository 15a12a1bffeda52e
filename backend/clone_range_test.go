package backend

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// span is a write of len bytes of seeded random data at off (zero: zeros, to make a hole).
type span struct {
	off, len int64
	zero     bool
}

// writeSpans writes the spans into ino and into the model.
func writeSpans(t *testing.T, v *View, ino Ino, model *[]byte, spans []span, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	for _, s := range spans {
		d := make([]byte, s.len)
		if !s.zero {
			for i := range d {
				d[i] = byte(r.Uint32())
			}
		}
		if _, err := v.WriteAt(context.Background(), ino, d, s.off); err != nil {
			t.Fatal(err)
		}
		if end := s.off + s.len; end > int64(len(*model)) {
			*model = append(*model, make([]byte, end-int64(len(*model)))...)
		}
		copy((*model)[s.off:], d)
	}
}

// modelCopy is copy_file_range on the model: shortened at the source's end.
func modelCopy(src, dst []byte, srcOff, dstOff, n int64) ([]byte, int64) {
	if srcOff >= int64(len(src)) {
		return dst, 0
	}
	n = min(n, int64(len(src))-srcOff)
	if n == 0 {
		return dst, 0
	}
	if end := dstOff + n; end > int64(len(dst)) {
		dst = append(dst, make([]byte, end-int64(len(dst)))...)
	}
	copy(dst[dstOff:], src[srcOff:srcOff+n])
	return dst, n
}

const c = eChunk

// TestCloneRange checks CloneRange against copy_file_range(2)'s semantics on a byte model, and
// that the store stays exact (fsck) and shares what it can (LogicalBytes grows, UniqueBytes
// does not, when every piece is shared).
func TestCloneRange(t *testing.T) {
	tests := []struct {
		name            string
		src, dst        []span
		same            bool // copy within the source file
		srcOff, dstOff  int64
		n               int64
		want            int64
		wantErr         error
		allShared       bool // no new chunk bodies
		holesAt         []uint64
		wantDataChunks  int // -1: not checked
		extentsInSource bool
	}{
		{name: "aligned whole chunks", src: []span{{0, 3 * c, false}}, n: 3 * c, want: 3 * c, allShared: true},
		{name: "to another aligned offset", src: []span{{0, 3 * c, false}}, dstOff: 5 * c, n: 3 * c, want: 3 * c, allShared: true},
		{name: "length past EOF", src: []span{{0, 2 * c, false}}, n: 10 * c, want: 2 * c, allShared: true},
		{name: "tail chunk partial", src: []span{{0, 2*c + 100, false}}, n: 3 * c, want: 2*c + 100},
		{name: "equally misaligned", src: []span{{0, 4 * c, false}}, srcOff: 100, dstOff: 100, n: 3 * c, want: 3 * c},
		{name: "misaligned", src: []span{{0, 3 * c, false}}, srcOff: 0, dstOff: 1000, n: 3 * c, want: 3 * c},
		{name: "source offset at EOF", src: []span{{0, c, false}}, srcOff: c, n: c, want: 0},
		{name: "source offset past EOF", src: []span{{0, c, false}}, srcOff: 5 * c, n: c, want: 0},
		{name: "zero length", src: []span{{0, c, false}}, n: 0, want: 0},
		{name: "holes stay holes", src: []span{{0, c, false}, {3 * c, c, false}}, n: 4 * c, want: 4 * c, allShared: true, holesAt: []uint64{1, 2}},
		{name: "zeros at a misaligned offset become holes", src: []span{{0, c, false}, {3 * c, c, false}}, dstOff: 7, n: 4 * c, want: 4 * c, holesAt: []uint64{2}},
		{name: "destination grows", src: []span{{0, 2 * c, false}}, dst: []span{{0, 100, false}}, dstOff: 4 * c, n: 2 * c, want: 2 * c, allShared: true, holesAt: []uint64{1, 2, 3}},
		{name: "destination overwritten", src: []span{{0, 3 * c, false}}, dst: []span{{0, 5 * c, false}, {c + 10, 50, false}}, dstOff: c, n: 2 * c, want: 2 * c, allShared: true},
		{name: "destination overwritten misaligned", src: []span{{0, 3 * c, false}}, dst: []span{{0, 5 * c, false}}, srcOff: 3, dstOff: c + 5, n: 2 * c, want: 2 * c},
		{name: "source chunk with extents", src: []span{{0, 2 * c, false}, {c + 10, 100, false}}, n: 2 * c, want: 2 * c, extentsInSource: true},
		{name: "same file, no overlap", src: []span{{0, 3 * c, false}}, same: true, dstOff: 4 * c, n: 3 * c, want: 3 * c, allShared: true},
		{name: "same file, adjacent", src: []span{{0, 2 * c, false}}, same: true, srcOff: 0, dstOff: 2 * c, n: 2 * c, want: 2 * c, allShared: true},
		{name: "same file, overlapping", src: []span{{0, 3 * c, false}}, same: true, dstOff: c, n: 2 * c, wantErr: ErrInvalid},
		{name: "same file, overlapping only before shortening", src: []span{{0, c, false}}, same: true, dstOff: 2 * c, n: 4 * c, want: c, allShared: true},
		{name: "negative offset", src: []span{{0, c, false}}, srcOff: -1, n: c, wantErr: ErrInvalid},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openTestStore(t)
			v := extentVolume(t, s, "v", "")
			src := mustFile(t, v, RootIno, "src")
			var smodel, dmodel []byte
			writeSpans(t, v, src, &smodel, tc.src, uint64(i))
			dst := src
			if !tc.same {
				dst = mustFile(t, v, RootIno, "dst")
				writeSpans(t, v, dst, &dmodel, tc.dst, uint64(i)+100)
			}
			if tc.extentsInSource && inodeOf(t, v, src).extents == 0 {
				t.Fatal("setup: the source has no extents")
			}
			before, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a0, _ := v.GetAttr(ctx, dst)
			got, err := v.CloneRange(ctx, src, tc.srcOff, dst, tc.dstOff, tc.n)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || got != 0 {
					t.Fatalf("CloneRange = %d, %v; want 0, %v", got, err, tc.wantErr)
				}
				fsckClean(t, s)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("CloneRange = %d, %v; want %d", got, err, tc.want)
			}
			if tc.same {
				smodel, _ = modelCopy(smodel, smodel, tc.srcOff, tc.dstOff, tc.n)
				dmodel = smodel
			} else {
				dmodel, _ = modelCopy(smodel, dmodel, tc.srcOff, tc.dstOff, tc.n)
			}
			if b := readAll(t, v, src); !bytes.Equal(b, smodel) {
				t.Fatalf("source changed: %d bytes, want %d", len(b), len(smodel))
			}
			if b := readAll(t, v, dst); !bytes.Equal(b, dmodel) {
				t.Fatalf("destination: %d bytes, want %d (first difference at %d)", len(b), len(dmodel), firstDiff(b, dmodel))
			}
			a1, _ := v.GetAttr(ctx, dst)
			if got > 0 && a1.Mtime == a0.Mtime {
				t.Errorf("mtime not updated")
			}
			if got == 0 && a1 != a0 {
				t.Errorf("a copy of nothing changed the destination: %+v -> %+v", a0, a1)
			}
			for _, h := range tc.holesAt {
				if ref := chunkRefOf(t, v, dst, h); ref != nil {
					t.Errorf("destination chunk %d is not a hole", h)
				}
			}
			after, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.allShared && (after.UniqueBytes > before.UniqueBytes || after.PhysicalBytes > before.PhysicalBytes) {
				t.Errorf("a shared copy stored bodies: unique %d -> %d, physical %d -> %d", before.UniqueBytes, after.UniqueBytes, before.PhysicalBytes, after.PhysicalBytes)
			}
			fsckClean(t, s)
		})
	}
}

func chunkRefOf(t *testing.T, v *View, ino Ino, idx uint64) *chunkRef {
	t.Helper()
	var ref *chunkRef
	if err := v.read(func(tx *tx) error {
		var err error
		ref, _, err = tx.getChunk(ino, idx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestCloneRangeIndependent: after a shared copy, writes, truncations and deletion of either
// file leave the other as it was, refcounts exact throughout; snapshots are untouched by a copy
// into the live volume; a snapshot view refuses to be written.
func TestCloneRangeIndependent(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := extentVolume(t, s, "v", "")
	src := mustFile(t, v, RootIno, "src")
	dst := mustFile(t, v, RootIno, "dst")
	var smodel, dmodel []byte
	writeSpans(t, v, src, &smodel, []span{{0, 4 * c, false}}, 1)
	if _, err := s.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if n, err := v.CloneRange(ctx, src, 0, dst, 0, 4*c); err != nil || n != 4*c {
		t.Fatalf("CloneRange = %d, %v", n, err)
	}
	dmodel, _ = modelCopy(smodel, dmodel, 0, 0, 4*c)
	if ref := chunkRefOf(t, v, dst, 1); ref == nil || *ref != *chunkRefOf(t, v, src, 1) {
		t.Fatalf("chunk 1 is not shared")
	}
	writeSpans(t, v, src, &smodel, []span{{c + 7, 300, false}, {2 * c, c, false}}, 2)
	writeSpans(t, v, dst, &dmodel, []span{{3 * c, c, false}, {5, 10, false}}, 3)
	check := func(what string) {
		t.Helper()
		if b := readAll(t, v, src); !bytes.Equal(b, smodel) {
			t.Fatalf("%s: source differs at %d", what, firstDiff(b, smodel))
		}
		if b := readAll(t, v, dst); !bytes.Equal(b, dmodel) {
			t.Fatalf("%s: destination differs at %d", what, firstDiff(b, dmodel))
		}
		fsckClean(t, s)
	}
	check("after writes to both")
	if _, err := v.SetAttr(ctx, src, SetAttr{Valid: SetSize, Size: c / 2}); err != nil {
		t.Fatal(err)
	}
	smodel = smodel[:c/2]
	check("after truncating the source")
	snap, err := s.OpenSnapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snap.CloneRange(ctx, src, 0, dst, 0, c); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("CloneRange in a snapshot: %v, want ErrReadOnly", err)
	}
	if a, err := snap.GetAttr(ctx, dst); err != nil || a.Size != 0 {
		t.Fatalf("the snapshot's destination: %+v, %v; want it empty", a, err)
	}
	if err := v.Unlink(ctx, RootIno, "src"); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, v, dst); !bytes.Equal(b, dmodel) {
		t.Fatalf("after unlinking the source: destination differs at %d", firstDiff(b, dmodel))
	}
	fsckClean(t, s)
	if _, err := v.CloneRange(ctx, RootIno, 0, dst, 0, c); !errors.Is(err, ErrIsDir) {
		t.Fatalf("CloneRange from a directory: %v, want ErrIsDir", err)
	}
}

// TestCloneRangeQuota: shared chunks count against the quota as the destination's allocation;
// a copy that would pass it fails with ErrNoSpace and changes nothing; usage stays exact.
func TestCloneRangeQuota(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "q", map[string]string{"chunk-size": "64KiB", "size": "512KiB"})
	src := mustFile(t, v, RootIno, "src")
	dst := mustFile(t, v, RootIno, "dst")
	var smodel []byte
	writeSpans(t, v, src, &smodel, []span{{0, 3 * c, false}}, 1)
	u0, err := s.Usage(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.CloneRange(ctx, src, 0, dst, 0, 3*c); err != nil || n != 3*c {
		t.Fatalf("CloneRange = %d, %v", n, err)
	}
	u1, err := s.Usage(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if u1.Bytes-u0.Bytes != 3*c {
		t.Fatalf("usage grew by %d, want %d", u1.Bytes-u0.Bytes, 3*c)
	}
	if n, err := v.CloneRange(ctx, src, 0, dst, 3*c, 3*c); !errors.Is(err, ErrNoSpace) || n != 0 {
		t.Fatalf("CloneRange past the quota = %d, %v; want ErrNoSpace", n, err)
	}
	if a, _ := v.GetAttr(ctx, dst); a.Size != 3*c {
		t.Fatalf("a refused copy changed the size to %d", a.Size)
	}
	if u2, _ := s.Usage(ctx, "q"); u2.Bytes != u1.Bytes {
		t.Fatalf("a refused copy changed the usage: %d -> %d", u1.Bytes, u2.Bytes)
	}
	fsckClean(t, s)
}

// TestCloneRangeBatches copies more chunks than one batch shares, and a misaligned range of
// more bytes than one batch copies, and settles logged writes of the source first.
func TestCloneRangeBatches(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := extentVolume(t, s, "v", "")
	src := mustFile(t, v, RootIno, "src")
	dst := mustFile(t, v, RootIno, "dst")
	var smodel []byte
	size := int64(cloneShareBatch+300) * c
	var spans []span
	for off := int64(0); off < size; off += 64 * c {
		spans = append(spans, span{off, min(64*c, size-off), false})
	}
	writeSpans(t, v, src, &smodel, spans, 1)
	logged := bytes.Repeat([]byte{0xAB}, 1000)
	if _, err := v.LogWrites(ctx, src, uint64(size), 0, []Write{{Off: 5 * c, Data: logged}}); err != nil {
		t.Fatal(err)
	}
	copy(smodel[5*c:], logged)
	for _, off := range []int64{0, 33} {
		if n, err := v.CloneRange(ctx, src, 0, dst, off, size); err != nil || n != size {
			t.Fatalf("CloneRange to %d = %d, %v", off, n, err)
		}
		want := append(make([]byte, off), smodel...)
		if off == 0 {
			want = smodel
		}
		if b := readAll(t, v, dst); !bytes.Equal(b[off:], smodel) {
			t.Fatalf("copy to %d differs at %d (%d bytes, want %d)", off, firstDiff(b, want), len(b), len(want))
		}
	}
	fsckClean(t, s)
}

func TestClonePieces(t *testing.T) {
	tests := []struct {
		src, dst, n int64
		want        []clonePiece
	}{
		{0, 0, 2 * c, []clonePiece{{0, 0, c, true}, {c, c, c, true}}},
		{10, 10, 2 * c, []clonePiece{{10, 10, c - 10, false}, {c, c, c, true}, {2 * c, 2 * c, 10, false}}},
		{0, 10, c + 5, []clonePiece{{0, 10, c - 10, false}, {c - 10, c, 15, false}}},
		{c, 0, c / 2, []clonePiece{{c, 0, c / 2, false}}},
	}
	for _, tc := range tests {
		got := clonePieces(c, tc.src, tc.dst, tc.n)
		if len(got) != len(tc.want) {
			t.Fatalf("clonePieces(%d, %d, %d) = %v, want %v", tc.src, tc.dst, tc.n, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("clonePieces(%d, %d, %d) = %v, want %v", tc.src, tc.dst, tc.n, got, tc.want)
			}
		}
	}
	if ps := clonePieces(c, 0, 0, int64(cloneShareBatch+5)*c); len(ps) != cloneShareBatch {
		t.Fatalf("a batch shares %d chunks, want %d", len(ps), cloneShareBatch)
	}
	if ps := clonePieces(c, 0, 1, 1<<30); copiedBytes(ps) > cloneCopyBytes {
		t.Fatalf("a batch copies %d bytes, more than %d", copiedBytes(ps), cloneCopyBytes)
	}
}

// TestCloneRangeFrom copies from a snapshot of the volume (bringing a file back) and from
// another volume of the store, sharing chunks; another chunk size or store is ErrNotSupp.
func TestCloneRangeFrom(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := extentVolume(t, s, "v", "")
	f := mustFile(t, v, RootIno, "f")
	var old []byte
	writeSpans(t, v, f, &old, []span{{0, 3 * c, false}, {c + 5, 10, false}}, 1)
	if _, err := s.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	cur := slices.Clone(old)
	writeSpans(t, v, f, &cur, []span{{0, 3 * c, false}}, 2)
	snap, err := s.OpenSnapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := s.Stats(ctx)
	// The snapshot's file is the same inode: bring its old chunks 1 and 2 back in place.
	if n, err := v.CloneRangeFrom(ctx, snap, f, c, f, c, 2*c); err != nil || n != 2*c {
		t.Fatalf("CloneRangeFrom(snapshot) = %d, %v", n, err)
	}
	copy(cur[c:], old[c:3*c])
	if b := readAll(t, v, f); !bytes.Equal(b, cur) {
		t.Fatalf("restored range differs at %d", firstDiff(b, cur))
	}
	if b := readAll(t, snap, f); !bytes.Equal(b, old) {
		t.Fatalf("the snapshot changed")
	}
	after, _ := s.Stats(ctx)
	// Chunk 2 is shared; chunk 1 has an extent in the snapshot, so it is merged and stored.
	if after.UniqueBytes-before.UniqueBytes > c {
		t.Errorf("the copy stored %d chunk bytes, want at most one chunk", after.UniqueBytes-before.UniqueBytes)
	}
	w := extentVolume(t, s, "w", "")
	g := mustFile(t, w, RootIno, "g")
	logged := bytes.Repeat([]byte{9}, 100)
	if _, err := v.LogWrites(ctx, f, uint64(len(cur)), 0, []Write{{Off: 7, Data: logged}}); err != nil {
		t.Fatal(err)
	}
	copy(cur[7:], logged)
	if n, err := w.CloneRangeFrom(ctx, v, f, 0, g, 0, 3*c); err != nil || n != 3*c {
		t.Fatalf("CloneRangeFrom(another volume) = %d, %v", n, err)
	}
	if b := readAll(t, w, g); !bytes.Equal(b, cur) {
		t.Fatalf("copy from another volume differs at %d", firstDiff(b, cur))
	}
	fsckClean(t, s)
	big := mustVolume(t, s, "big", nil)
	if _, err := big.CloneRangeFrom(ctx, v, f, 0, RootIno, 0, c); !errors.Is(err, ErrNotSupp) {
		t.Fatalf("CloneRangeFrom another chunk size: %v, want ErrNotSupp", err)
	}
	other := extentVolume(t, openTestStore(t), "v", "")
	if _, err := other.CloneRangeFrom(ctx, v, f, 0, RootIno, 0, c); !errors.Is(err, ErrNotSupp) {
		t.Fatalf("CloneRangeFrom another store: %v, want ErrNotSupp", err)
	}
}
