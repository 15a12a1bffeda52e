package backend

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
		why  string
	}{
		{"data", true, ""},
		{"a", true, ""},
		{"A0_.-z", true, ""},
		{strings.Repeat("x", 255), true, ""},
		{"", false, "empty"},
		{strings.Repeat("x", 256), false, "limit is 255"},
		{"../etc", false, "must start with"},
		{".hidden", false, "must start with"},
		{"a/b", false, `contains "/"`},
		{"a b", false, `contains " "`},
		{"é", false, "must start with"},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.why)) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid saying %q", tc.name, err, tc.why)
		}
	}
}

func TestParseVolumeOptions(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]string
		want func(VolumeOptions) bool
		err  string
	}{
		{nil, func(o VolumeOptions) bool { return o == DefaultVolumeOptions() }, ""},
		{map[string]string{"size": "512MiB"}, func(o VolumeOptions) bool { return o.Size == 512<<20 }, ""},
		{map[string]string{"size": "10GiB"}, func(o VolumeOptions) bool { return o.Size == 10<<30 }, ""},
		{map[string]string{"size": "1G"}, func(o VolumeOptions) bool { return o.Size == 1<<30 }, ""},
		{map[string]string{"size": "1GB"}, func(o VolumeOptions) bool { return o.Size == 1e9 }, ""},
		{map[string]string{"size": "4096"}, func(o VolumeOptions) bool { return o.Size == 4096 }, ""},
		{map[string]string{"chunk-size": "64KiB"}, func(o VolumeOptions) bool { return o.ChunkSize == 64<<10 }, ""},
		{map[string]string{"compression": "zstd"}, func(o VolumeOptions) bool { return o.Compression == "zstd" }, ""},
		{map[string]string{"uid": "1000", "gid": "1000", "mode": "0700"}, func(o VolumeOptions) bool {
			return o.UID == 1000 && o.GID == 1000 && o.Mode == 0o700
		}, ""},
		{map[string]string{"from": "vol@snap"}, func(o VolumeOptions) bool { return o.From == "vol@snap" }, ""},
		{map[string]string{"size": "lots"}, nil, "option size"},
		{map[string]string{"size": "0"}, nil, "must be positive"},
		{map[string]string{"chunk-size": "100KiB"}, nil, "power of two"},
		{map[string]string{"chunk-size": "8MiB"}, nil, "power of two"},
		{map[string]string{"compression": "lzma"}, nil, "none, s2, zstd"},
		{map[string]string{"uid": "-1"}, nil, "option uid"},
		{map[string]string{"mode": "999"}, nil, "octal"},
		{map[string]string{"from": "vol"}, nil, "VOLUME@SNAPSHOT"},
		{map[string]string{"from": "../x@y"}, nil, "VOLUME@SNAPSHOT"},
		{map[string]string{"colour": "red"}, nil, `unknown option "colour"; accepted options: chunk-size, compression, from, gid, mode, size, snapshot-every, snapshot-keep, snapshot-keep-daily, snapshot-keep-hourly, snapshot-keep-monthly, snapshot-keep-weekly, uid`},
	} {
		o, err := ParseVolumeOptions(tc.in)
		if tc.err != "" {
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseVolumeOptions(%v) = %v, want error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !tc.want(o) {
			t.Errorf("ParseVolumeOptions(%v) = %+v, %v", tc.in, o, err)
		}
	}
}

