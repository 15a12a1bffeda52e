package fs

import (
	"context"
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

func TestMountErrorsLeaveNothing(t *testing.T) {
	fusetest.Require(t)
	_, v := openView(t, backendOpts(64<<10))
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "missing")
	if m, err := Mount(ctx, missing, v, Options{Logger: testLogger(t)}); err == nil {
		m.Unmount(ctx)
		t.Fatal("mount on a missing directory succeeded")
	}
	if fusetest.IsMountPoint(t, missing) {
		t.Fatal("failed mount left a mount behind")
	}
}

func TestUnmountBusy(t *testing.T) {
	fusetest.Require(t)
	_, v := openView(t, backendOpts(64<<10))
	ctx := context.Background()
	dir := t.TempDir()
	m, err := Mount(ctx, dir, v, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if m.Dir() != dir || !fusetest.IsMountPoint(t, dir) {
		t.Fatalf("Dir %q, mounted %v", m.Dir(), fusetest.IsMountPoint(t, dir))
	}
	fh, err := os.Create(filepath.Join(dir, "open"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte("buffered")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		uctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done <- m.Unmount(uctx)
	}()
	// The mount is detached lazily while the file is open; closing it lets the server stop.
	time.Sleep(500 * time.Millisecond)
	fh.Close()
	if err := <-done; err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if fusetest.IsMountPoint(t, dir) {
		t.Fatal("still mounted after Unmount")
	}
	a, err := v.Lookup(ctx, backend.RootIno, "open")
	if err != nil || a.Size != uint64(len("buffered")) {
		t.Fatalf("data written before unmount: %+v %v", a, err)
	}
}

func TestLargeDirectory(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	const n = 1500
	var want []string
	for i := range n {
		name := fmt.Sprintf("file-with-a-longish-name-%04d", i)
		want = append(want, name)
		if err := os.WriteFile(filepath.Join(tv.dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(tv.dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			got = append(got, e.Name())
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("readdir returned %d names, want %d", len(got), n)
	}
	// Listing while removing does not skip or repeat survivors.
	d, err := os.Open(tv.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	first, err := d.Readdirnames(100)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range first {
		os.Remove(filepath.Join(tv.dir, name))
	}
	rest, err := d.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, name := range append(first, rest...) {
		if seen[name] {
			t.Fatalf("%s listed twice", name)
		}
		seen[name] = true
	}
	if len(seen) != n {
		t.Fatalf("listed %d distinct names, want %d", len(seen), n)
	}
}
