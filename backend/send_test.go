package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/fusevol/fusevol/backend/sendstream"
)

// sendEntry is everything a path shows: every attribute (inode numbers are kept by a receive,
// so hard links compare too), the symlink target, xattrs and a digest of the content.
type sendEntry struct {
	Attr   Attr
	Target string
	Xattrs map[string]string
	Sum    [32]byte
}

// dumpView walks a view from its root.
func dumpView(t testing.TB, v *View) map[string]sendEntry {
	t.Helper()
	ctx := context.Background()
	out := map[string]sendEntry{}
	dirs := map[Ino]string{}
	var walk func(p string, ino Ino)
	walk = func(p string, ino Ino) {
		a, err := v.GetAttr(ctx, ino)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		e := sendEntry{Attr: a, Xattrs: map[string]string{}}
		names, err := v.ListXattr(ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range names {
			val, err := v.GetXattr(ctx, ino, x)
			if err != nil {
				t.Fatal(err)
			}
			e.Xattrs[x] = string(val)
		}
		switch a.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			if e.Target, err = v.Readlink(ctx, ino); err != nil {
				t.Fatal(err)
			}
		case syscall.S_IFREG:
			e.Sum = contentSum(t, v, ino)
		case syscall.S_IFDIR:
			if first, ok := dirs[ino]; ok {
				t.Fatalf("directory %d is both %s and %s", ino, first, p)
			}
			dirs[ino] = p
			ents, err := v.ReadDir(ctx, ino)
			if err != nil {
				t.Fatal(err)
			}
			for _, de := range ents {
				walk(path.Join(p, de.Name), de.Ino)
			}
		}
		out[p] = e
	}
	walk("/", RootIno)
	return out
}

