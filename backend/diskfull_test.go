package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
	"golang.org/x/sys/unix"
)

// blocksOf returns the apparent size and the allocated bytes of a file.
func blocksOf(t testing.TB, path string) (size, allocated int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// checkWhole asserts what ready promises to a small commit: the newest memtable log and value-log
// file and DISCARD are allocated whole, and the spare memtable log (in place or beside) is empty
// with a log's worth of blocks.
func checkWhole(t testing.TB, s *Store) {
	t.Helper()
	g := s.guard
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set([]byte("Mcheck"), []byte("small")); err != nil {
		t.Fatal(err)
	}
	if err := g.ready(txn); err != nil {
		t.Fatalf("ready: %v", err)
	}
	if g.memFid < 0 || g.vlogFid < 0 || !g.memOK || !g.spareOK || !g.vlogOK {
		t.Fatalf("guard state after ready: %+v", g)
	}
	for _, p := range []string{g.memPath(g.memFid), g.vlogPath(g.vlogFid), filepath.Join(g.dir, discardFile)} {
		if size, alloc := blocksOf(t, p); alloc < size {
			t.Errorf("%s: %d of %d bytes allocated", filepath.Base(p), alloc, size)
		}
	}
	spare := g.spareMemPath()
	if g.placed {
		spare = g.memPath(g.memFid + 1)
	}
	if size, alloc := blocksOf(t, spare); size != 0 || alloc < g.memSize {
		t.Errorf("spare memtable log %s: size %d, %d bytes allocated, want 0 and %d", filepath.Base(spare), size, alloc, g.memSize)
	}
	if h := g.holes(); h != 0 {
		t.Errorf("holes = %d after ready", h)
	}
}

// fillMemtable makes the guard count the current memtable as full, so the next commit puts the
// spare memtable log in place.
func fillMemtable(s *Store) {
	s.guard.mu.Lock()
	s.guard.memUsed = s.guard.memSize/2 - memMargin
	s.guard.mu.Unlock()
}

// TestDiskGuardKeepsBadgerFilesWhole commits chunk bodies through many value-log rotations
// (1 MiB files) and memtable rotations (flushMemtableLocked: into the spare, or with the spare
// beside, into a log Badger makes), checking after each commit that the next one would find
// every file Badger may write allocated. A closed store has no empty memtable log that Badger
// would refuse, unless the spare was in place (as a killed process may leave it): the store
// opens both ways and reads everything.
func TestDiskGuardKeepsBadgerFilesWhole(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{GCInterval: -1, DiskReserve: 1, ValueLogFileSize: 1 << 20, IntentLogSize: -1}
	s, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "v", map[string]string{"chunk-size": "256KiB"})
	file := mustFile(t, v, RootIno, "f")
	var want []byte
	vlogs, mems, placedRotations := map[int]bool{}, map[int]bool{}, 0
	for i := range 24 {
		data := bytes.Repeat([]byte{byte(i + 1)}, 256<<10)
		if i%8 == 6 {
			fillMemtable(s)
		}
		if _, err := v.CommitChunks(ctx, file, []Chunk{v.PrepareChunk(uint64(i), data)}, 0); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		want = append(want, data...)
		if i%4 == 3 {
			if s.guard.placed {
				placedRotations++
			}
			if err := s.compact(true); err != nil { // a memtable rotation outside a commit
				t.Fatal(err)
			}
		}
		checkWhole(t, s)
		vlogs[s.guard.vlogFid], mems[s.guard.memFid] = true, true
	}
	if len(vlogs) < 4 || len(mems) < 5 || placedRotations < 2 {
		t.Fatalf("%d value-log files, %d memtable logs, %d rotations into the placed spare: the test did not rotate enough",
			len(vlogs), len(mems), placedRotations)
	}
	reopen := func(how string) {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = Open(ctx, dir, opts); err != nil {
			t.Fatalf("reopening %s: %v", how, err)
		}
		if v, err = s.OpenVolume(ctx, "v"); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, v, file); !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes after reopening %s, not the %d committed", len(got), how, len(want))
		}
		checkWhole(t, s)
	}
	if s.guard.placed {
		t.Fatal("the spare memtable log is in place with the memtable far from full")
	}
	reopen("with the spare beside")
	fillMemtable(s)
	mustFile(t, v, RootIno, "g")
	if !s.guard.placed {
		t.Fatal("the spare memtable log is not in place with the memtable full")
	}
	reopen("with the spare in place")
	defer s.Close()
}

func TestWritesValueLog(t *testing.T) {
	s := openTestStore(t)
	for _, tc := range []struct {
		name string
		sets map[string]int // key → value size
		want bool
	}{
		{"nothing", nil, false},
		{"metadata", map[string]int{"Mx": 100, "My": valueThreshold - 1}, false},
		{"body", map[string]int{"Mx": 100, "Bbody": valueThreshold}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			txn := s.db.NewTransaction(true)
			defer txn.Discard()
			for k, n := range tc.sets {
				if err := txn.Set([]byte(k), make([]byte, n)); err != nil {
					t.Fatal(err)
				}
			}
			if err := txn.Delete([]byte("Mz")); err != nil {
				t.Fatal(err)
			}
			if got := writesValueLog(txn); got != tc.want {
				t.Fatalf("writesValueLog = %v, want %v", got, tc.want)
			}
			least := int64(0) // a value-log value leaves a 12-byte pointer in the memtable
			for k, n := range tc.sets {
				least += int64(len(k) + map[bool]int{true: n, false: 12}[n < valueThreshold])
			}
			if got := memtableBytes(txn); got < least || got > least+1<<20 {
				t.Errorf("memtableBytes = %d for %d bytes of keys and values", got, least)
			}
		})
	}
	if !writesValueLog(nil) {
		t.Error("writesValueLog(nil) = false: Badger's own writes must count as value-log writes")
	}
}

