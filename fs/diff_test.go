package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The differential test runs the same random syscall sequence in a directory of the kernel's
// own filesystem and in a mounted filesystem, and requires the same result from every call
// and the same tree at the end.

const diffSlots = 4 // open file descriptors per side

// diffSide is one of the two directories under test.
type diffSide struct {
	root string
	fds  [diffSlots]int
}

func newDiffSide(root string) *diffSide {
	s := &diffSide{root: root}
	for i := range s.fds {
		s.fds[i] = -1
	}
	return s
}

func (s *diffSide) path(rel string) string { return filepath.Join(s.root, rel) }

func (s *diffSide) closeAll() {
	for i, fd := range s.fds {
		if fd >= 0 {
			syscall.Close(fd)
			s.fds[i] = -1
		}
	}
}

// diffOp is one step: a description for the failure log and the call itself, whose result is
// rendered as a string to compare.
type diffOp struct {
	desc string
	run  func(s *diffSide) string
}

func errStr(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return "errno:" + unix.ErrnoName(en)
	}
	return "err:" + err.Error()
}

func nStr(n int, err error) string {
	if err != nil {
		return errStr(err)
	}
	return "n=" + strconv.Itoa(n)
}

// diffGen draws random operations over a small namespace, so that names collide often.
type diffGen struct {
	r  *rand.Rand
	cs int
}

func (g *diffGen) name() string {
	names := []string{"f0", "f1", "f2", "f3", "d0", "d1", "l0"}
	return names[g.r.IntN(len(names))]
}

func (g *diffGen) pathname() string {
	parts := []string{}
	for range g.r.IntN(3) {
		parts = append(parts, []string{"d0", "d1"}[g.r.IntN(2)])
	}
	return filepath.Join(append(parts, g.name())...)
}

func (g *diffGen) offset() int64 {
	switch g.r.IntN(4) {
	case 0:
		return 0
	case 1:
		return int64(g.r.IntN(4096))
	case 2:
		return int64(g.r.IntN(3)*g.cs + []int{0, -1, 1, 4096}[g.r.IntN(4)] + g.cs) // around chunk edges
	default:
		return int64(g.r.IntN(3 * g.cs))
	}
}

func (g *diffGen) size() int {
	switch g.r.IntN(4) {
	case 0:
		return 1 + g.r.IntN(100)
	case 1:
		return 1 + g.r.IntN(8192)
	case 2:
		return g.cs
	default:
		return 1 + g.r.IntN(2*g.cs)
	}
}

func (g *diffGen) mode() uint32 {
	return []uint32{0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o000, 0o444}[g.r.IntN(8)]
}

// diffOps are the operation generators, with their relative weights.
var diffOps = []struct {
	weight int
	gen    func(*diffGen) diffOp
}{
	{3, (*diffGen).opOpen},
	{3, (*diffGen).opWrite},
	{2, (*diffGen).opRead},
	{1, (*diffGen).opClose},
	{1, (*diffGen).opTruncate},
	{2, (*diffGen).opRename},
	{1, (*diffGen).opLink},
	{1, (*diffGen).opUnlink},
	{1, (*diffGen).opChmod},
	{1, (*diffGen).opDir},
	{1, (*diffGen).opSpecial},
	{1, (*diffGen).opXattr},
	{1, (*diffGen).opFallocate},
	{1, (*diffGen).opFsync},
	{1, (*diffGen).opStat},
	{1, (*diffGen).opLongName},
}

// op draws the next operation.
func (g *diffGen) op() diffOp {
	total := 0
	for _, o := range diffOps {
		total += o.weight
	}
	n := g.r.IntN(total)
	for _, o := range diffOps {
		if n < o.weight {
			return o.gen(g)
		}
		n -= o.weight
	}
	panic("unreachable")
}

