package fusetest

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountPoints lists the mount points of this process's mount table (/proc/self/mountinfo) in
// the kernel's order: a mount comes after the mounts it is stacked on.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			out = append(out, unescape.Replace(fields[4]))
		}
	}
	return out, sc.Err()
}

// unescape undoes the kernel's octal escapes in mountinfo paths.
var unescape = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// IsMountPoint reports whether dir is a mount point in this process's mount table.
func IsMountPoint(t testing.TB, dir string) bool {
	t.Helper()
	all, err := mountPoints()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(all, dir)
}

// MountsUnder lists the mount points strictly under dir, deepest first; it is empty when the
// mount table cannot be read.
func MountsUnder(dir string) []string {
	all, _ := mountPoints()
	prefix := filepath.Clean(dir) + "/"
	var out []string
	for i := len(all) - 1; i >= 0; i-- {
		if strings.HasPrefix(all[i], prefix) {
			out = append(out, all[i])
		}
	}
	return out
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
