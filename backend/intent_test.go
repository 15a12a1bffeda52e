package backend

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// intentFixture is a store on disk with one volume and one file whose creation is durable.
type intentFixture struct {
	t    *testing.T
	dir  string
	s    *Store
	v    *View
	ino  Ino
	name string
}

func newIntentFixture(t *testing.T) *intentFixture {
	f := &intentFixture{t: t, dir: t.TempDir(), name: "vol"}
	f.open()
	f.v = mustVolume(t, f.s, f.name, map[string]string{"chunk-size": "64KiB"})
	f.ino = mustFile(t, f.v, RootIno, "db")
	if err := f.s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *intentFixture) open() {
	s, err := Open(context.Background(), f.dir, Options{GCInterval: -1, IntentLogSize: 1 << 20})
	if err != nil {
		f.t.Fatal(err)
	}
	f.s = s
	if f.v != nil {
		if f.v, err = s.OpenVolume(context.Background(), f.name); err != nil {
			f.t.Fatal(err)
		}
	}
	f.t.Cleanup(func() { s.Close() })
}

// reopen closes the store with its records still in the log, so the next Open replays them.
func (f *intentFixture) reopen() {
	if err := f.s.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.open()
}

func (f *intentFixture) log(off uint64, data []byte, size uint64) {
	f.t.Helper()
	logged, err := f.v.LogWrites(context.Background(), f.ino, size, time.Now().UnixNano(), []Write{{off, data}})
	if err != nil || !logged {
		f.t.Fatalf("LogWrites: logged=%v err=%v", logged, err)
	}
}

func (f *intentFixture) want(data []byte) {
	f.t.Helper()
	if got := readAll(f.t, f.v, f.ino); !bytes.Equal(got, data) {
		f.t.Fatalf("file holds %d bytes %.40q..., want %d bytes %.40q...", len(got), got, len(data), data)
	}
}

