// Package mountinfo reads this process's mount table, /proc/self/mountinfo. It is the one reader
// of that file in fusevol's production code: the daemon uses it to find stale mounts and to tell
// its own mounts from whatever else is mounted.
package mountinfo

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Entry is one mount: one line of the table.
type Entry struct {
	Dir    string // mount point, unescaped
	FSType string // e.g. "fuse.fusevol", "tmpfs"
}

// Table is a mount table, in the kernel's order: a mount comes after the mounts it is stacked on.
type Table []Entry

// Read returns this process's mount table.
func Read() (Table, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

// parse reads mountinfo lines:
//
//	ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
func parse(r io.Reader) (Table, error) {
	var out Table
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		e := Entry{Dir: Unescape(fields[4])}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				e.FSType = fields[i+1]
				break
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Under returns the mount points strictly under root, deepest first (the order to unmount them
// in), from this process's mount table.
func Under(root string) ([]string, error) {
	t, err := Read()
	if err != nil {
		return nil, err
	}
	return t.Under(root), nil
}

// Under returns the mount points of t strictly under root, deepest first.
func (t Table) Under(root string) []string {
	prefix := filepath.Clean(root) + "/"
	var out []string
	for _, e := range t {
		if strings.HasPrefix(e.Dir, prefix) {
			out = append(out, e.Dir)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Find returns the mount on dir (a clean absolute path), the topmost when several are stacked
// there; false when dir is not a mount point.
func (t Table) Find(dir string) (Entry, bool) {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i].Dir == dir {
			return t[i], true
		}
	}
	return Entry{}, false
}

// Unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return len(s) == 3
}
