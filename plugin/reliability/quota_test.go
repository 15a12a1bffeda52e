package reliability

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestQuota fills a volume created with size=8MiB through its mount: writes past the quota fail
// with ENOSPC, what was written before reads back, statfs and df report the quota as the size,
// and deleting a file makes room again.
func TestQuota(t *testing.T) {
	const quota = 8 << 20
	d, mnt := setupMounted(t, "q", "size=8MiB")

	var st unix.Statfs_t
	must(t, unix.Statfs(mnt, &st))
	if got := int64(st.Blocks) * st.Bsize; got != quota {
		t.Errorf("statfs size %d, want the quota %d", got, quota)
	}
	out, err := exec.Command("df", "-B1", "--output=size", mnt).CombinedOutput()
	if f := strings.Fields(string(out)); err != nil || len(f) != 2 || f[1] != "8388608" {
		t.Errorf("df -B1 --output=size: %v %q, want 8388608", err, out)
	}

	path := filepath.Join(mnt, "fill")
	f, err := os.Create(path)
	must(t, err)
	var written []byte
	var fullErr error
	for len(written) < 2*quota {
		buf := make([]byte, 256<<10)
		rand.Read(buf)
		n, err := f.Write(buf)
		written = append(written, buf[:n]...)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			fullErr = err
			break
		}
	}
	f.Close()
	if !errors.Is(fullErr, syscall.ENOSPC) {
		t.Fatalf("after %d bytes into an 8 MiB volume: %v, want ENOSPC", len(written), fullErr)
	}
	if len(written) > quota || len(written) < quota-(1<<20) {
		t.Errorf("%d bytes accepted before ENOSPC, want between %d and %d", len(written), quota-(1<<20), quota)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, written) {
		t.Errorf("reading back the accepted %d bytes: %d bytes, %v", len(written), len(got), err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "more"), make4K(), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a new file in the full volume: %v, want ENOSPC", err)
	}
	must(t, unix.Statfs(mnt, &st))
	if free := int64(st.Bavail) * st.Bsize; free > 1<<20 {
		t.Errorf("statfs of the full volume shows %d bytes free", free)
	}

	must(t, os.Remove(path))
	os.Remove(filepath.Join(mnt, "more"))
	buf := make([]byte, 4<<20)
	rand.Read(buf)
	if err := os.WriteFile(filepath.Join(mnt, "after"), buf, 0o644); err != nil {
		t.Errorf("writing 4 MiB after deleting the full file: %v", err)
	}
	d.mustVolctl("unmount", mnt)
	if out, err := d.volctl("fsck"); err != nil {
		t.Errorf("fsck: %v\n%s", err, out)
	}
}

func make4K() []byte {
	b := make([]byte, 4096)
	rand.Read(b)
	return b
}