// contentSum digests a file's chunks that are not holes (with their indexes), reading only
// those: a 4 GiB sparse file costs what it holds.
func contentSum(t testing.TB, v *View, ino Ino) [32]byte {
	t.Helper()
	idx := map[uint64]bool{}
	err := v.read(func(tx *tx) error {
		for _, kind := range []byte{kChunk, kExtent} {
			prefix := metaKind(tx.tree, kind, ino)
			if err := tx.scanVisible(prefix, func(lkey []byte, ver version) error {
				if ver.live() {
					idx[beUint64(lkey[len(prefix):])] = true
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sorted := make([]uint64, 0, len(idx))
	for i := range idx {
		sorted = append(sorted, i)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	h := sha256.New()
	buf := make([]byte, v.ChunkSize())
	for _, i := range sorted {
		n, err := v.ReadChunk(context.Background(), ino, i, buf)
		if err != nil {
			t.Fatalf("inode %d chunk %d: %v", ino, i, err)
		}
		if n > 0 {
			fmt.Fprintf(h, "%d:%d:", i, n)
			h.Write(buf[:n])
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func sameTrees(t testing.TB, label string, want, got map[string]sendEntry) {
	t.Helper()
	if reflect.DeepEqual(want, got) {
		return
	}
	var diffs []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			diffs = append(diffs, "missing "+p)
		} else if !reflect.DeepEqual(w, g) {
			diffs = append(diffs, fmt.Sprintf("%s:\n  want %+v\n  got  %+v", p, w, g))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "extra "+p)
		}
	}
	sort.Strings(diffs)
	t.Fatalf("%s: %d differences:\n%s", label, len(diffs), strings.Join(diffs[:min(len(diffs), 10)], "\n"))
}

// tree grows and changes a random tree in a volume: files with holes, partial-chunk writes
// (extents), hard links, xattrs, symlinks, device nodes and fifos, a large sparse file, set
// times; later rounds also truncate, unlink, rename and remove.
type tree struct {
	t     testing.TB
	v     *View
	rng   *rand.Rand
	dirs  []Ino
	files []fileAt
	cs    int
}

type fileAt struct {
	dir  Ino
	name string
	ino  Ino
}

func newTree(t testing.TB, v *View, seed uint64) *tree {
	return &tree{t: t, v: v, rng: rand.New(rand.NewPCG(seed, 7)), dirs: []Ino{RootIno}, cs: v.ChunkSize()}
}

func (tr *tree) name() string { return fmt.Sprintf("n%d", tr.rng.IntN(1e6)) }

func (tr *tree) data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(tr.rng.IntN(4)) // compressible, and chunks repeat now and then
	}
	if tr.rng.IntN(3) == 0 {
		for i := range b {
			b[i] = byte(tr.rng.Uint32())
		}
	}
	return b
}

func (tr *tree) must(err error) {
	tr.t.Helper()
	if err != nil && !errors.Is(err, ErrExists) && !errors.Is(err, ErrNotEmpty) {
		tr.t.Fatal(err)
	}
}

func (tr *tree) step(later bool) {
	ctx := context.Background()
	v, rng := tr.v, tr.rng
	dir := tr.dirs[rng.IntN(len(tr.dirs))]
	ops := 9
	if later {
		ops = 14
	}
	switch op := rng.IntN(ops); op {
	case 0:
		a, err := v.Mknod(ctx, dir, tr.name(), NewNode{Mode: syscall.S_IFDIR | 0o750, UID: 5})
		tr.must(err)
		if err == nil {
			tr.dirs = append(tr.dirs, a.Ino)
		}
	case 1, 2, 3:
		name := tr.name()
		a, err := v.Mknod(ctx, dir, name, NewNode{Mode: syscall.S_IFREG | 0o640, UID: 7, GID: 8})
		tr.must(err)
		if err != nil {
			return
		}
		tr.files = append(tr.files, fileAt{dir, name, a.Ino})
		tr.write(a.Ino)
	case 4:
		if len(tr.files) > 0 {
			tr.write(tr.files[rng.IntN(len(tr.files))].ino)
		}
	case 5:
		if len(tr.files) > 0 {
			f := tr.files[rng.IntN(len(tr.files))]
			name := tr.name()
			_, err := v.Link(ctx, f.ino, dir, name)
			tr.must(err)
			if err == nil {
				tr.files = append(tr.files, fileAt{dir, name, f.ino})
			}
		}
	case 6:
		modes := []NewNode{{Mode: syscall.S_IFLNK | 0o777, Target: "../some/" + tr.name()},
			{Mode: syscall.S_IFIFO | 0o600}, {Mode: syscall.S_IFCHR | 0o600, Rdev: 0x0103}, {Mode: syscall.S_IFSOCK | 0o600}}
		_, err := v.Mknod(ctx, dir, tr.name(), modes[rng.IntN(len(modes))])
		tr.must(err)
	case 7:
		ino := dir
		if len(tr.files) > 0 && rng.IntN(2) == 0 {
			ino = tr.files[rng.IntN(len(tr.files))].ino
		}
		tr.must(v.SetXattr(ctx, ino, "user."+tr.name(), tr.data(rng.IntN(300)), 0))
	case 8:
		if len(tr.files) > 0 {
			f := tr.files[rng.IntN(len(tr.files))]
			_, err := v.SetAttr(ctx, f.ino, SetAttr{Valid: SetAtime | SetMtime | SetMode, Atime: rng.Int64(), Mtime: rng.Int64N(1e18), Mode: 0o604})
			tr.must(err)
		}
	case 9:
		if len(tr.files) > 0 {
			f := tr.files[rng.IntN(len(tr.files))]
			_, err := v.SetAttr(ctx, f.ino, SetAttr{Valid: SetSize, Size: uint64(rng.IntN(3 * tr.cs))})
			tr.must(err)
		}
	case 10, 11:
		if len(tr.files) > 0 {
			i := rng.IntN(len(tr.files))
			f := tr.files[i]
			tr.files = append(tr.files[:i], tr.files[i+1:]...)
			tr.must(v.Unlink(ctx, f.dir, f.name))
			tr.must(v.Forget(ctx, f.ino))
		}
	case 12:
		if len(tr.files) > 0 {
			i := rng.IntN(len(tr.files))
			f := tr.files[i]
			name := tr.name()
			err := v.Rename(ctx, f.dir, f.name, dir, name, 0)
			tr.must(err)
			if err == nil {
				tr.files[i] = fileAt{dir, name, f.ino}
			}
		}
	case 13:
		ino := tr.dirs[rng.IntN(len(tr.dirs))]
		if len(tr.files) > 0 && rng.IntN(2) == 0 {
			ino = tr.files[rng.IntN(len(tr.files))].ino
		}
		names, err := v.ListXattr(ctx, ino)
		tr.must(err)
		if len(names) > 0 {
			tr.must(v.RemoveXattr(ctx, ino, names[0]))
		}
	}
}

// write writes whole chunks, a hole, and sometimes a partial chunk (an extent).
func (tr *tree) write(ino Ino) {
	ctx := context.Background()
	off := int64(tr.rng.IntN(4)) * int64(tr.cs)
	size := tr.rng.IntN(3*tr.cs) + 1
	if tr.rng.IntN(3) == 0 {
		off += int64(tr.rng.IntN(tr.cs))
		size = tr.rng.IntN(2000) + 1
	}
	_, err := tr.v.WriteAt(ctx, ino, tr.data(size), off)
	if err != nil && !errors.Is(err, ErrNoSpace) {
		tr.t.Fatal(err)
	}
}

// sparse makes a large sparse file: data at its start and near its 4 GiB end.
func (tr *tree) sparse() {
	ctx := context.Background()
	a, err := tr.v.Mknod(ctx, RootIno, "sparse", NewNode{Mode: syscall.S_IFREG | 0o600})
	tr.must(err)
	for _, off := range []int64{0, 4<<30 - 100} {
		if _, err := tr.v.WriteAt(ctx, a.Ino, tr.data(5000), off); err != nil {
			tr.t.Fatal(err)
		}
	}
}

func send(t testing.TB, s *Store, vol, snap, from string) ([]byte, SendStats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := s.Send(context.Background(), &buf, vol, snap, from)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(buf.Len()) {
		t.Errorf("send counted %d bytes, wrote %d", st.Bytes, buf.Len())
	}
	return buf.Bytes(), st
}

func receive(t testing.TB, s *Store, vol string, stream []byte) ReceiveStats {
	t.Helper()
	st, err := s.Receive(context.Background(), bytes.NewReader(stream), vol, ReceiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func snapView(t testing.TB, s *Store, vol, snap string) *View {
	t.Helper()
	v, err := s.OpenSnapshot(context.Background(), vol, snap)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func liveView(t testing.TB, s *Store, vol string) *View {
	t.Helper()
	v, err := s.OpenVolume(context.Background(), vol)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSendReceiveRoundTrips sends random trees in full, then three incremental streams of
// random changes each, and compares every path's attributes, xattrs and bytes.
func TestSendReceiveRoundTrips(t *testing.T) {
	ctx := context.Background()
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			src, dst := openTestStore(t), openTestStore(t)
			opts := map[string]string{"chunk-size": "64KiB"}
			if seed%2 == 0 {
				opts["compression"] = "zstd"
			}
			v := mustVolume(t, src, "v", opts)
			tr := newTree(t, v, seed)
			tr.sparse()
			for i := 0; i < 60; i++ {
				tr.step(false)
			}
			if _, err := src.CreateSnapshot(ctx, "v", "s0"); err != nil {
				t.Fatal(err)
			}
			stream, sst := send(t, src, "v", "s0", "")
			rst := receive(t, dst, "w", stream)
			if rst.Bodies != sst.Bodies || rst.Chunks != sst.Chunks || rst.Skipped != 0 {
				t.Errorf("sent %+v, received %+v", sst, rst)
			}
			want := dumpView(t, snapView(t, src, "v", "s0"))
			sameTrees(t, "full, snapshot", want, dumpView(t, snapView(t, dst, "w", "s0")))
			sameTrees(t, "full, live", want, dumpView(t, liveView(t, dst, "w")))
			prev := "s0"
			for round := 1; round <= 3; round++ {
				for i := 0; i < 40; i++ {
					tr.step(true)
				}
				snap := fmt.Sprintf("s%d", round)
				if _, err := src.CreateSnapshot(ctx, "v", snap); err != nil {
					t.Fatal(err)
				}
				stream, _ := send(t, src, "v", snap, prev)
				receive(t, dst, "w", stream)
				want := dumpView(t, snapView(t, src, "v", snap))
				sameTrees(t, snap+", snapshot", want, dumpView(t, snapView(t, dst, "w", snap)))
				sameTrees(t, snap+", live", want, dumpView(t, liveView(t, dst, "w")))
				sameTrees(t, prev+" kept", dumpView(t, snapView(t, src, "v", prev)), dumpView(t, snapView(t, dst, "w", prev)))
				prev = snap
			}
			fsckClean(t, src)
			fsckClean(t, dst)
			// The receiving store sends on: its snapshots keep the identities they came with.
			third := openTestStore(t)
			receive(t, third, "x", send2(t, dst, "w", "s1", ""))
			receive(t, third, "x", send2(t, dst, "w", "s3", "s1"))
			sameTrees(t, "relayed", dumpView(t, snapView(t, src, "v", "s3")), dumpView(t, liveView(t, third, "x")))
			fsckClean(t, third)
		})
	}
}

func randomBytes(b []byte, seed uint64) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rand.NewChaCha8(key).Read(b)
}

func send2(t testing.TB, s *Store, vol, snap, from string) []byte {
	b, _ := send(t, s, vol, snap, from)
	return b
}

// storeState is what a refused receive must leave as it was.
func storeState(t testing.TB, s *Store) string {
	t.Helper()
	ctx := context.Background()
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.DiskBytes = 0
	s.mu.RLock()
	var names []string
	for n := range s.vols {
		names = append(names, n)
	}
	s.mu.RUnlock()
	sort.Strings(names)
	snaps, err := s.ListSnapshots(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%+v %v %d", st, names, len(snaps))
}

// A flipped byte anywhere and a cut anywhere are refused, and leave the store as it was:
// no volume (hidden or not), no chunk, fsck clean. So is an incremental stream on a wrong
// base.
func TestReceiveRefusesDamageWithoutSideEffects(t *testing.T) {
	ctx := context.Background()
	src := openTestStore(t)
	v := mustVolume(t, src, "v", map[string]string{"chunk-size": "64KiB"})
	tr := newTree(t, v, 99)
	for i := 0; i < 30; i++ {
		tr.step(false)
	}
	for _, s := range []string{"s1", "s2"} {
		if _, err := src.CreateSnapshot(ctx, "v", s); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			tr.step(true)
		}
	}
	full := send2(t, src, "v", "s1", "")
	incr := send2(t, src, "v", "s2", "s1")
	other := send2(t, src, "v", "s2", "")

	dst := openTestStore(t)
	empty := storeState(t, dst)
	rng := rand.New(rand.NewPCG(1, 2))
	refused := func(label string, s *Store, vol string, stream []byte, before string) {
		t.Helper()
		if _, err := s.Receive(ctx, bytes.NewReader(stream), vol, ReceiveOptions{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: receive error %v, want ErrInvalid", label, err)
		}
		if got := storeState(t, s); got != before {
			t.Fatalf("%s: left the store at\n%s\nwas\n%s", label, got, before)
		}
	}
	for i := 0; i < 12; i++ {
		b := bytes.Clone(full)
		at := rng.IntN(len(b))
		b[at] ^= byte(1 + rng.IntN(255))
		refused(fmt.Sprintf("byte %d of %d flipped", at, len(b)), dst, "w", b, empty)
		cut := rng.IntN(len(full))
		refused(fmt.Sprintf("cut at %d of %d", cut, len(full)), dst, "w", full[:cut], empty)
	}
	// The last byte (the trailer's checksum) and a stream cut just before it.
	refused("trailer cut", dst, "w", full[:len(full)-1], empty)

	receive(t, dst, "w", full)
	base := storeState(t, dst)
	for i := 0; i < 6; i++ {
		b := bytes.Clone(incr)
		b[rng.IntN(len(b))] ^= 0x10
		refused("incremental flipped", dst, "w", b, base)
		refused("incremental cut", dst, "w", incr[:rng.IntN(len(incr))], base)
	}
	// A wrong base: w holds v@s1 only as received from a full stream of s2.
	dst2 := openTestStore(t)
	receive(t, dst2, "w", other)
	before := storeState(t, dst2)
	_, err := dst2.Receive(ctx, bytes.NewReader(incr), "w", ReceiveOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no snapshot the stream was sent from") {
		t.Fatalf("wrong base: %v", err)
	}
	if got := storeState(t, dst2); got != before {
		t.Fatalf("wrong base changed the store: %s, was %s", got, before)
	}
	if _, err := dst2.Receive(ctx, bytes.NewReader(incr), "nosuch", ReceiveOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("incremental into a missing volume: %v", err)
	}
	if _, err := dst2.Receive(ctx, bytes.NewReader(other), "w", ReceiveOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("full stream onto an existing volume: %v", err)
	}
	receive(t, dst, "w", incr)
	sameTrees(t, "after refusals", dumpView(t, snapView(t, src, "v", "s2")), dumpView(t, liveView(t, dst, "w")))
	fsckClean(t, dst)
	fsckClean(t, dst2)
}

// A store that holds most of a stream's chunks writes only the rest, and counts the others.
func TestReceiveSkipsChunksTheStoreHolds(t *testing.T) {
	ctx := context.Background()
	src, dst := openTestStore(t), openTestStore(t)
	v := mustVolume(t, src, "v", map[string]string{"chunk-size": "64KiB"})
	f := mustFile(t, v, RootIno, "f")
	data := make([]byte, 20<<16)
	randomBytes(data, 3)
	if _, err := v.WriteAt(ctx, f, data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := src.CreateSnapshot(ctx, "v", "a"); err != nil {
		t.Fatal(err)
	}
	receive(t, dst, "first", send2(t, src, "v", "a", ""))
	// 2 of 20 chunks change; a second volume with the new content goes to dst in full.
	if _, err := v.WriteAt(ctx, f, bytes.Repeat([]byte{7}, 2<<16), 5<<16); err != nil {
		t.Fatal(err)
	}
	if _, err := src.CreateSnapshot(ctx, "v", "b"); err != nil {
		t.Fatal(err)
	}
	stream, sst := send(t, src, "v", "b", "")
	rst := receive(t, dst, "second", stream)
	if sst.Bodies != 19 || rst.Bodies != 1 || rst.Skipped != 18 {
		t.Errorf("sent %d bodies; received %d written, %d skipped; want 19, 1, 18", sst.Bodies, rst.Bodies, rst.Skipped)
	}
	sameTrees(t, "second", dumpView(t, snapView(t, src, "v", "b")), dumpView(t, liveView(t, dst, "second")))
	fsckClean(t, dst)
}

// An incremental stream after a change of 1% of a volume is about 1% of the full stream.
func TestIncrementalStreamIsSmall(t *testing.T) {
	ctx := context.Background()
	src := openTestStore(t)
	v := mustVolume(t, src, "v", map[string]string{"chunk-size": "64KiB"})
	f := mustFile(t, v, RootIno, "f")
	data := make([]byte, 16<<20)
	randomBytes(data, 4)
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := v.WriteAt(ctx, f, data[off:off+1<<20], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	src.CreateSnapshot(ctx, "v", "a")
	for i := 0; i < 3; i++ { // 3 chunks of 256: 1.2%
		if _, err := v.WriteAt(ctx, f, bytes.Repeat([]byte{byte(i + 1)}, 1<<16), int64(i*80)<<16); err != nil {
			t.Fatal(err)
		}
	}
	src.CreateSnapshot(ctx, "v", "b")
	full, _ := send(t, src, "v", "b", "")
	incr, st := send(t, src, "v", "b", "a")
	if st.Bodies != 3 || len(incr) > len(full)/50 {
		t.Errorf("incremental stream of %d bytes with %d bodies; the full one has %d", len(incr), st.Bodies, len(full))
	}
}

func TestSendRefusesWhatIsNotABase(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	mustVolume(t, s, "v", nil)
	s.CreateSnapshot(ctx, "v", "a")
	s.CreateSnapshot(ctx, "v", "b")
	for _, c := range [][2]string{{"a", "b"}, {"a", "a"}} {
		if _, err := s.Send(ctx, &bytes.Buffer{}, "v", c[0], c[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("send %s from %s: %v", c[0], c[1], err)
		}
	}
	if _, err := s.Send(ctx, &bytes.Buffer{}, "v", "nosuch", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("send of a missing snapshot: %v", err)
	}
}

// An incremental stream onto a volume that changed since its base is refused, unless forced,
// which drops the change; a dead process's hidden volume goes at the next receive.
func TestReceiveOntoChangedVolume(t *testing.T) {
	ctx := context.Background()
	src, dst := openTestStore(t), openTestStore(t)
	v := mustVolume(t, src, "v", nil)
	tr := newTree(t, v, 5)
	for i := 0; i < 20; i++ {
		tr.step(false)
	}
	src.CreateSnapshot(ctx, "v", "a")
	for i := 0; i < 20; i++ {
		tr.step(true)
	}
	src.CreateSnapshot(ctx, "v", "b")
	receive(t, dst, "w", send2(t, src, "v", "a", ""))
	incr := send2(t, src, "v", "b", "a")

	w := liveView(t, dst, "w")
	mustFile(t, w, RootIno, "local change")
	before := storeState(t, dst)
	_, err := dst.Receive(ctx, bytes.NewReader(incr), "w", ReceiveOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "changed since w@a") {
		t.Fatalf("receive onto a changed volume: %v", err)
	}
	if got := storeState(t, dst); got != before {
		t.Fatalf("the refusal changed the store: %s, was %s", got, before)
	}
	// A hidden volume of a receive some other process ran and did not finish.
	stale := "w" + receiveSep + "00000000-11111111"
	if err := dst.update(ctx, func(t *tx) error {
		return dst.initVolume(t, &volRec{Name: stale, ID: "stale", Options: DefaultVolumeOptions()})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Receive(ctx, bytes.NewReader(incr), "w", ReceiveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.OpenVolume(ctx, stale); !errors.Is(err, ErrNotFound) {
		t.Errorf("the stale hidden volume is still there: %v", err)
	}
	sameTrees(t, "forced", dumpView(t, snapView(t, src, "v", "b")), dumpView(t, liveView(t, dst, "w")))
	fsckClean(t, dst)
}

// rewriteHeader re-encodes a stream with its header changed by edit.
func rewriteHeader(t testing.TB, stream []byte, edit func(*sendstream.Header)) []byte {
	t.Helper()
	d, err := sendstream.NewDecoder(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	h := d.Header()
	edit(&h)
	var out bytes.Buffer
	e, err := sendstream.NewEncoder(&out, h)
	if err != nil {
		t.Fatal(err)
	}
	for {
		r, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch r.Type {
		case sendstream.TInode:
			err = e.Inode(r.Inode)
		case sendstream.TDirent:
			err = e.Dirent(r.Dir, r.Name, r.Ino, r.Kind)
		case sendstream.TXattr:
			err = e.Xattr(r.Ino, r.Name, r.Data)
		case sendstream.TBody:
			err = e.Body(r.Hash, r.Data)
		case sendstream.TChunk:
			err = e.Chunk(r.Ino, r.Index, r.Hash, r.Length)
		default:
			t.Fatalf("unexpected %s in a full stream", r.Type)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// A receive is bounded by the quota the stream gives its volume and by the disk guard: past
// either it fails with ENOSPC and leaves nothing. (Chunks of 128 KiB: their bodies go to the
// value log, which takes disk as it grows; the memtable's blocks are the guard's already.)
func TestReceiveBoundedByQuotaAndDisk(t *testing.T) {
	ctx := context.Background()
	src := openTestStore(t)
	v := mustVolume(t, src, "v", map[string]string{"chunk-size": "128KiB"})
	f := mustFile(t, v, RootIno, "f")
	data := make([]byte, 24<<20)
	randomBytes(data, 9)
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := v.WriteAt(ctx, f, data[off:off+1<<20], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	src.CreateSnapshot(ctx, "v", "a")
	full := send2(t, src, "v", "a", "")

	dst := openTestStore(t)
	before := storeState(t, dst)
	small := rewriteHeader(t, full, func(h *sendstream.Header) { h.Quota = 1 << 20 })
	_, err := dst.Receive(ctx, bytes.NewReader(small), "w", ReceiveOptions{})
	if !errors.Is(err, ErrNoSpace) || Errno(err) != syscall.ENOSPC {
		t.Fatalf("receive past the quota: %v", err)
	}
	if got := storeState(t, dst); got != before {
		t.Fatalf("a receive past the quota left %s, was %s", got, before)
	}

	dir := filepath.Join(smallFS(t, 320<<20), "store")
	disk, err := Open(ctx, dir, Options{GCInterval: -1, DiskReserve: 32 << 20, ValueLogFileSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	before = storeState(t, disk)
	hog := fillTo(t, dir, 36<<20) // room for a sixth of the stream past the reserve
	disk.guard.expire()
	_, err = disk.Receive(ctx, bytes.NewReader(full), "w", ReceiveOptions{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("receive onto a full disk: %v", err)
	}
	disk.mu.RLock()
	left := len(disk.vols)
	disk.mu.RUnlock()
	if left != 0 {
		t.Fatalf("a receive onto a full disk left %d volumes", left)
	}
	os.Remove(hog) // GC needs room to give the chunks back
	if got := storeState(t, disk); got != before {
		t.Fatalf("a receive onto a full disk left %s, was %s", got, before)
	}
	fsckClean(t, disk)
}

// An orphan of the base (unlinked while open at the snapshot) is not in the base's stream, so
// its chunks are not the receiver's: a later stream using the same content carries the body.
// (The sender took every chunk map the base sees as held, the orphans' too, and the receiver,
// once it had dropped the older snapshot that held the chunk, refused the stream.)
func TestIncrementalCarriesBodiesOfBaseOrphans(t *testing.T) {
	ctx := context.Background()
	src, dst := openTestStore(t), openTestStore(t)
	v := mustVolume(t, src, "v", map[string]string{"chunk-size": "64KiB"})
	data := make([]byte, 3<<16)
	randomBytes(data, 5)
	f := mustFile(t, v, RootIno, "f")
	if _, err := v.WriteAt(ctx, f, data, 0); err != nil {
		t.Fatal(err)
	}
	mustSnap := func(name string) {
		t.Helper()
		if _, err := src.CreateSnapshot(ctx, "v", name); err != nil {
			t.Fatal(err)
		}
	}
	mustSnap("s1")
	if err := v.Unlink(ctx, RootIno, "f"); err != nil { // still open: an orphan in s2
		t.Fatal(err)
	}
	mustSnap("s2")
	receive(t, dst, "w", send2(t, src, "v", "s1", ""))
	receive(t, dst, "w", send2(t, src, "v", "s2", "s1"))
	if err := dst.DeleteSnapshot(ctx, "w", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := dst.GC(ctx); err != nil {
		t.Fatal(err)
	}
	g := mustFile(t, v, RootIno, "g")
	if _, err := v.WriteAt(ctx, g, data, 0); err != nil {
		t.Fatal(err)
	}
	mustSnap("s3")
	receive(t, dst, "w", send2(t, src, "v", "s3", "s2"))
	sameTrees(t, "s3", dumpView(t, snapView(t, src, "v", "s3")), dumpView(t, snapView(t, dst, "w", "s3")))
	fsckClean(t, dst)
}
