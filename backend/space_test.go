package backend

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// diskBytes is the space the value-log files really occupy.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); errors.Is(err, syscall.ENOENT) {
			continue // deleted by the GC between the glob and the stat (seen in CI)
		} else if err != nil {
			t.Fatal(err)
		}
		n += st.Blocks * 512
	}
	return n
}

// TestGCReturnsDiskSpace deletes a file and expects GC to give its chunks' space back to the
// filesystem, not merely to mark it free.
func TestGCReturnsDiskSpace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1, ValueLogFileSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := mustVolume(t, s, "v", map[string]string{"chunk-size": "256KiB"})
	keep := mustFile(t, v, RootIno, "keep")
	if _, err := v.WriteAt(ctx, keep, randBytes(1<<20), 0); err != nil {
		t.Fatal(err)
	}
	victim := mustFile(t, v, RootIno, "victim")
	data := randBytes(48 << 20)
	for off := 0; off < len(data); off += 4 << 20 {
		if _, err := v.WriteAt(ctx, victim, data[off:off+4<<20], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	full := diskBytes(t, dir)
	if err := v.Unlink(ctx, RootIno, "victim"); err != nil {
		t.Fatal(err)
	}
	if err := v.Forget(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	after := diskBytes(t, dir)
	t.Logf("value log: %d MiB with the file, %d MiB after delete + GC", full>>20, after>>20)
	if full < 48<<20 || after > 12<<20 {
		t.Fatalf("GC returned too little: %d -> %d bytes", full, after)
	}
	fsckClean(t, s)
	if got := readAll(t, v, keep); !bytes.Equal(got, randBytes(1<<20)) {
		t.Fatal("GC damaged a file it had to keep")
	}
}

// TestBackgroundGCReturnsDiskSpace expects the background loop alone to give space back once
// enough was freed.
func TestBackgroundGCReturnsDiskSpace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: 50 * time.Millisecond, ValueLogFileSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := mustVolume(t, s, "v", nil)
	victim := mustFile(t, v, RootIno, "victim")
	data := randBytes(72 << 20) // more than a value-log file's worth
	for off := 0; off < len(data); off += 4 << 20 {
		if _, err := v.WriteAt(ctx, victim, data[off:min(off+4<<20, len(data))], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	full := diskBytes(t, dir)
	if err := v.Unlink(ctx, RootIno, "victim"); err != nil {
		t.Fatal(err)
	}
	if err := v.Forget(ctx, victim); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for diskBytes(t, dir) > full/4 {
		if time.Now().After(deadline) {
			t.Fatalf("background GC left %d of %d bytes", diskBytes(t, dir), full)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fsckClean(t, s)
}
