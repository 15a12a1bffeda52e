package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// sparseFile creates path with the given apparent size and its first written bytes allocated.
func sparseFile(t testing.TB, path string, size, written int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if written > 0 {
		if _, err := f.WriteAt(make([]byte, written), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDiskGuardHoles(t *testing.T) {
	dir := t.TempDir()
	sparseFile(t, filepath.Join(dir, "000001.vlog"), 10<<20, 1<<20) // older value log: never appended to
	sparseFile(t, filepath.Join(dir, "000002.vlog"), 20<<20, 4<<20)
	sparseFile(t, filepath.Join(dir, "00001.mem"), 5<<20, 0)
	sparseFile(t, filepath.Join(dir, "DISCARD"), 1<<20, 0)
	sparseFile(t, filepath.Join(dir, "000003.sst"), 7<<20, 0) // written whole, not a standing hole
	g := &diskGuard{dir: dir, reserve: DefaultDiskReserve}
	const want = 16<<20 + 5<<20 + 1<<20
	// Filesystems allocate in blocks, so allow a few blocks either way.
	if got := g.holes(); got < want-64<<10 || got > want+64<<10 {
		t.Fatalf("holes = %d, want about %d", got, want)
	}
	if err := g.admit(1 << 20); err != nil {
		t.Fatalf("admit with plenty of room: %v", err)
	}
}

// TestDiskGuardRefuses makes the newest value log's hole larger than the free space after a
// first commit was admitted: a commit larger than the budget looks again and is refused.
func TestDiskGuardRefuses(t *testing.T) {
	dir := t.TempDir()
	g := &diskGuard{dir: dir, reserve: DefaultDiskReserve}
	if err := g.admit(1 << 20); err != nil {
		t.Fatalf("admit on an empty store: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	f, err := os.Create(filepath.Join(dir, "000001.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(free + 1<<30); err != nil {
		t.Fatalf("cannot make a sparse file of %d bytes: %v", free+1<<30, err)
	}
	if err := g.admit(diskBudget + 1); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("admit with a hole larger than the free space: %v, want ENOSPC", err)
	}
	if err := g.admit(1); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a refusal leaves no budget, but a 1-byte commit got %v", err)
	}
}

func BenchmarkDiskGuardCheck(b *testing.B) {
	dir := b.TempDir()
	for _, name := range []string{"000001.vlog", "000002.vlog", "000003.vlog", "00001.mem", "00002.mem", "DISCARD", "000001.sst", "000002.sst", "MANIFEST"} {
		sparseFile(b, filepath.Join(dir, name), 1<<20, 4096)
	}
	g := &diskGuard{dir: dir, reserve: DefaultDiskReserve}
	for b.Loop() {
		g.budget = 0 // measure the look at the filesystem, not the budget
		if err := g.admit(1 << 20); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDiskReserveOption opens a store whose reserve exceeds any free space: writes of file data
// fail with ENOSPC, metadata changes (and deleting) still work, and a store without the option
// takes the same writes.
func TestDiskReserveOption(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		reserve int64
		want    error
	}{
		{"no guard", 0, nil},
		{"guarded", 1 << 60, syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(ctx, t.TempDir(), Options{GCInterval: -1, DiskReserve: tc.reserve})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			v := mustVolume(t, s, "v", nil)
			file := mustFile(t, v, RootIno, "f")
			check := func(op string, err error) {
				t.Helper()
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want %v", op, err, tc.want)
				}
			}
			_, err = v.WriteAt(ctx, file, []byte("data"), 0)
			check("WriteAt", err)
			_, err = v.CommitChunks(ctx, file, []Chunk{v.PrepareChunk(0, []byte("data"))}, 0)
			check("CommitChunks", err)
			check("Fallocate", v.Fallocate(ctx, file, 0, 1<<20, 0))
			if err := v.Fallocate(ctx, file, 0, 1<<20, FallocPunchHole|FallocKeepSize); err != nil {
				t.Errorf("punching a hole: %v", err)
			}
			if _, err := v.Mknod(ctx, RootIno, "g", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
				t.Errorf("creating a file: %v", err)
			}
			if err := v.Unlink(ctx, RootIno, "f"); err != nil {
				t.Errorf("deleting a file: %v", err)
			}
		})
	}
}

// BenchmarkCommitGuard measures what the disk guard adds to a small metadata commit (creating a
// file): compare guard/ with none/ of the same run.
func BenchmarkCommitGuard(b *testing.B) {
	for _, bc := range []struct {
		name    string
		reserve int64
	}{{"none", 0}, {"guard", DefaultDiskReserve}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, b.TempDir(), Options{GCInterval: -1, DiskReserve: bc.reserve, IntentLogSize: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			v := mustVolume(b, s, "v", nil)
			i := 0
			for b.Loop() {
				if _, err := v.Mknod(ctx, RootIno, fmt.Sprintf("f%d", i), NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
