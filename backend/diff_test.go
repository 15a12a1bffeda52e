package backend

import (
	"context"
	"slices"
	"syscall"
	"testing"
)

func TestDiffViews(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", nil)
	mk := func(parent Ino, name string, mode uint32, target string) Ino {
		t.Helper()
		a, err := v.Mknod(ctx, parent, name, NewNode{Mode: mode, Target: target})
		if err != nil {
			t.Fatal(err)
		}
		return a.Ino
	}
	write := func(ino Ino, data string) {
		t.Helper()
		if _, err := v.WriteAt(ctx, ino, []byte(data), 0); err != nil {
			t.Fatal(err)
		}
	}
	const reg, dir, lnk = syscall.S_IFREG | 0o644, syscall.S_IFDIR | 0o755, syscall.S_IFLNK | 0o777
	write(mk(RootIno, "same", reg, ""), "same")
	changed := mk(RootIno, "changed", reg, "")
	write(changed, "before")
	gone := mk(RootIno, "gone", dir, "")
	mk(gone, "inside", reg, "")
	mk(RootIno, "link", lnk, "target")
	mk(RootIno, "becomes-dir", reg, "")
	if _, err := s.CreateSnapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}

	write(changed, "after!") // same size, new content and mtime
	if err := v.Unlink(ctx, gone, "inside"); err != nil {
		t.Fatal(err)
	}
	if err := v.Rmdir(ctx, RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := v.Unlink(ctx, RootIno, "becomes-dir"); err != nil {
		t.Fatal(err)
	}
	mk(mk(RootIno, "becomes-dir", dir, ""), "child", reg, "")
	added := mk(RootIno, "added", dir, "")
	mk(added, "new", lnk, "elsewhere")

	from, err := s.OpenSnapshot(ctx, "v", "s1")
	if err != nil {
		t.Fatal(err)
	}
	live, err := s.OpenVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	got, err := DiffViews(ctx, from, live)
	if err != nil {
		t.Fatal(err)
	}
	want := Diff{
		Added:    []string{"/added", "/added/new", "/becomes-dir/child"},
		Modified: []string{"/becomes-dir", "/changed"},
		Removed:  []string{"/gone", "/gone/inside"},
	}
	if !slices.Equal(got.Added, want.Added) || !slices.Equal(got.Modified, want.Modified) || !slices.Equal(got.Removed, want.Removed) {
		t.Fatalf("diff = %+v, want %+v", got, want)
	}
	same, err := DiffViews(ctx, from, from)
	if err != nil {
		t.Fatal(err)
	}
	if same.Added == nil || len(same.Added)+len(same.Modified)+len(same.Removed) != 0 {
		t.Fatalf("a view against itself: %+v, want three empty, non-nil lists", same)
	}
}
