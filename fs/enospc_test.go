package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"golang.org/x/sys/unix"
)

// spaceCase is a mounted volume whose commits run out of room after about room bytes of new
// data, and a way to make room again.
type spaceCase struct {
	dir     string
	room    int64
	release func(t *testing.T)
	// take, where the case has it, leaves the store's disk guard no room at all (from outside the
	// volume), yet keeps the reserve (the store can still write); the room comes back at release.
	take func(t *testing.T)
}

// The file written is made 64 MiB long first, so that the writes do not grow it: the quota
// estimate (which only counts growth) cannot refuse them, and only the commits find out.
const (
	enospcFileSize = 64 << 20
	enospcBlock    = 256 << 10
	enospcBudget   = 1 << 20 // the mount's write buffers: what may be acknowledged and then lost
	enospcSlack    = 8 << 20 // bytes past the room a writer may get acknowledged
)

// TestWriteReportsENOSPC writes like an unbounded dd into a volume that runs out of room, under
// its quota and on the store's disk (the disk guard): write must fail with ENOSPC soon after the
// room is gone, fsync must fail every time (on every descriptor, and close too) while
// acknowledged data is lost, and once room is made, writes work again without a remount and
// rewriting the data makes fsync succeed.
func TestWriteReportsENOSPC(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) spaceCase
	}{
		{"quota", quotaSpace},
		{"disk", diskSpace},
	} {
		t.Run(tc.name, func(t *testing.T) { checkENOSPC(t, tc.setup(t)) })
	}
}

func enospcData(i int64) []byte { return randBytes(uint64(1000+i), enospcBlock) }

