package backend

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// A directory whose last name goes (rmdir, a rename over it) stays an orphan while something may
// hold it: stat-able with nlink 0, taking no entries, until Forget or the next Open reclaims it.
// Snapshots taken meanwhile do not show it, send streams leave it out, and fsck is clean
// throughout.
func TestOrphanDirectory(t *testing.T) {
	ctx := context.Background()
	rmdir := func(v *View) error { return v.Rmdir(ctx, RootIno, "d") }
	renameOver := func(v *View) error {
		if _, err := v.Mknod(ctx, RootIno, "e", NewNode{Mode: syscall.S_IFDIR | 0o755}); err != nil {
			return err
		}
		return v.Rename(ctx, RootIno, "e", RootIno, "d", 0)
	}
	for _, tc := range []struct {
		name    string
		remove  func(*View) error
		release string // "forget" or "reopen"
	}{
		{"rmdir, forget", rmdir, "forget"},
		{"rmdir, reopen", rmdir, "reopen"},
		{"rename over, forget", renameOver, "forget"},
		{"rename over, reopen", renameOver, "reopen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(ctx, dir, Options{GCInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			v := mustVolume(t, s, "v", nil)
			d, err := v.Mknod(ctx, RootIno, "d", NewNode{Mode: syscall.S_IFDIR | 0o750})
			if err != nil {
				t.Fatal(err)
			}
			if err := v.SetXattr(ctx, d.Ino, "user.k", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			x := mustFile(t, v, d.Ino, "x")
			if _, err := s.CreateSnapshot(ctx, "v", "s1"); err != nil {
				t.Fatal(err)
			}
			// The entry's whiteout at the live node stays with the orphan until it is reclaimed.
			if err := v.Unlink(ctx, d.Ino, "x"); err != nil {
				t.Fatal(err)
			}
			if err := v.Forget(ctx, x); err != nil {
				t.Fatal(err)
			}
			if err := tc.remove(v); err != nil {
				t.Fatal(err)
			}
			_, before, err := v.Quota(ctx) // the orphan counts until it is reclaimed
			if err != nil {
				t.Fatal(err)
			}
			a, err := v.GetAttr(ctx, d.Ino)
			if err != nil || a.Nlink != 0 || a.Mode != syscall.S_IFDIR|0o750 {
				t.Fatalf("GetAttr of the removed directory: nlink %d mode %o, %v; want nlink 0 mode %o", a.Nlink, a.Mode, err, syscall.S_IFDIR|0o750)
			}
			if val, err := v.GetXattr(ctx, d.Ino, "user.k"); err != nil || string(val) != "v" {
				t.Errorf("GetXattr of the removed directory: %q, %v", val, err)
			}
			if _, err := v.Mknod(ctx, d.Ino, "y", NewNode{Mode: syscall.S_IFREG | 0o644}); !errors.Is(err, ErrNotFound) {
				t.Errorf("Mknod in the removed directory: %v, want ErrNotFound", err)
			}
			if _, err := v.ReadDir(ctx, d.Ino); !errors.Is(err, ErrNotFound) {
				t.Errorf("ReadDir of the removed directory: %v, want ErrNotFound", err)
			}
			if _, err := s.CreateSnapshot(ctx, "v", "s2"); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, s)
			// An incremental stream over the orphan leaves it out (and its entries' whiteouts).
			other := openTestStore(t)
			receive(t, other, "w", send2(t, s, "v", "s1", ""))
			receive(t, other, "w", send2(t, s, "v", "s2", "s1"))
			sameTrees(t, "received", dumpView(t, snapView(t, s, "v", "s2")), dumpView(t, liveView(t, other, "w")))
			fsckClean(t, other)

			switch tc.release {
			case "forget":
				if err := v.Forget(ctx, d.Ino); err != nil {
					t.Fatal(err)
				}
			case "reopen":
				s.Close()
				if s, err = Open(ctx, dir, Options{GCInterval: -1}); err != nil {
					t.Fatal(err)
				}
				if v, err = s.OpenVolume(ctx, "v"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := v.GetAttr(ctx, d.Ino); !errors.Is(err, ErrNotFound) {
				t.Errorf("GetAttr after %s: %v, want ErrNotFound", tc.release, err)
			}
			_, after, err := v.Quota(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after.Files != before.Files-1 {
				t.Errorf("after %s: %d inodes, want %d", tc.release, after.Files, before.Files-1)
			}
			fsckClean(t, s)
		})
	}
}