func TestLoggedWritesSurviveReopen(t *testing.T) {
	f := newIntentFixture(t)
	want := make([]byte, 200<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	// Writes across chunk boundaries, overlapping each other, in three records.
	f.log(0, want[:100<<10], 100<<10)
	f.log(60<<10, want[60<<10:150<<10], 150<<10)
	f.log(150<<10, want[150<<10:], 200<<10)
	f.reopen()
	f.want(want)
	if n := len(f.s.intents.live); n != 0 {
		t.Fatalf("%d files still have live records after replay", n)
	}
	if b := f.s.intents.log.Busy(); b[0] || b[1] {
		t.Fatalf("segments still busy after replay: %v", b)
	}
}

func TestCommitAfterLogIsNotUndoneByReplay(t *testing.T) {
	f := newIntentFixture(t)
	f.log(0, bytes.Repeat([]byte("a"), 4096), 4096)
	// A later commit of the same range (as the fs does at close) must win over the record.
	newer := bytes.Repeat([]byte("b"), 4096)
	c := f.v.PrepareChunk(0, newer)
	if _, err := f.v.CommitChunks(context.Background(), f.ino, []Chunk{c}, 4096); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	f.want(newer)
}

func TestTruncateAfterLogStaysTruncated(t *testing.T) {
	f := newIntentFixture(t)
	f.log(0, bytes.Repeat([]byte("x"), 10000), 10000)
	if _, err := f.v.SetAttr(context.Background(), f.ino, SetAttr{Valid: SetSize, Size: 100}); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	f.want(bytes.Repeat([]byte("x"), 100))
}

func TestSnapshotHoldsLoggedWrites(t *testing.T) {
	f := newIntentFixture(t)
	f.log(0, []byte("fsynced"), 7)
	ctx := context.Background()
	if _, err := f.s.CreateSnapshot(ctx, f.name, "s1"); err != nil {
		t.Fatal(err)
	}
	snap, err := f.s.OpenSnapshot(ctx, f.name, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, snap, f.ino); string(got) != "fsynced" {
		t.Fatalf("snapshot holds %q", got)
	}
	// Restoring it voids what was logged after it.
	f.log(0, []byte("after!!"), 7)
	if err := f.s.RestoreSnapshot(ctx, f.name, "s1"); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	f.want([]byte("fsynced"))
}

func TestLogWritesFlushOnceWhenTheInodeIsDurable(t *testing.T) {
	f := newIntentFixture(t)
	ctx := context.Background()
	before := f.s.intents.log.Flushes()
	syncs := f.s.syncedSeq
	f.log(0, []byte("one"), 3)
	if d := f.s.intents.log.Flushes() - before; d != 1 {
		t.Fatalf("%d log flushes for one fsync", d)
	}
	if f.s.syncedSeq != syncs {
		t.Fatal("an fsync of a durable inode synced the store too")
	}
	// A change to the inode in the store makes the next fsync sync the store as well.
	if _, err := f.v.SetAttr(ctx, f.ino, SetAttr{Valid: SetMode, Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	f.log(3, []byte("two"), 6)
	if f.s.syncedSeq == syncs {
		t.Fatal("fsync after a metadata change did not sync the store")
	}
	// A deleted volume's records are dropped, not applied to a new volume of the same name.
	if err := f.s.DeleteVolume(ctx, f.name); err != nil {
		t.Fatal(err)
	}
	f.v = nil
	f.reopen()
	v := mustVolume(t, f.s, f.name, nil)
	if _, err := v.GetAttr(ctx, f.ino); err == nil {
		t.Fatal("a record of a deleted volume created an inode in its successor")
	}
}

func TestBigWritesAreNotLogged(t *testing.T) {
	f := newIntentFixture(t)
	logged, err := f.v.LogWrites(context.Background(), f.ino, 2<<20, 0, []Write{{0, make([]byte, 2<<20)}})
	if err != nil || logged {
		t.Fatalf("2 MiB into a 1 MiB log: logged=%v err=%v", logged, err)
	}
}

func TestLostLogStartsAboveTheMarks(t *testing.T) {
	f := newIntentFixture(t)
	f.log(0, []byte("first"), 5)
	f.reopen() // settles: the file's mark is now the record's LSN
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, "intent")); err != nil {
		t.Fatal(err)
	}
	f.open()
	f.log(0, []byte("later"), 5) // LSN 1 again unless the log skipped ahead
	f.reopen()
	f.want([]byte("later"))
	rep, err := f.s.Fsck(context.Background(), false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %v %v", err, rep)
	}
}

func TestFsckChecksLogMarks(t *testing.T) {
	f := newIntentFixture(t)
	ctx := context.Background()
	bad := map[string][]byte{
		"malformed key":    []byte{pLogMark, 'x'},
		"short value":      logMarkKey(fileKey{"vol-id", 2}),
		"ahead of the log": logMarkKey(fileKey{"vol-id", 3}),
	}
	err := f.s.update(ctx, func(t *tx) error {
		for name, k := range bad {
			v := binary.BigEndian.AppendUint64(nil, 1)
			switch name {
			case "short value":
				v = v[:3]
			case "ahead of the log":
				v = binary.BigEndian.AppendUint64(nil, 1<<40)
			}
			if err := t.set(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.s.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != len(bad) {
		t.Fatalf("fsck found %d problems, want %d: %v", len(rep.Problems), len(bad), rep.Problems)
	}
}

func TestTouchedInodesStayBounded(t *testing.T) {
	f := newIntentFixture(t)
	t1 := &tx{}
	for i := range maxTouched + 1 {
		t1.touched = append(t1.touched, touchKey{1, Ino(1000 + i)})
	}
	f.s.noteCommit(t1)
	if n := len(f.s.touched); n > maxTouched {
		t.Fatalf("%d touched inodes remembered", n)
	}
	// Any inode now counts as changed, so an fsync syncs the store, until that sync.
	if !f.s.touchedSinceSync(99, 12345) {
		t.Fatal("an overflowed touched set lets fsync skip the store sync")
	}
	if err := f.s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.s.touchedSinceSync(99, 12345) {
		t.Fatal("still counted as changed after a sync")
	}
}

// A commit of logged data leaves the file's next fsync to the log alone; a commit of data no fsync
// logged makes it sync the store. Either way the data is there after a restart that replays the log.
func TestCommitOfLoggedDataNeedsNoStoreSync(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		commit   func(v *View, ino Ino, c []Chunk, size uint64) (Attr, error)
		wantSync bool
	}{
		{"logged", func(v *View, ino Ino, c []Chunk, size uint64) (Attr, error) {
			return v.CommitLoggedChunks(ctx, ino, c, size)
		}, false},
		{"not logged", func(v *View, ino Ino, c []Chunk, size uint64) (Attr, error) {
			return v.CommitChunks(ctx, ino, c, size)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newIntentFixture(t)
			data := randBytes(64 << 10)
			f.log(0, data, uint64(len(data)))
			if _, err := tc.commit(f.v, f.ino, []Chunk{f.v.PrepareChunk(0, data)}, uint64(len(data))); err != nil {
				t.Fatal(err)
			}
			syncs := f.s.syncedSeq
			f.log(uint64(len(data)), []byte("tail"), uint64(len(data))+4)
			if synced := f.s.syncedSeq != syncs; synced != tc.wantSync {
				t.Fatalf("fsync after the commit synced the store: %v, want %v", synced, tc.wantSync)
			}
			f.reopen()
			f.want(append(data, "tail"...))
		})
	}
}

// TestSettleManyRecordsOfOneFile settles more records of one file than Badger takes in one
// transaction as extents (over 15% of a memtable), in a commit and in the replay at Open: both
// must fit, and every record must read back.
func TestSettleManyRecordsOfOneFile(t *testing.T) {
	dir := t.TempDir()
	opts := Options{GCInterval: -1, IntentLogSize: 16 << 20}
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "vol", nil)
	ino := mustFile(t, v, RootIno, "db")
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	const size = 16 << 20
	want := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for range 1500 { // 6 MB of records
		off := uint64(r.IntN(size/4096)) * 4096
		d := make([]byte, 4096)
		for j := range d {
			d[j] = byte(r.Uint32())
		}
		copy(want[off:], d)
		logged, err := v.LogWrites(context.Background(), ino, size, time.Now().UnixNano(), []Write{{off, d}})
		if err != nil || !logged {
			t.Fatalf("LogWrites: logged=%v err=%v", logged, err)
		}
	}
	// A commit of the file settles every live record in its own transaction first, as the fs's
	// commits do; then the rest are replayed at Open.
	c := v.PrepareChunk(0, want[:v.ChunkSize()])
	if _, err := v.CommitChunks(context.Background(), ino, []Chunk{c}, size); err != nil {
		t.Fatalf("commit after 6 MB of records: %v", err)
	}
	for range 1500 {
		off := uint64(r.IntN(size/4096)) * 4096
		d := bytes.Repeat([]byte{byte(r.Uint32())}, 4096)
		copy(want[off:], d)
		if logged, err := v.LogWrites(context.Background(), ino, size, time.Now().UnixNano(), []Write{{off, d}}); err != nil || !logged {
			t.Fatalf("LogWrites: logged=%v err=%v", logged, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := len(s.intents.live); n != 0 {
		t.Fatalf("%d files still have live records after replay", n)
	}
	if v, err = s.OpenVolume(context.Background(), "vol"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, ino); !bytes.Equal(got, want) {
		t.Fatalf("file reads back %d bytes, not the %d logged ones", len(got), len(want))
	}
}