func checkENOSPC(t *testing.T, sc spaceCase) {
	p := filepath.Join(sc.dir, "f")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(enospcFileSize); err != nil {
		t.Fatal(err)
	}
	var written int64
	var werr error
	for i := int64(0); written < enospcFileSize; i++ {
		var n int
		n, werr = f.WriteAt(enospcData(i), written)
		written += int64(n)
		if werr != nil {
			break
		}
	}
	t.Logf("%d bytes acknowledged (room for about %d) before %v", written, sc.room, werr)
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("%d bytes written into room for %d: write error %v, want ENOSPC", written, sc.room, werr)
	}
	if written > sc.room+enospcSlack || written < sc.room/2 {
		t.Errorf("%d bytes acknowledged with room for about %d", written, sc.room)
	}
	for i := range 3 {
		if err := f.Sync(); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("fsync %d after lost writes: %v, want ENOSPC", i+1, err)
		}
	}
	if _, err := f.WriteAt(enospcData(written/enospcBlock), written); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a write while the file cannot be committed: %v, want ENOSPC", err)
	}
	if err := f.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("close after lost writes: %v, want ENOSPC", err)
	}
	if f, err = os.OpenFile(p, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("fsync of a new descriptor of the file that lost writes: %v, want ENOSPC", err)
	}

	sc.release(t)
	blocks := (written + enospcBlock - 1) / enospcBlock
	for i := range blocks {
		if _, err := f.WriteAt(enospcData(i), i*enospcBlock); err != nil {
			t.Fatalf("rewriting block %d after making room: %v", i, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync after rewriting the lost data: %v", err)
	}
	got := make([]byte, enospcBlock)
	for i := range blocks {
		if _, err := f.ReadAt(got, i*enospcBlock); err != nil || !bytes.Equal(got, enospcData(i)) {
			t.Fatalf("block %d after the rewrite: %v, equal %v", i, err, bytes.Equal(got, enospcData(i)))
		}
	}
	if err := f.Close(); err != nil {
		t.Errorf("close after the rewrite: %v", err)
	}
}

// quotaSpace is a volume with an 8 MiB quota, half of it taken by a file that release deletes.
func quotaSpace(t *testing.T) spaceCase {
	const quota, hog = 8 << 20, 4 << 20
	opts := backendOpts(backend.DefaultChunkSize)
	opts.Size = quota
	tv := newVolume(t, opts, Options{DirtyLimit: enospcBudget})
	if err := os.WriteFile(filepath.Join(tv.dir, "hog"), randBytes(7, hog), 0o644); err != nil {
		t.Fatal(err)
	}
	return spaceCase{dir: tv.dir, room: quota - hog, release: func(t *testing.T) {
		if err := os.Remove(filepath.Join(tv.dir, "hog")); err != nil {
			t.Fatal(err)
		}
	}}
}

// diskSpace puts the store on a small tmpfs with a disk guard, and fills the tmpfs from outside
// (a plain file beside the store) until the guard leaves spare room for 4 MiB of data; release
// deletes that file. The guard allocates Badger's logs whole (about 140 MiB here, and a spare
// room: backend/diskspace.go), so data fills what is left of the current value-log file (4 MiB
// here) before it takes spare room.
func diskSpace(t *testing.T) spaceCase {
	fusetest.Require(t)
	const reserve, spare, vlogSize = 8 << 20, 4 << 20, 4 << 20
	fsDir := filepath.Join(fusetest.TempRoot(t, "fvenospc-"), "disk")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", fsDir, "tmpfs", 0, "size=256m"); err != nil {
		fusetest.Missing(t, "cannot mount a tmpfs: "+err.Error())
	}
	t.Cleanup(func() { unix.Unmount(fsDir, unix.MNT_DETACH) })
	ctx := context.Background()
	storeDir := filepath.Join(fsDir, "store")
	st, err := backend.Open(ctx, storeDir, backend.Options{Logger: testLogger(t), GCInterval: -1, DiskReserve: reserve, ValueLogFileSize: vlogSize})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateVolume(ctx, "vol", backendOpts(backend.DefaultChunkSize)); err != nil {
		t.Fatal(err)
	}
	v, err := st.OpenVolume(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	_, dir := mountView(t, v, Options{DirtyLimit: enospcBudget})

	var sfs unix.Statfs_t
	if err := unix.Statfs(fsDir, &sfs); err != nil {
		t.Fatal(err)
	}
	free := int64(sfs.Bavail) * sfs.Bsize
	holes := sparseHoles(t, storeDir)
	hog := free - reserve - holes - spare
	t.Logf("tmpfs: %d bytes free, %d in the store's holes; hog of %d bytes", free, holes, hog)
	if hog < 0 {
		t.Fatalf("tmpfs too small for the store's sparse files (%d bytes free, %d in holes)", free, holes)
	}
	hogPath := filepath.Join(fsDir, "hog")
	if err := os.WriteFile(hogPath, make([]byte, hog), 0o644); err != nil {
		t.Fatal(err)
	}
	take := func(t *testing.T) {
		if err := unix.Statfs(fsDir, &sfs); err != nil {
			t.Fatal(err)
		}
		more := int64(sfs.Bavail)*sfs.Bsize - reserve - sparseHoles(t, storeDir) + 1<<20
		if err := os.WriteFile(hogPath+"2", make([]byte, max(more, 0)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return spaceCase{dir: dir, room: spare + vlogSize, take: take, release: func(t *testing.T) {
		for _, p := range []string{hogPath, hogPath + "2"} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}}
}

// sparseHoles is the space the disk guard keeps for what Badger may still write into its sparse,
// memory-mapped files (backend/diskspace.go): the newest value log, memtable logs, DISCARD.
func sparseHoles(t *testing.T, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	newest := ""
	hole := func(name string) int64 {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(dir, name), &st) != nil {
			return 0
		}
		return max(st.Size-st.Blocks*512, 0)
	}
	for _, e := range ents {
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".vlog"):
			newest = max(newest, name)
		case strings.HasSuffix(name, ".mem"), name == "DISCARD":
			n += hole(name)
		}
	}
	if newest != "" {
		n += hole(newest)
	}
	return n
}