// TestErrors checks the error of every operation's failure cases.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", map[string]string{"size": "1MiB", "chunk-size": "64KiB"})
	file := mustFile(t, v, RootIno, "file")
	dir, err := v.Mknod(ctx, RootIno, "dir", NewNode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Mknod(ctx, dir.Ino, "inner", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Fatal(err)
	}
	sub, err := v.Mknod(ctx, dir.Ino, "sub", NewNode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	snap, err := s.OpenSnapshot(ctx, "v", "s")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 256)
	reg := NewNode{Mode: syscall.S_IFREG | 0o644}
	for _, tc := range []struct {
		name string
		err  error
		do   func() error
	}{
		{"create existing volume", ErrExists, func() error { _, err := s.CreateVolume(ctx, "v", DefaultVolumeOptions()); return err }},
		{"create bad volume name", ErrInvalid, func() error { _, err := s.CreateVolume(ctx, "a/b", DefaultVolumeOptions()); return err }},
		{"get missing volume", ErrNotFound, func() error { _, err := s.GetVolume(ctx, "nope"); return err }},
		{"delete missing volume", ErrNotFound, func() error { return s.DeleteVolume(ctx, "nope") }},
		{"snapshot missing volume", ErrNotFound, func() error { _, err := s.CreateSnapshot(ctx, "nope", "s"); return err }},
		{"snapshot existing name", ErrExists, func() error { _, err := s.CreateSnapshot(ctx, "v", "s"); return err }},
		{"snapshot bad name", ErrInvalid, func() error { _, err := s.CreateSnapshot(ctx, "v", "-x"); return err }},
		{"delete missing snapshot", ErrNotFound, func() error { return s.DeleteSnapshot(ctx, "v", "nope") }},
		{"restore missing snapshot", ErrNotFound, func() error { return s.RestoreSnapshot(ctx, "v", "nope") }},
		{"clone from missing snapshot", ErrNotFound, func() error {
			o := DefaultVolumeOptions()
			o.From = "v@nope"
			_, err := s.CreateVolume(ctx, "c", o)
			return err
		}},
		{"open missing snapshot", ErrNotFound, func() error { _, err := s.OpenSnapshot(ctx, "v", "nope"); return err }},
		{"lookup missing", ErrNotFound, func() error { _, err := v.Lookup(ctx, RootIno, "nope"); return err }},
		{"lookup in a file", ErrNotDir, func() error { _, err := v.Lookup(ctx, file, "x"); return err }},
		{"lookup long name", ErrNameTooLong, func() error { _, err := v.Lookup(ctx, RootIno, long); return err }},
		{"getattr missing inode", ErrNotFound, func() error { _, err := v.GetAttr(ctx, 999); return err }},
		{"mknod existing", ErrExists, func() error { _, err := v.Mknod(ctx, RootIno, "file", reg); return err }},
		{"mknod long name", ErrNameTooLong, func() error { _, err := v.Mknod(ctx, RootIno, long, reg); return err }},
		{"mknod slash", ErrInvalid, func() error { _, err := v.Mknod(ctx, RootIno, "a/b", reg); return err }},
		{"mknod in a file", ErrNotDir, func() error { _, err := v.Mknod(ctx, file, "x", reg); return err }},
		{"mknod bad type", ErrInvalid, func() error { _, err := v.Mknod(ctx, RootIno, "x", NewNode{Mode: 0o170000}); return err }},
		{"symlink without target", ErrInvalid, func() error {
			_, err := v.Mknod(ctx, RootIno, "l", NewNode{Mode: syscall.S_IFLNK | 0o777})
			return err
		}},
		{"readlink of a file", ErrInvalid, func() error { _, err := v.Readlink(ctx, file); return err }},
		{"unlink missing", ErrNotFound, func() error { return v.Unlink(ctx, RootIno, "nope") }},
		{"unlink a directory", ErrIsDir, func() error { return v.Unlink(ctx, RootIno, "dir") }},
		{"rmdir a file", ErrNotDir, func() error { return v.Rmdir(ctx, RootIno, "file") }},
		{"rmdir non-empty", ErrNotEmpty, func() error { return v.Rmdir(ctx, RootIno, "dir") }},
		{"link a directory", ErrPerm, func() error { _, err := v.Link(ctx, dir.Ino, RootIno, "d2"); return err }},
		{"link over existing", ErrExists, func() error { _, err := v.Link(ctx, file, RootIno, "dir"); return err }},
		{"rename missing", ErrNotFound, func() error { return v.Rename(ctx, RootIno, "nope", RootIno, "x", 0) }},
		{"rename dir into itself", ErrInvalid, func() error { return v.Rename(ctx, RootIno, "dir", sub.Ino, "x", 0) }},
		{"rename dir over file", ErrNotDir, func() error { return v.Rename(ctx, RootIno, "dir", RootIno, "file", 0) }},
		{"rename file over dir", ErrIsDir, func() error { return v.Rename(ctx, RootIno, "file", RootIno, "dir", 0) }},
		{"rename over non-empty dir", ErrNotEmpty, func() error {
			if _, err := v.Mknod(ctx, RootIno, "d3", NewNode{Mode: syscall.S_IFDIR | 0o755}); err != nil {
				return err
			}
			return v.Rename(ctx, RootIno, "d3", RootIno, "dir", 0)
		}},
		{"rename noreplace", ErrExists, func() error { return v.Rename(ctx, RootIno, "file", RootIno, "dir", RenameNoReplace) }},
		{"rename exchange missing", ErrNotFound, func() error { return v.Rename(ctx, RootIno, "file", RootIno, "nope", RenameExchange) }},
		{"rename both flags", ErrInvalid, func() error {
			return v.Rename(ctx, RootIno, "file", RootIno, "dir", RenameExchange|RenameNoReplace)
		}},
		{"getxattr unset", ErrNoData, func() error { _, err := v.GetXattr(ctx, file, "user.x"); return err }},
		{"removexattr unset", ErrNoData, func() error { return v.RemoveXattr(ctx, file, "user.x") }},
		{"setxattr replace unset", ErrNoData, func() error { return v.SetXattr(ctx, file, "user.x", nil, XattrReplace) }},
		{"setxattr create existing", ErrExists, func() error {
			if err := v.SetXattr(ctx, file, "user.y", []byte("1"), XattrCreate); err != nil {
				return err
			}
			return v.SetXattr(ctx, file, "user.y", []byte("2"), XattrCreate)
		}},
		{"truncate a directory", ErrIsDir, func() error { _, err := v.SetAttr(ctx, dir.Ino, SetAttr{Valid: SetSize}); return err }},
		{"write a directory", ErrIsDir, func() error { _, err := v.WriteAt(ctx, dir.Ino, []byte("x"), 0); return err }},
		{"write past quota", ErrNoSpace, func() error { _, err := v.WriteAt(ctx, file, randBytes(2<<20), 0); return err }},
		{"fallocate past quota", ErrNoSpace, func() error { return v.Fallocate(ctx, file, 0, 2<<20, 0) }},
		{"fallocate bad mode", ErrNotSupp, func() error { return v.Fallocate(ctx, file, 0, 10, 0x40) }},
		{"seek data past end", ErrNotFound, func() error { _, err := v.SeekData(ctx, file, 10, SeekData); return err }},
		{"snapshot mknod", ErrReadOnly, func() error { _, err := snap.Mknod(ctx, RootIno, "x", reg); return err }},
		{"snapshot write", ErrReadOnly, func() error { _, err := snap.WriteAt(ctx, file, []byte("x"), 0); return err }},
		{"snapshot setattr", ErrReadOnly, func() error { _, err := snap.SetAttr(ctx, file, SetAttr{Valid: SetMode}); return err }},
		{"snapshot unlink", ErrReadOnly, func() error { return snap.Unlink(ctx, RootIno, "file") }},
		{"snapshot rename", ErrReadOnly, func() error { return snap.Rename(ctx, RootIno, "file", RootIno, "f2", 0) }},
		{"snapshot setxattr", ErrReadOnly, func() error { return snap.SetXattr(ctx, file, "user.z", nil, 0) }},
	} {
		if err := tc.do(); !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.err)
		}
	}
	// None of the failures above may have changed anything.
	fsckClean(t, s)
	if a, err := v.GetAttr(ctx, file); err != nil || a.Size != 0 {
		t.Errorf("file after failed writes: %+v %v", a, err)
	}
}

