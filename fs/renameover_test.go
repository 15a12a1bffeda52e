package fs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// An open file or directory whose last name went (a rename over it, an unlink, a rmdir) still
// answers fstat, with nlink 0 (xfstests generic/035), and its inode is reclaimed after the close.
func TestFstatAfterLastNameGoes(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	ctx := context.Background()
	file := func(p string) error { return os.WriteFile(p, []byte("x"), 0o644) }
	dir := func(p string) error { return os.Mkdir(p, 0o755) }
	// os.Rename refuses a directory target; rename(2) replaces an empty one.
	renameOver := func(victim string) error { return syscall.Rename(victim+".new", victim) }
	for _, tc := range []struct {
		name   string
		make   func(string) error
		remove func(victim string) error
	}{
		{"rename over file", file, renameOver},
		{"rename over dir", dir, renameOver},
		{"unlink", file, os.Remove},
		{"rmdir", dir, os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victim := filepath.Join(tv.dir, "victim")
			for _, p := range []string{victim, victim + ".new"} {
				if err := tc.make(p); err != nil {
					t.Fatal(err)
				}
			}
			_, before, err := tv.view.Quota(ctx)
			if err != nil {
				t.Fatal(err)
			}
			fh, err := os.Open(victim)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.remove(victim); err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(fh.Fd()), &st); err != nil {
				t.Errorf("fstat after %s: %v", tc.name, err)
			} else if st.Nlink != 0 {
				t.Errorf("fstat after %s: nlink %d, want 0", tc.name, st.Nlink)
			}
			fh.Close()
			os.RemoveAll(victim)
			os.RemoveAll(victim + ".new")
			waitFiles(t, tv, before.Files-2)
		})
	}
}

// waitFiles waits for the volume to count files inodes: the kernel forgets removed ones at its
// own pace.
func waitFiles(t *testing.T, tv *testVolume, files int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, u, err := tv.view.Quota(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if u.Files == files {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage counts %d inodes, want %d: an orphan was not reclaimed", u.Files, files)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
