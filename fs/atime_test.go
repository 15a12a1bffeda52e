package fs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

// A read updates atime as the mount's Atime says (xfstests generic/003), and leaves mtime and
// ctime alone. Each file is made and dated through the store, before the kernel first looks it
// up, so the kernel caches nothing older.
func TestAtime(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	ctx := context.Background()
	now := time.Now()
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	for _, tc := range []struct {
		name                string
		mode                Atime
		atime, mtime, ctime int64
		update              bool
	}{
		{"relatime, not after mtime", AtimeRelative, ago(time.Hour), ago(time.Hour), ago(2 * time.Hour), true},
		{"relatime, before ctime", AtimeRelative, ago(time.Hour), ago(2 * time.Hour), ago(time.Minute), true},
		{"relatime, after both", AtimeRelative, ago(time.Minute), ago(time.Hour), ago(time.Hour), false},
		{"relatime, a day old", AtimeRelative, ago(25 * time.Hour), ago(48 * time.Hour), ago(48 * time.Hour), true},
		{"strictatime, after both", AtimeStrict, ago(time.Minute), ago(time.Hour), ago(time.Hour), true},
		{"noatime, not after mtime", AtimeNever, ago(time.Hour), ago(time.Hour), ago(time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tv.mnt.SetAtime(tc.mode)
			a, err := tv.view.Mknod(ctx, backend.RootIno, tc.name, backend.NewNode{Mode: syscall.S_IFREG | 0o644})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tv.view.WriteAt(ctx, a.Ino, []byte("data"), 0); err != nil {
				t.Fatal(err)
			}
			set := backend.SetAttr{Valid: backend.SetAtime | backend.SetMtime | backend.SetCtime,
				Atime: tc.atime, Mtime: tc.mtime, Ctime: tc.ctime}
			if _, err := tv.view.SetAttr(ctx, a.Ino, set); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(tv.dir, tc.name)
			before := time.Now()
			if got, err := os.ReadFile(p); err != nil || string(got) != "data" {
				t.Fatalf("read: %q, %v", got, err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			at := st.Atim.Nano()
			switch {
			case tc.update && at < before.UnixNano():
				t.Errorf("atime %v after the read, want it updated (after %v)", time.Unix(0, at), before)
			case !tc.update && at != tc.atime:
				t.Errorf("atime %v after the read, want it kept (%v)", time.Unix(0, at), time.Unix(0, tc.atime))
			}
			if st.Mtim.Nano() != tc.mtime || st.Ctim.Nano() != tc.ctime {
				t.Errorf("the read moved mtime %v -> %v, ctime %v -> %v", time.Unix(0, tc.mtime), time.Unix(st.Mtim.Unix()),
					time.Unix(0, tc.ctime), time.Unix(st.Ctim.Unix()))
			}
		})
	}
}

// Under relatime, the first read after a write through the mount updates atime, though the
// kernel's page cache holds the data the write left (the open does not keep that cache).
func TestAtimeAfterWrite(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	p := filepath.Join(tv.dir, "f")
	data := randBytes(7, 64<<10)
	atime := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Atim.Nano()
	}
	for i := range 3 {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for j := range 2 {
			before, was := time.Now().UnixNano(), atime()
			if _, err := os.ReadFile(p); err != nil {
				t.Fatal(err)
			}
			switch at := atime(); {
			case j == 0 && at < before:
				t.Errorf("write %d: atime %v after the first read, want it updated (after %v)", i, time.Unix(0, at), time.Unix(0, before))
			case j == 1 && at != was:
				t.Errorf("write %d: the second read moved atime %v -> %v", i, time.Unix(0, was), time.Unix(0, at))
			}
		}
	}
}
