package backend

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"syscall"
	"testing"
)

func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), t.TempDir(), Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustVolume(t testing.TB, s *Store, name string, opts map[string]string) *View {
	t.Helper()
	o, err := ParseVolumeOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, name, o); err != nil {
		t.Fatal(err)
	}
	v, err := s.OpenVolume(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustFile(t testing.TB, v *View, parent Ino, name string) Ino {
	t.Helper()
	a, err := v.Mknod(context.Background(), parent, name, NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

func readAll(t testing.TB, v *View, ino Ino) []byte {
	t.Helper()
	a, err := v.GetAttr(context.Background(), ino)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, a.Size)
	n, err := v.ReadAt(context.Background(), ino, buf, 0)
	if err != nil || n != len(buf) {
		t.Fatalf("read %d of %d: %v", n, len(buf), err)
	}
	return buf
}

func fsckClean(t testing.TB, s *Store) {
	t.Helper()
	rep, err := s.Fsck(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("fsck: %v", rep.Problems)
	}
}

func TestSnapshotCloneRestoreLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "data", map[string]string{"chunk-size": "64KiB"})
	f := mustFile(t, v, RootIno, "f")
	old := make([]byte, 200_000)
	rand.New(rand.NewSource(1)).Read(old)
	if _, err := v.WriteAt(ctx, f, old, 0); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, f); !bytes.Equal(got, old) {
		t.Fatal("read back differs")
	}
	if _, err := s.CreateSnapshot(ctx, "data", "s1"); err != nil {
		t.Fatal(err)
	}
	// Change the live volume: overwrite, truncate, extend, add and delete files.
	if _, err := v.WriteAt(ctx, f, []byte("hello"), 70_000); err != nil {
		t.Fatal(err)
	}
	if _, err := v.SetAttr(ctx, f, SetAttr{Valid: SetSize, Size: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.SetAttr(ctx, f, SetAttr{Valid: SetSize, Size: 150_000}); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 150_000)
	copy(want, old[:1000])
	if got := readAll(t, v, f); !bytes.Equal(got, want) {
		t.Fatal("truncate then extend must read zeros")
	}
	g := mustFile(t, v, RootIno, "g")
	if err := v.Unlink(ctx, RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	if err := v.Forget(ctx, f); err != nil {
		t.Fatal(err)
	}
	snap, err := s.OpenSnapshot(ctx, "data", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, snap, f); !bytes.Equal(got, old) {
		t.Fatal("snapshot must keep the old data")
	}
	if _, err := snap.Lookup(ctx, RootIno, "g"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("snapshot sees a later file: %v", err)
	}
	if _, err := snap.Mknod(ctx, RootIno, "x", NewNode{Mode: syscall.S_IFREG}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("snapshot write: %v", err)
	}
	fsckClean(t, s)

	o := DefaultVolumeOptions()
	o.From = "data@s1"
	if _, err := s.CreateVolume(ctx, "clone", o); err != nil {
		t.Fatal(err)
	}
	cv, _ := s.OpenVolume(ctx, "clone")
	if got := readAll(t, cv, f); !bytes.Equal(got, old) {
		t.Fatal("clone must start with the snapshot's data")
	}
	if _, err := cv.WriteAt(ctx, f, []byte("clone"), 0); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, snap, f); !bytes.Equal(got, old) {
		t.Fatal("a clone's write leaked into the snapshot")
	}
	if err := s.DeleteSnapshot(ctx, "data", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, cv, f)
	if !bytes.Equal(got[:5], []byte("clone")) || !bytes.Equal(got[5:], old[5:]) {
		t.Fatal("clone changed by deleting its origin snapshot")
	}
	fsckClean(t, s)

	if _, err := s.CreateSnapshot(ctx, "data", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := v.Unlink(ctx, RootIno, "g"); err != nil {
		t.Fatal(err)
	}
	if err := v.Forget(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreSnapshot(ctx, "data", "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Lookup(ctx, RootIno, "g"); err != nil {
		t.Fatalf("restore must bring g back: %v", err)
	}
	if err := s.DeleteVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
	if got := readAll(t, cv, f); !bytes.Equal(got[:5], []byte("clone")) {
		t.Fatal("clone damaged by deleting its origin volume")
	}
}

func TestDedupAndHoles(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(2)).Read(data)
	for _, name := range []string{"a", "b", "c"} {
		v := mustVolume(t, s, name, nil)
		f := mustFile(t, v, RootIno, "f")
		if _, err := v.WriteAt(ctx, f, data, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := v.WriteAt(ctx, f, make([]byte, 1<<20), 5<<20); err != nil { // zeros: a hole
			t.Fatal(err)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Chunks != 1<<20/DefaultChunkSize || st.UniqueBytes != 1<<20 || st.LogicalBytes != 3<<20 {
		t.Fatalf("dedup: %+v", st)
	}
	fsckClean(t, s)
}