// TestCorruptChunk flips a chunk body inside Badger and expects ErrCorrupt on read, never data, and
// fsck to name the damaged file.
func TestCorruptChunk(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", map[string]string{"chunk-size": "64KiB"})
	f := mustFile(t, v, RootIno, "victim")
	data := randBytes(128 << 10)
	if _, err := v.WriteAt(ctx, f, data, 0); err != nil {
		t.Fatal(err)
	}
	var c chunkRef
	if err := v.read(func(tx *tx) error {
		ref, _, err := tx.getChunk(f, 1)
		if err == nil {
			c = *ref
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte{codecNone}, data[:64<<10]...)
	bad[100] ^= 0xff
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(bodyKey(c.hash), bad) }); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	if _, err := v.ReadChunk(ctx, f, 1, buf); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a corrupt chunk: %v", err)
	}
	if _, err := v.ReadAt(ctx, f, make([]byte, len(data)), 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadAt over a corrupt chunk: %v", err)
	}
	if _, err := v.ReadChunk(ctx, f, 0, buf); err != nil {
		t.Fatalf("an intact chunk must still read: %v", err)
	}
	rep, err := s.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() || len(rep.Damaged) != 1 || rep.Damaged[0] != "v:/victim" {
		t.Fatalf("fsck: damaged %v, problems %v", rep.Damaged, rep.Problems)
	}
}

// TestReopenKeepsEverything closes and reopens a store on disk.
func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "v", nil)
	f := mustFile(t, v, RootIno, "f")
	if _, err := v.WriteAt(ctx, f, []byte("persist me"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Unlink(ctx, RootIno, "f"); !errors.Is(err, ErrClosed) {
		t.Fatalf("use after close: %v", err)
	}
	s, err = Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err = s.OpenVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, f); string(got) != "persist me" {
		t.Fatalf("after reopen: %q", got)
	}
	if snaps, err := s.ListSnapshots(ctx, "v"); err != nil || len(snaps) != 1 || snaps[0].Name != "s" {
		t.Fatalf("snapshots after reopen: %v %v", snaps, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(b)
	return b
}

// TestTruncateHugeFile truncates a file with more chunks than one Badger transaction may touch.
// Chunk contents are tiny (a chunk's stored length may be below the chunk size), so the test is cheap.
func TestTruncateHugeFile(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", map[string]string{"chunk-size": "64KiB"})
	f := mustFile(t, v, RootIno, "huge")
	const chunks = 20000
	for i := 0; i < chunks; i += 500 {
		batch := make([]Chunk, 0, 500)
		for j := i; j < min(i+500, chunks); j++ {
			batch = append(batch, v.PrepareChunk(uint64(j), []byte(fmt.Sprintf("chunk %08d", j))))
		}
		if _, err := v.CommitChunks(ctx, f, batch, 0); err != nil {
			t.Fatal(err)
		}
	}
	a, err := v.SetAttr(ctx, f, SetAttr{Valid: SetSize, Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 10 || a.Blocks != 1 {
		t.Fatalf("after truncate: size %d blocks %d", a.Size, a.Blocks)
	}
	if got := readAll(t, v, f); string(got) != "chunk 0000" {
		t.Fatalf("truncated file reads %q", got)
	}
	if u, err := s.Usage(ctx, "v"); err != nil || u.Bytes != 10 {
		t.Fatalf("usage after truncate: %+v %v", u, err)
	}
	fsckClean(t, s)
}