// expire makes the guard's next admission look at the filesystem (as it does a second after the
// last look), not spend the budget it granted before the hog filled it.
func (g *diskGuard) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.budget = 0
}

// smallFS mounts a tmpfs of size bytes for one test (root only; CI=true makes that a failure).
func smallFS(t *testing.T, size int64) string {
	t.Helper()
	fusetest.RequireRoot(t, "to mount a small filesystem")
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fillTo writes a hog file until the filesystem of dir has at most left bytes free (another
// process in the real case; here the test plays it) and returns the hog's path.
func fillTo(t *testing.T, dir string, left int64) string {
	t.Helper()
	path := filepath.Join(filepath.Dir(dir), "hog") // beside the store, on the same filesystem
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i) | 1
	}
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * st.Bsize
		if free <= left {
			return path
		}
		if _, err := f.Write(buf[:min(int64(len(buf)), free-left)]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// TestDiskGuardSmallFilesystem runs a store on a tmpfs that another writer fills: under the
// reserve data commits get ENOSPC and metadata changes still commit; with the filesystem full
// too, until the memtable is full, then they get ENOSPC as well; reads keep working, the store
// closes and opens again; once the hog is gone, writes work again in the same store.
func TestDiskGuardSmallFilesystem(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(smallFS(t, 320<<20), "store")
	opts := Options{GCInterval: -1, DiskReserve: 48 << 20, ValueLogFileSize: 4 << 20}
	s, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := mustVolume(t, s, "v", nil)
	kept := mustFile(t, v, RootIno, "kept")
	data := bytes.Repeat([]byte("fusevol "), 128<<10) // 1 MiB
	if _, err := v.WriteAt(ctx, kept, data, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustFile(t, v, RootIno, fmt.Sprintf("f%d", i))
	}
	wantENOSPC := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.ENOSPC) || Errno(err) != syscall.ENOSPC {
			t.Errorf("%s on a full filesystem: %v, want ENOSPC", what, err)
		}
	}
	readBack := func() {
		t.Helper()
		if got := readAll(t, v, kept); !bytes.Equal(got, data) {
			t.Errorf("reading the kept file: %d bytes, not what was written", len(got))
		}
	}

	hog := fillTo(t, dir, 32<<20) // under the reserve, over the floor
	s.guard.expire()
	_, err = v.WriteAt(ctx, kept, data, int64(len(data)))
	wantENOSPC("a data write under the reserve", err)
	if err := v.Unlink(ctx, RootIno, "f0"); err != nil {
		t.Errorf("deleting under the reserve: %v", err)
	}
	if _, err := v.Mknod(ctx, RootIno, "g", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Errorf("creating a file under the reserve: %v", err)
	}

	fillTo(t, dir, 0)
	s.guard.expire()
	_, err = v.WriteAt(ctx, kept, data, int64(len(data)))
	wantENOSPC("a data write", err)
	if _, err := v.Mknod(ctx, RootIno, "h", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Errorf("creating a file in the memtable log the store holds: %v", err)
	}
	if err := v.Unlink(ctx, RootIno, "f1"); err != nil {
		t.Errorf("deleting a file in the memtable log the store holds: %v", err)
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) { // released after spareDelay
		size, _ := blocksOf(t, s.guard.spareRoomPath())
		if size == 0 {
			break
		}
		if time.Since(start) > 10*spareDelay {
			t.Fatalf("the spare room is kept (%d bytes) on a full filesystem", size)
		}
	}
	s.guard.mu.Lock()
	s.guard.memUsed = s.guard.memSize/2 - memMargin // the memtable is full: the next would need a flush
	s.guard.mu.Unlock()
	_, err = v.Mknod(ctx, RootIno, "i", NewNode{Mode: syscall.S_IFREG | 0o644})
	wantENOSPC("creating a file with the memtable full", err)
	wantENOSPC("deleting a file with the memtable full", v.Unlink(ctx, RootIno, "f2"))
	readBack()

	// A restart on the full filesystem: the spare room lets Badger flush its memtables at Close
	// and Open; the new memtable takes metadata changes again, the value log no file data.
	if err := s.Close(); err != nil {
		t.Fatalf("closing the store on a full filesystem: %v", err)
	}
	if s, err = Open(ctx, dir, opts); err != nil {
		t.Fatalf("opening the store on a full filesystem: %v", err)
	}
	defer s.Close()
	if v, err = s.OpenVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	readBack()
	if err := v.Unlink(ctx, RootIno, "f2"); err != nil {
		t.Errorf("deleting a file after the restart: %v", err)
	}

	if err := os.Remove(hog); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(ctx, kept, data, int64(len(data))); err != nil {
		t.Fatalf("a data write once the hog is gone: %v", err)
	}
	data = append(data, data...)
	if err := v.Unlink(ctx, RootIno, "f3"); err != nil {
		t.Errorf("deleting once the hog is gone: %v", err)
	}
	readBack()
	if _, alloc := blocksOf(t, s.guard.spareRoomPath()); alloc < spareRoom {
		t.Errorf("the spare room holds %d bytes once the filesystem has room, want %d", alloc, spareRoom)
	}
	fsckClean(t, s)
}
