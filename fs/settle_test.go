package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFsyncedDataReadsBackAfterFailedCommit: data an fsync put in the intent log must read back
// even when its commit later fails. Here the store's disk fills up after the fsync (another file
// takes the room), so the commit at close is refused by the disk guard: the
// write-back settles the log instead of dropping the buffers (the log's records were admitted
// when they were logged), so reads find the bytes in the store and close reports nothing lost.
func TestFsyncedDataReadsBackAfterFailedCommit(t *testing.T) {
	sc := diskSpace(t)
	p := filepath.Join(sc.dir, "db")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(enospcFileSize); err != nil {
		t.Fatal(err)
	}
	// A first fsync makes the file a logged one: its full chunks wait in the buffers from now on.
	head := randBytes(1, 4096)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	const off = 1 << 20
	data := randBytes(2, enospcBudget/2)
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync of the logged writes: %v", err)
	}

	sc.take(t) // from outside: the volume's write buffers stay as they are
	// The guard looks at the disk again once its last look is older than a second.
	time.Sleep(1200 * time.Millisecond)
	if err := f.Close(); err != nil {
		t.Errorf("close of a file whose fsynced data could be settled: %v", err)
	}
	if f, err = os.Open(p); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		off  int64
		want []byte
	}{{0, head}, {off, data}} {
		got := make([]byte, len(c.want))
		if _, err := f.ReadAt(got, c.off); err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("read of %d fsynced bytes at %d: %v, equal %v", len(c.want), c.off, err, bytes.Equal(got, c.want))
		}
	}
}