func (g *diffGen) opOpen() diffOp {
	slot := g.r.IntN(diffSlots)
	p := g.pathname()
	flags := []int{os.O_RDONLY, os.O_WRONLY, os.O_RDWR}[g.r.IntN(3)]
	for _, f := range []int{os.O_CREATE, os.O_EXCL, os.O_TRUNC, os.O_APPEND} {
		if g.r.IntN(3) == 0 {
			flags |= f
		}
	}
	if g.r.IntN(2) == 0 {
		flags |= os.O_CREATE
	}
	mode := g.mode() & 0o777
	return diffOp{fmt.Sprintf("open(%s, %#o, %#o) -> slot %d", p, flags, mode, slot), func(s *diffSide) string {
		if s.fds[slot] >= 0 {
			syscall.Close(s.fds[slot])
			s.fds[slot] = -1
		}
		fd, err := syscall.Open(s.path(p), flags|syscall.O_CLOEXEC|syscall.O_NONBLOCK, mode)
		if err != nil {
			return errStr(err)
		}
		s.fds[slot] = fd
		return "ok"
	}}
}

func (g *diffGen) opWrite() diffOp {
	slot := g.r.IntN(diffSlots)
	off, data := g.offset(), make([]byte, g.size())
	for i := range data {
		data[i] = byte(g.r.IntN(7))
	}
	return diffOp{fmt.Sprintf("pwrite(slot %d, off %d, len %d)", slot, off, len(data)), func(s *diffSide) string {
		return nStr(syscall.Pwrite(s.fds[slot], data, off))
	}}
}

func (g *diffGen) opRead() diffOp {
	slot := g.r.IntN(diffSlots)
	off, n := g.offset(), g.size()
	return diffOp{fmt.Sprintf("pread(slot %d, off %d, len %d)", slot, off, n), func(s *diffSide) string {
		buf := make([]byte, n)
		got, err := syscall.Pread(s.fds[slot], buf, off)
		if err != nil {
			return errStr(err)
		}
		return fmt.Sprintf("n=%d sha=%x", got, sha256.Sum256(buf[:got]))
	}}
}

func (g *diffGen) opClose() diffOp {
	slot := g.r.IntN(diffSlots)
	return diffOp{fmt.Sprintf("close(slot %d)", slot), func(s *diffSide) string {
		if s.fds[slot] < 0 {
			return "closed"
		}
		err := syscall.Close(s.fds[slot])
		s.fds[slot] = -1
		return errStr(err)
	}}
}

func (g *diffGen) opTruncate() diffOp {
	slot := g.r.IntN(diffSlots)
	size := g.offset()
	if g.r.IntN(2) == 0 {
		p := g.pathname()
		return diffOp{fmt.Sprintf("truncate(%s, %d)", p, size), func(s *diffSide) string {
			return errStr(syscall.Truncate(s.path(p), size))
		}}
	}
	return diffOp{fmt.Sprintf("ftruncate(slot %d, %d)", slot, size), func(s *diffSide) string {
		return errStr(syscall.Ftruncate(s.fds[slot], size))
	}}
}

