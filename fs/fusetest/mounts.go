package fusetest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/mountinfo"
)

// IsMountPoint reports whether dir is a mount point in this process's mount table.
func IsMountPoint(t testing.TB, dir string) bool {
	t.Helper()
	table, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	_, ok := table.Find(dir)
	return ok
}

// MountsUnder lists the mount points strictly under dir, deepest first; it is empty when the
// mount table cannot be read.
func MountsUnder(dir string) []string {
	m, _ := mountinfo.Under(dir)
	return m
}

// DetachUnder lazily unmounts everything mounted under dir, deepest first.
func DetachUnder(dir string) {
	for _, m := range MountsUnder(dir) {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

// TempRoot is a fresh directory other users may traverse, outside t.TempDir (Unix socket paths
// are limited to 108 bytes). At the end of the test whatever is mounted under it is detached and
// it is removed.
func TempRoot(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() {
		DetachUnder(dir)
		os.RemoveAll(dir)
	})
	return dir
}
