package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/zeebo/blake3"
)

const eChunk = 64 << 10

func extentVolume(t testing.TB, s *Store, name, from string) *View {
	t.Helper()
	opts := map[string]string{"chunk-size": "64KiB"}
	if from != "" {
		opts = map[string]string{"from": from} // a clone keeps its origin's chunk size
	}
	return mustVolume(t, s, name, opts)
}

// inodeOf reads the stored inode (its extent count and allocation).
func inodeOf(t testing.TB, v *View, ino Ino) *inode {
	t.Helper()
	var n *inode
	if err := v.read(func(tx *tx) error {
		var err error
		n, err = tx.getInode(ino)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func chunkExtentsOf(t testing.TB, v *View, ino Ino, idx uint64) []extent {
	t.Helper()
	var out []extent
	if err := v.read(func(tx *tx) error {
		var err error
		out, err = tx.chunkExtents(ino, idx, true)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func commitExtent(t testing.TB, v *View, ino Ino, off int64, data []byte) {
	t.Helper()
	idx, in := uint64(off/eChunk), int(off%eChunk)
	c := v.PrepareExtent(idx, in, data)
	if _, err := v.CommitChunks(context.Background(), ino, []Chunk{c}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestExtentCompaction: extents accumulate up to maxExtents (and a quarter chunk of bytes); the
// next one compacts the chunk into one content-addressed chunk that hashes right.
func TestExtentCompaction(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := extentVolume(t, s, "v", "")
	ino := mustFile(t, v, RootIno, "f")
	base := bytes.Repeat([]byte{7}, eChunk)
	if _, err := v.CommitChunks(ctx, ino, []Chunk{v.PrepareChunk(0, base)}, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(base)
	for i := 0; i < maxExtents; i++ {
		d := bytes.Repeat([]byte{byte(i + 1)}, 100)
		commitExtent(t, v, ino, int64(i*1000), d)
		copy(want[i*1000:], d)
		if got := inodeOf(t, v, ino).extents; got != uint32(i+1) {
			t.Fatalf("after %d extents the inode counts %d", i+1, got)
		}
	}
	if got := readAll(t, v, ino); !bytes.Equal(got, want) {
		t.Fatal("content with extents differs")
	}
	fsckClean(t, s)
	commitExtent(t, v, ino, 60000, []byte("compact"))
	copy(want[60000:], "compact")
	n := inodeOf(t, v, ino)
	if n.extents != 0 || len(chunkExtentsOf(t, v, ino, 0)) != 0 {
		t.Fatalf("no compaction past %d extents: inode counts %d", maxExtents, n.extents)
	}
	var ref *chunkRef
	if err := v.read(func(tx *tx) error { var err error; ref, _, err = tx.getChunk(ino, 0); return err }); err != nil || ref == nil {
		t.Fatalf("chunk map after compaction: %v %v", ref, err)
	}
	if ref.hash != blake3.Sum256(want) || ref.n != eChunk || n.alloc != eChunk {
		t.Fatalf("compacted chunk: hash or length wrong (n=%d alloc=%d)", ref.n, n.alloc)
	}
	if got := readAll(t, v, ino); !bytes.Equal(got, want) {
		t.Fatal("content after compaction differs")
	}
	// The same content committed as a whole chunk elsewhere dedups against the compacted one.
	other := mustFile(t, v, RootIno, "g")
	if _, err := v.CommitChunks(ctx, other, []Chunk{v.PrepareChunk(0, want)}, 0); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Chunks != 1 {
		t.Fatalf("stats after dedup: %+v %v", st, err)
	}
	// Bytes: two eighth-chunk extents stay, the third compacts.
	for i := 0; i < 3; i++ {
		d := bytes.Repeat([]byte{byte(0x40 + i)}, eChunk/8)
		commitExtent(t, v, ino, int64(i*eChunk/8+1), d)
		copy(want[i*eChunk/8+1:], d)
		if got, wantN := inodeOf(t, v, ino).extents, []uint32{1, 2, 0}[i]; got != wantN {
			t.Fatalf("byte limit: after %d extents the inode counts %d, want %d", i+1, got, wantN)
		}
	}
	if got := readAll(t, v, ino); !bytes.Equal(got, want) {
		t.Fatal("content after byte-limit compaction differs")
	}
	// An extent that covers earlier ones replaces them.
	commitExtent(t, v, ino, 10, []byte("ab"))
	commitExtent(t, v, ino, 12, []byte("cd"))
	commitExtent(t, v, ino, 5, []byte("0123456789abcdef"))
	copy(want[5:], "0123456789abcdef")
	if got := inodeOf(t, v, ino).extents; got != 1 {
		t.Fatalf("covering extent: inode counts %d, want 1", got)
	}
	if got := readAll(t, v, ino); !bytes.Equal(got, want) {
		t.Fatal("content after covering extent differs")
	}
	fsckClean(t, s)
}

// TestExtentsRandom writes small extents, whole chunks, truncations, punches and WriteAts into files
// of a volume, its snapshots, clones and restores, comparing every view with an in-memory model.
func TestExtentsRandom(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { extentsRandom(t, seed, 400) })
	}
}

type eView struct {
	name  string
	v     *View
	files map[Ino][]byte
	live  bool
	snaps []string // of a live volume
}

func cloneFiles(m map[Ino][]byte) map[Ino][]byte {
	c := map[Ino][]byte{}
	for k, b := range m {
		c[k] = bytes.Clone(b)
	}
	return c
}

func extentsRandom(t *testing.T, seed uint64, steps int) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 99))
	s := openTestStore(t)
	main := &eView{name: "v", v: extentVolume(t, s, "v", ""), files: map[Ino][]byte{}, live: true}
	views := []*eView{main}
	for i := 0; i < 3; i++ {
		main.files[mustFile(t, main.v, RootIno, fmt.Sprint("f", i))] = []byte{}
	}
	data := func(n int) []byte {
		b := make([]byte, n)
		switch r.IntN(4) {
		case 0: // zeros
		case 1:
			for i := range b {
				b[i] = byte(r.IntN(3))
			}
		default:
			for i := range b {
				b[i] = byte(r.Uint32())
			}
		}
		return b
	}
	write := func(m []byte, off int, b []byte) []byte {
		if off+len(b) > len(m) {
			m = append(m, make([]byte, off+len(b)-len(m))...)
		}
		copy(m[off:], b)
		return m
	}
	check := func(ev *eView, what string) {
		t.Helper()
		for ino, want := range ev.files {
			got := readAll(t, ev.v, ino)
			if !bytes.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("seed %d %s: %s inode %d: %d bytes, want %d; first difference at %d", seed, what, ev.name, ino, len(got), len(want), i)
			}
			for idx := uint64(0); idx*eChunk < uint64(len(want))+eChunk; idx++ {
				if k := len(chunkExtentsOf(t, ev.v, ino, idx)); k > maxExtents {
					t.Fatalf("%s inode %d chunk %d: %d extents", ev.name, ino, idx, k)
				}
			}
		}
	}
	nsnap, nclone := 0, 0
	for step := 0; step < steps; step++ {
		var lives []*eView
		for _, ev := range views {
			if ev.live {
				lives = append(lives, ev)
			}
		}
		ev := lives[r.IntN(len(lives))]
		var inos []Ino
		for ino := range ev.files {
			inos = append(inos, ino)
		}
		ino := inos[r.IntN(len(inos))]
		m := ev.files[ino]
		what := ""
		switch p := r.IntN(100); {
		case p < 50: // small extent
			off := r.IntN(5 * eChunk)
			if r.IntN(3) == 0 && len(m) > 0 {
				off = r.IntN(len(m))
			}
			l := 1 + r.IntN(min(4096, eChunk-off%eChunk))
			b := data(l)
			what = fmt.Sprintf("extent ino=%d off=%d len=%d", ino, off, l)
			commitExtent(t, ev.v, ino, int64(off), b)
			ev.files[ino] = write(m, off, b)
		case p < 58: // WriteAt across chunks
			off, l := r.IntN(4*eChunk), 1+r.IntN(2*eChunk)
			b := data(l)
			what = fmt.Sprintf("WriteAt ino=%d off=%d len=%d", ino, off, l)
			if _, err := ev.v.WriteAt(ctx, ino, b, int64(off)); err != nil {
				t.Fatal(err)
			}
			ev.files[ino] = write(m, off, b)
		case p < 64: // whole chunk
			idx := r.IntN(5)
			b := data(eChunk)
			what = fmt.Sprintf("chunk ino=%d idx=%d", ino, idx)
			if _, err := ev.v.CommitChunks(ctx, ino, []Chunk{ev.v.PrepareChunk(uint64(idx), b)}, 0); err != nil {
				t.Fatal(err)
			}
			ev.files[ino] = write(m, idx*eChunk, b)
		case p < 72: // truncate, often into a chunk with extents
			size := r.IntN(len(m) + eChunk)
			what = fmt.Sprintf("truncate ino=%d size=%d", ino, size)
			if _, err := ev.v.SetAttr(ctx, ino, SetAttr{Valid: SetSize, Size: uint64(size)}); err != nil {
				t.Fatal(err)
			}
			if size <= len(m) {
				ev.files[ino] = m[:size:size]
			} else {
				ev.files[ino] = append(m, make([]byte, size-len(m))...)
			}
		case p < 78: // punch a hole
			if len(m) == 0 {
				continue
			}
			off := r.IntN(len(m))
			l := 1 + r.IntN(eChunk+eChunk/2)
			what = fmt.Sprintf("punch ino=%d off=%d len=%d", ino, off, l)
			if err := ev.v.Fallocate(ctx, ino, int64(off), int64(l), FallocPunchHole|FallocKeepSize); err != nil {
				t.Fatal(err)
			}
			clear(m[off:min(len(m), off+l)])
		case p < 86: // snapshot
			nsnap++
			name := fmt.Sprint("s", nsnap)
			what = "snapshot " + ev.name + "@" + name
			if _, err := s.CreateSnapshot(ctx, ev.name, name); err != nil {
				t.Fatal(err)
			}
			sv, err := s.OpenSnapshot(ctx, ev.name, name)
			if err != nil {
				t.Fatal(err)
			}
			views = append(views, &eView{name: ev.name + "@" + name, v: sv, files: cloneFiles(ev.files)})
			ev.snaps = append(ev.snaps, name)
			if r.IntN(2) == 0 && nclone < 3 {
				nclone++
				cname := fmt.Sprint("c", nclone)
				cv := extentVolume(t, s, cname, ev.name+"@"+name)
				views = append(views, &eView{name: cname, v: cv, files: cloneFiles(ev.files), live: true})
			}
		case p < 90: // restore
			if len(ev.snaps) == 0 {
				continue
			}
			name := ev.snaps[r.IntN(len(ev.snaps))]
			what = "restore " + ev.name + "@" + name
			if err := s.RestoreSnapshot(ctx, ev.name, name); err != nil {
				t.Fatal(err)
			}
			for _, sv := range views {
				if sv.name == ev.name+"@"+name {
					ev.files = cloneFiles(sv.files)
				}
			}
			nv, err := s.OpenVolume(ctx, ev.name)
			if err != nil {
				t.Fatal(err)
			}
			ev.v = nv
		default:
			what = "check all"
			for _, e := range views {
				check(e, what)
			}
			continue
		}
		check(ev, fmt.Sprintf("step %d %s", step, what))
		if step%50 == 49 {
			fsckClean(t, s)
		}
	}
	for _, e := range views {
		check(e, "end")
	}
	fsckClean(t, s)
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range views {
		check(e, "after GC")
	}
	fsckClean(t, s)
}

// TestExtentDamage: a damaged extent reads as ErrCorrupt, never as other bytes, and fsck names the file.
func TestExtentDamage(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := extentVolume(t, s, "v", "")
	ino := mustFile(t, v, RootIno, "f")
	commitExtent(t, v, ino, 100, []byte("hello extent"))
	var key []byte
	err := s.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: metaKind(v.tree, kExtent, ino)})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return errors.New("no extent key")
		}
		key = it.Item().KeyCopy(nil)
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		val[len(val)-1] ^= 1
		return txn.Set(key, val)
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 200)
	if _, err := v.ReadAt(ctx, ino, buf, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a damaged extent: %v, want ErrCorrupt", err)
	}
	rep, err := s.Fsck(ctx, false)
	if err != nil || rep.Clean() || len(rep.Damaged) != 1 || rep.Damaged[0] != "v:/f" {
		t.Fatalf("fsck of a damaged extent: %+v %v", rep, err)
	}
	// A whole-chunk commit drops the damaged extent; the file is clean again.
	if _, err := v.CommitChunks(ctx, ino, []Chunk{v.PrepareChunk(0, []byte("new"))}, 0); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
	if a, _ := v.GetAttr(ctx, ino); a.Size != 112 {
		t.Fatalf("size %d after the commit, want 112", a.Size)
	}
}

