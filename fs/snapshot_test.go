package fs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSnapshotBrowsing(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	ctx := context.Background()
	old := randBytes(10, 200<<10)
	if err := os.MkdirAll(filepath.Join(tv.dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(tv.dir, "d", "f")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(old); err != nil {
		t.Fatal(err)
	}
	// The daemon flushes open files' buffers before it snapshots.
	if err := tv.mnt.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tv.store.CreateSnapshot(ctx, "vol", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if err := os.WriteFile(filepath.Join(tv.dir, "new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// .snapshots is hidden from the root listing but can be entered.
	names := func(dir string) []string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("readdir %s: %v", dir, err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	if got := names(tv.dir); !slices.Equal(got, []string{"d", "new"}) {
		t.Errorf("root lists %v", got)
	}
	snaps := filepath.Join(tv.dir, ".snapshots")
	if got := names(snaps); !slices.Equal(got, []string{"s1"}) {
		t.Errorf(".snapshots lists %v", got)
	}
	s1 := filepath.Join(snaps, "s1")
	if got := names(s1); !slices.Equal(got, []string{"d"}) {
		t.Errorf("snapshot root lists %v", got)
	}
	got, err := os.ReadFile(filepath.Join(s1, "d", "f"))
	if err != nil || string(got) != string(old) {
		t.Fatalf("snapshot file: %d bytes, %v (want the old %d bytes)", len(got), err, len(old))
	}
	if cur, _ := os.ReadFile(p); string(cur[:7]) != "changed" {
		t.Errorf("live file lost the write: %q", cur[:7])
	}
	// A snapshot taken while mounted shows up at once (no negative caching).
	if _, err := os.Stat(filepath.Join(snaps, "s2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat missing snapshot: %v", err)
	}
	if _, err := tv.store.CreateSnapshot(ctx, "vol", "s2"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(snaps, "s2", "new")); err != nil || string(got) != "n" {
		t.Errorf("new snapshot: %q %v", got, err)
	}

	// Everything under .snapshots is read-only.
	sf := filepath.Join(s1, "d", "f")
	for _, c := range []struct {
		what string
		err  error
	}{
		{"create", os.WriteFile(filepath.Join(s1, "x"), nil, 0o644)},
		{"open for write", func() error { f, err := os.OpenFile(sf, os.O_WRONLY, 0); f.Close(); return err }()},
		{"unlink", os.Remove(sf)},
		{"rmdir", syscall.Rmdir(filepath.Join(s1, "d"))},
		{"mkdir", os.Mkdir(filepath.Join(s1, "d", "e"), 0o755)},
		{"mkdir in .snapshots", os.Mkdir(filepath.Join(snaps, "x"), 0o755)},
		{"chmod", os.Chmod(sf, 0o600)},
		{"truncate", os.Truncate(sf, 0)},
		{"rename", os.Rename(sf, filepath.Join(s1, "d", "g"))},
		{"link", os.Link(sf, filepath.Join(s1, "d", "g"))},
		{"symlink", os.Symlink("f", filepath.Join(s1, "d", "g"))},
		{"setxattr", unix.Setxattr(sf, "user.x", []byte("v"), 0)},
		{"utimes", unix.UtimesNano(sf, []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}})},
	} {
		if !errors.Is(c.err, syscall.EROFS) {
			t.Errorf("%s in a snapshot: %v, want EROFS", c.what, c.err)
		}
	}
	// Moving things into a snapshot fails too.
	if err := os.Rename(filepath.Join(tv.dir, "new"), filepath.Join(s1, "new")); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EXDEV) {
		t.Errorf("rename into a snapshot: %v", err)
	}
}

func TestSnapshotMount(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	ctx := context.Background()
	if err := os.WriteFile(filepath.Join(tv.dir, "f"), []byte("snap"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tv.store.CreateSnapshot(ctx, "vol", "s"); err != nil {
		t.Fatal(err)
	}
	view, err := tv.store.OpenSnapshot(ctx, "vol", "s")
	if err != nil {
		t.Fatal(err)
	}
	_, dir := mountView(t, view, Options{})
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != "snap" {
		t.Errorf("read: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "g"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create in a snapshot mount: %v, want EROFS", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".snapshots")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot mount has .snapshots: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("snapshot mount not read-only: flags %#x %v", st.Flags, err)
	}
}

func TestQuota(t *testing.T) {
	const quota = 1 << 20
	opts := backendOpts(64 << 10)
	opts.Size = quota
	tv := newVolume(t, opts, Options{})
	var st unix.Statfs_t
	if err := unix.Statfs(tv.dir, &st); err != nil {
		t.Fatal(err)
	}
	if total := int64(st.Blocks) * st.Bsize; total != quota {
		t.Errorf("statfs total %d, want the quota %d", total, quota)
	}
	p := filepath.Join(tv.dir, "big")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	chunk := randBytes(11, 100<<10)
	written := 0
	var werr error
	for written < 2*quota && werr == nil {
		var n int
		n, werr = fh.Write(chunk)
		written += n
	}
	cerr := fh.Close()
	if !errors.Is(werr, syscall.ENOSPC) && !errors.Is(cerr, syscall.ENOSPC) {
		t.Fatalf("wrote %d bytes past a %d-byte quota: write %v, close %v", written, quota, werr, cerr)
	}
	if written > quota {
		t.Errorf("accepted %d bytes under a %d-byte quota", written, quota)
	}
	if err := unix.Statfs(tv.dir, &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free > quota/4 {
		t.Errorf("statfs free %d after filling the quota", free)
	}
	// Space comes back after a delete.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tv.dir, "small"), chunk, 0o644); err != nil {
		t.Errorf("write after freeing space: %v", err)
	}
}
