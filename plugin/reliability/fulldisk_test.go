package reliability

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFullDisk puts the whole daemon root on a small tmpfs and writes until it is full: the
// writer gets ENOSPC (not EIO, not a hang, not a dead daemon), everything fsynced before reads
// back, fsck is clean, and deleting files then running gc makes room for new writes.
func TestFullDisk(t *testing.T) {
	fusetest.Require(t)
	base := fusetest.TempRoot(t, "fvrel-")
	root := filepath.Join(base, "small")
	must(t, os.Mkdir(root, 0o755))
	// The store keeps room for what Badger may still write into its sparse, memory-mapped files
	// (a 256 MiB value-log file, a 64 MiB memtable log): this is about the smallest filesystem
	// it writes file data on at all.
	must(t, unix.Mount("tmpfs", root, "tmpfs", 0, "size=416m"))
	t.Cleanup(func() { fusetest.DetachUnder(root); unix.Unmount(root, unix.MNT_DETACH) })
	d := newDaemon(t, root)
	mnt := filepath.Join(base, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	d.mustVolctl("volume", "create", "-o", "compression=none", "full")
	d.mustVolctl("mount", "full", mnt)

	sums := map[string][32]byte{}
	var fullErr error
	for i := 0; i < 200 && fullErr == nil; i++ { // 800 MiB: more than the filesystem holds
		name := fmt.Sprintf("f%03d", i)
		data := make([]byte, 4<<20)
		rand.Read(data)
		fullErr = withinMinutes(t, 2, func() error { return writeSync(filepath.Join(mnt, name), data) })
		if fullErr == nil {
			sums[name] = sha256.Sum256(data)
		}
	}
	t.Logf("%d files of 4 MiB fsynced before %v", len(sums), fullErr)
	if !errors.Is(fullErr, syscall.ENOSPC) {
		t.Fatalf("writing into a full store: %v, want ENOSPC", fullErr)
	}
	if len(sums) < 8 {
		t.Fatalf("only %d files fit before ENOSPC", len(sums))
	}
	if !d.alive() {
		t.Fatalf("the daemon died when its disk filled:\n%s", d.logTail())
	}
	if err := withinMinutes(t, 2, func() error { return writeSync(filepath.Join(mnt, "small"), []byte("x")) }); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a small file in the full store: %v, want ENOSPC", err)
	}
	checkSums(t, mnt, sums)
	if out, err := d.volctl("fsck"); err != nil {
		t.Errorf("fsck of the full store: %v\n%s", err, out)
	}

	for name := range sums {
		if name >= "f002" {
			must(t, os.Remove(filepath.Join(mnt, name)))
			delete(sums, name)
		}
	}
	os.Remove(filepath.Join(mnt, "small"))
	t.Logf("gc: %s", d.mustVolctl("gc"))
	for i := range 4 {
		name := fmt.Sprintf("after%d", i)
		data := make([]byte, 4<<20)
		rand.Read(data)
		if err := withinMinutes(t, 2, func() error { return writeSync(filepath.Join(mnt, name), data) }); err != nil {
			t.Fatalf("writing %s after deleting files and gc: %v", name, err)
		}
		sums[name] = sha256.Sum256(data)
	}
	checkSums(t, mnt, sums)
	d.mustVolctl("unmount", mnt)
	if out, err := d.volctl("fsck"); err != nil {
		t.Errorf("fsck after gc: %v\n%s", err, out)
	}
	if strings.Contains(d.logTail(), "SIGBUS") {
		t.Errorf("SIGBUS in the daemon log")
	}
	d.stop()
}

// writeSync creates path with data and fsyncs it; it returns the first error of write, fsync
// or close.
func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// withinMinutes runs fn and fails the test when it does not return in time (a hung mount).
func withinMinutes(t *testing.T, minutes int, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Duration(minutes) * time.Minute):
		t.Fatalf("file operation hung for %d minutes", minutes)
		return nil
	}
}

func checkSums(t *testing.T, dir string, sums map[string][32]byte) {
	t.Helper()
	for name, want := range sums {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || sha256.Sum256(data) != want {
			t.Errorf("%s: %d bytes, %v; not what was fsynced", name, len(data), err)
		}
	}
}