func (g *diffGen) opRename() diffOp {
	a, b := g.pathname(), g.pathname()
	flags := []uint{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[g.r.IntN(4)]
	return diffOp{fmt.Sprintf("rename(%s, %s, %d)", a, b, flags), func(s *diffSide) string {
		return errStr(unix.Renameat2(unix.AT_FDCWD, s.path(a), unix.AT_FDCWD, s.path(b), flags))
	}}
}

func (g *diffGen) opLink() diffOp {
	a, b := g.pathname(), g.pathname()
	return diffOp{fmt.Sprintf("link(%s, %s)", a, b), func(s *diffSide) string {
		return errStr(syscall.Link(s.path(a), s.path(b)))
	}}
}

func (g *diffGen) opUnlink() diffOp {
	p := g.pathname()
	return diffOp{fmt.Sprintf("unlink(%s)", p), func(s *diffSide) string {
		return errStr(syscall.Unlink(s.path(p)))
	}}
}

func (g *diffGen) opChmod() diffOp {
	p, m := g.pathname(), g.mode()
	if g.r.IntN(3) == 0 {
		uid, gid := []int{0, 1000, -1}[g.r.IntN(3)], []int{0, 1000, -1}[g.r.IntN(3)]
		return diffOp{fmt.Sprintf("lchown(%s, %d, %d)", p, uid, gid), func(s *diffSide) string {
			return errStr(syscall.Lchown(s.path(p), uid, gid))
		}}
	}
	return diffOp{fmt.Sprintf("chmod(%s, %#o)", p, m), func(s *diffSide) string {
		return errStr(syscall.Chmod(s.path(p), m))
	}}
}

func (g *diffGen) opDir() diffOp {
	p, m := g.pathname(), g.mode()
	if g.r.IntN(2) == 0 {
		return diffOp{fmt.Sprintf("mkdir(%s, %#o)", p, m), func(s *diffSide) string {
			return errStr(syscall.Mkdir(s.path(p), m&0o7777))
		}}
	}
	return diffOp{fmt.Sprintf("rmdir(%s)", p), func(s *diffSide) string {
		return errStr(syscall.Rmdir(s.path(p)))
	}}
}

func (g *diffGen) opSpecial() diffOp {
	p, target := g.pathname(), []string{"f0", "../f1", "d0/f2", "nowhere"}[g.r.IntN(4)]
	if g.r.IntN(3) == 0 {
		return diffOp{fmt.Sprintf("mkfifo(%s)", p), func(s *diffSide) string {
			return errStr(syscall.Mkfifo(s.path(p), 0o640))
		}}
	}
	return diffOp{fmt.Sprintf("symlink(%s, %s)", target, p), func(s *diffSide) string {
		return errStr(syscall.Symlink(target, s.path(p)))
	}}
}

func (g *diffGen) opXattr() diffOp {
	p := g.pathname()
	name := []string{"user.a", "user.b", "user.long." + strings.Repeat("x", 200)}[g.r.IntN(3)]
	val := bytes.Repeat([]byte{byte('a' + g.r.IntN(26))}, g.r.IntN(300))
	flags := []int{0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[g.r.IntN(4)]
	switch g.r.IntN(4) {
	case 0, 1:
		return diffOp{fmt.Sprintf("setxattr(%s, %s, %d bytes, %d)", p, name, len(val), flags), func(s *diffSide) string {
			return errStr(unix.Lsetxattr(s.path(p), name, val, flags))
		}}
	case 2:
		return diffOp{fmt.Sprintf("removexattr(%s, %s)", p, name), func(s *diffSide) string {
			return errStr(unix.Lremovexattr(s.path(p), name))
		}}
	default:
		size := []int{0, 4, 1000}[g.r.IntN(3)]
		return diffOp{fmt.Sprintf("getxattr(%s, %s, %d)", p, name, size), func(s *diffSide) string {
			buf := make([]byte, size)
			n, err := unix.Lgetxattr(s.path(p), name, buf)
			if err != nil {
				return errStr(err)
			}
			return fmt.Sprintf("n=%d %q", n, buf[:min(n, size)])
		}}
	}
}

func (g *diffGen) opFallocate() diffOp {
	slot := g.r.IntN(diffSlots)
	mode := []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}[g.r.IntN(3)]
	off, n := g.offset(), int64(g.size())
	return diffOp{fmt.Sprintf("fallocate(slot %d, %d, %d, %d)", slot, mode, off, n), func(s *diffSide) string {
		return errStr(unix.Fallocate(s.fds[slot], mode, off, n))
	}}
}

func (g *diffGen) opFsync() diffOp {
	slot := g.r.IntN(diffSlots)
	return diffOp{fmt.Sprintf("fsync(slot %d)", slot), func(s *diffSide) string {
		return errStr(syscall.Fsync(s.fds[slot]))
	}}
}

func (g *diffGen) opStat() diffOp {
	p := g.pathname()
	return diffOp{fmt.Sprintf("lstat(%s)", p), func(s *diffSide) string {
		var st syscall.Stat_t
		if err := syscall.Lstat(s.path(p), &st); err != nil {
			return errStr(err)
		}
		return statStr(&st)
	}}
}

func (g *diffGen) opLongName() diffOp {
	p := g.pathname() + strings.Repeat("n", 254)
	return diffOp{fmt.Sprintf("creat(%s)", p), func(s *diffSide) string {
		fd, err := syscall.Open(s.path(p), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
		if err == nil {
			syscall.Close(fd)
		}
		return errStr(err)
	}}
}

// statStr renders the stat fields that must match between filesystems.
func statStr(st *syscall.Stat_t) string {
	size := st.Size
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		size = 0 // directory sizes are filesystem-specific
	}
	return fmt.Sprintf("mode=%#o nlink=%d uid=%d gid=%d size=%d rdev=%d", st.Mode, st.Nlink, st.Uid, st.Gid, size, st.Rdev)
}

// treeStr renders a whole tree: every entry's stat fields, contents, link target, xattrs,
// and which names are hard links of each other.
func treeStr(t testing.TB, root string) string {
	var b strings.Builder
	inoNames := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s: %s", rel, statStr(&st))
		if first, ok := inoNames[st.Ino]; ok && rel != "." {
			fmt.Fprintf(&b, " linkof=%s", first)
		} else {
			inoNames[st.Ino] = rel
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " sha=%x", sha256.Sum256(data))
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " target=%s", target)
		}
		sz, err := unix.Llistxattr(p, nil)
		if err == nil && sz > 0 {
			buf := make([]byte, sz)
			sz, _ = unix.Llistxattr(p, buf)
			names := strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00")
			sort.Strings(names)
			for _, n := range names {
				val := make([]byte, 4096)
				vn, _ := unix.Lgetxattr(p, n, val)
				fmt.Fprintf(&b, " x[%s]=%q", n, val[:max(vn, 0)])
			}
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return b.String()
}