// TestExtentOrphanReclaim: an unlinked file's extents go with it.
func TestExtentOrphanReclaim(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := extentVolume(t, s, "v", "")
	ino := mustFile(t, v, RootIno, "f")
	for i := 0; i < 5; i++ {
		commitExtent(t, v, ino, int64(i*eChunk+10), []byte("x"))
	}
	if err := v.Unlink(ctx, RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	if err := v.Forget(ctx, ino); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
	n := 0
	if err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: metaKind(v.tree, kExtent, ino)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.Usage(ctx, "v"); n != 0 || u.Bytes != 0 {
		t.Fatalf("after reclaim: %d extent keys, usage %+v", n, u)
	}
}

// TestExtentOldInodes: inodes written before extents existed (zero in the slot the count uses)
// read as files without extents.
func TestExtentOldInodes(t *testing.T) {
	n := &inode{Attr: Attr{Mode: syscall.S_IFREG, Size: 5}, alloc: 5}
	v := encodeInode(n)
	if !bytes.Equal(v[1+4*5:1+4*6], []byte{0, 0, 0, 0}) {
		t.Fatal("the extent count is not in the formerly reserved slot")
	}
	n.extents = 3
	got, err := decodeInode(0, encodeInode(n))
	if err != nil || got.extents != 3 {
		t.Fatalf("extent count round-trips to %v %v", got, err)
	}
}

func FuzzDecodeExtent(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodeExtent(5, []byte("data")))
	f.Add(encodeExtent(MaxChunkSize-1, []byte("x")))
	f.Add([]byte{tagWhiteout})
	f.Fuzz(func(t *testing.T, b []byte) {
		off, data, err := decodeExtent(b, true)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeExtent(%x): %v is not ErrCorrupt", b, err)
			}
			return
		}
		if uint64(off)+uint64(len(data)) > MaxChunkSize {
			t.Fatalf("decodeExtent(%x): extent at %d of %d bytes passes the largest chunk", b, off, len(data))
		}
		if re := encodeExtent(off, data); !bytes.Equal(re, b) {
			t.Fatalf("decodeExtent(%x) re-encodes to %x", b, re)
		}
		// Any one flipped bit is caught.
		for i := 1; i < len(b); i++ {
			c := bytes.Clone(b)
			c[i] ^= 1 << (i % 8)
			if _, _, err := decodeExtent(c, true); err == nil {
				t.Fatalf("decodeExtent accepts %x with bit %d of byte %d flipped", b, i%8, i)
			}
		}
	})
}