// runDiff runs ops operations of one seed on both directories.
func runDiff(t *testing.T, seed uint64, ops, cs int, native, mounted string) {
	t.Helper()
	g := &diffGen{r: rand.New(rand.NewPCG(seed, 0x5eed)), cs: cs}
	a, b := newDiffSide(native), newDiffSide(mounted)
	defer a.closeAll()
	defer b.closeAll()
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		tail := log[max(0, len(log)-40):]
		if p := os.Getenv("FUSEVOL_DIFFLOG"); p != "" {
			_ = os.WriteFile(p, []byte(strings.Join(log, "\n")), 0o644)
		}
		t.Fatalf("seed %d: %s\nlast operations:\n  %s", seed, fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
	}
	for i := range ops {
		op := g.op()
		ra, rb := op.run(a), op.run(b)
		log = append(log, fmt.Sprintf("%d %s = %s", i, op.desc, ra))
		if ra != rb {
			fail("op %d %s: native %s, mounted %s", i, op.desc, ra, rb)
		}
		if i%50 == 49 || os.Getenv("FUSEVOL_CHECKALL") != "" {
			if ta, tb := treeStr(t, native), treeStr(t, mounted); ta != tb {
				fail("trees differ after op %d:\nnative:\n%s\nmounted:\n%s%s", i, ta, tb, contentDiff(native, mounted))
			}
		}
	}
	a.closeAll()
	b.closeAll()
	if ta, tb := treeStr(t, native), treeStr(t, mounted); ta != tb {
		fail("final trees differ:\nnative:\n%s\nmounted:\n%s%s", ta, tb, contentDiff(native, mounted))
	}
}

// cleanDir empties a directory between seeds.
func cleanDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(q, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

// nativeDir returns a directory on a disk filesystem (not tmpfs/overlay), whose semantics
// are the reference.
func nativeDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC || st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		d, err := os.MkdirTemp("/var/tmp", "fusevol-diff-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return dir
}

func diffSeeds() (seeds, ops int) {
	if os.Getenv("FUSEVOL_LONG") != "" {
		return 500, 600
	}
	return 150, 300
}

func TestDifferential(t *testing.T) {
	const cs = 64 << 10
	tv := newVolume(t, backendOpts(cs), Options{})
	native := nativeDir(t)
	seeds, ops := diffSeeds()
	base := uint64(1)
	if s := os.Getenv("FUSEVOL_SEED"); s != "" {
		base, _ = strconv.ParseUint(s, 10, 64)
		seeds = 1
	}
	for seed := base; seed < base+uint64(seeds); seed++ {
		cleanDir(t, native)
		cleanDir(t, tv.dir)
		runDiff(t, seed, ops, cs, native, tv.dir)
	}
}

// contentDiff names the first differing byte of each regular file whose contents differ.
func contentDiff(a, b string) string {
	var out strings.Builder
	_ = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(a, p)
		da, _ := os.ReadFile(p)
		db, _ := os.ReadFile(filepath.Join(b, rel))
		for i := 0; i < min(len(da), len(db)); i++ {
			if da[i] != db[i] {
				j := i
				for j < min(len(da), len(db)) && da[j] != db[j] {
					j++
				}
				fmt.Fprintf(&out, "%s: first difference at byte %d (run of %d); native % x, mounted % x\n", rel, i, j-i, da[i:min(i+8, len(da))], db[i:min(i+8, len(db))])
				break
			}
		}
		return nil
	})
	return out.String()
}
