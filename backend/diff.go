package backend

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"syscall"
)

// Diff is what changed between two views of a volume's history: absolute paths ("/a/b"), each
// list sorted. A path whose type changed (a file replaced by a directory or the reverse) is
// Modified, and what lies under the directory side is Added or Removed.
type Diff struct {
	Added    []string
	Modified []string
	Removed  []string
}

// DiffViews compares the tree of view from with the tree of view to (typically a snapshot and
// a later snapshot or the live volume). Directories are compared by mode and owner and walked;
// other files by mode, owner, size and mtime, then (for distinct regular-file inodes) by content.
// It sees only what was committed: the caller flushes a mounted live volume first.
func DiffViews(ctx context.Context, from, to *View) (Diff, error) {
	out := Diff{Added: []string{}, Modified: []string{}, Removed: []string{}}
	if err := diffDir(ctx, from, to, "/", RootIno, RootIno, &out); err != nil {
		return Diff{}, err
	}
	sort.Strings(out.Added)
	sort.Strings(out.Modified)
	sort.Strings(out.Removed)
	return out, nil
}

// diffDir compares directory ai of view a with directory bi of view b, both at path dir.
func diffDir(ctx context.Context, a, b *View, dir string, ai, bi Ino, out *Diff) error {
	ae, err := dirEntries(ctx, a, ai)
	if err != nil {
		return err
	}
	be, err := dirEntries(ctx, b, bi)
	if err != nil {
		return err
	}
	for name, ea := range ae {
		p := path.Join(dir, name)
		eb, ok := be[name]
		if !ok {
			if err := listTree(ctx, a, p, ea, &out.Removed); err != nil {
				return err
			}
			continue
		}
		if err := diffEntry(ctx, a, b, p, ea, eb, out); err != nil {
			return err
		}
	}
	for name, eb := range be {
		if _, ok := ae[name]; !ok {
			if err := listTree(ctx, b, path.Join(dir, name), eb, &out.Added); err != nil {
				return err
			}
		}
	}
	return nil
}

// diffEntry compares one path present on both sides.
func diffEntry(ctx context.Context, a, b *View, p string, ea, eb DirEntry, out *Diff) error {
	aa, err := a.GetAttr(ctx, ea.Ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	ba, err := b.GetAttr(ctx, eb.Ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	aDir, bDir := isDir(aa.Mode), isDir(ba.Mode)
	switch {
	case aDir && bDir:
		if aa.Mode != ba.Mode || aa.UID != ba.UID || aa.GID != ba.GID {
			out.Modified = append(out.Modified, p)
		}
		return diffDir(ctx, a, b, p, ea.Ino, eb.Ino, out)
	case aDir != bDir:
		// A directory replaced by a file or the reverse: the path itself changed, and
		// everything below the directory side came or went.
		out.Modified = append(out.Modified, p)
		if aDir {
			return listChildren(ctx, a, p, ea.Ino, &out.Removed)
		}
		return listChildren(ctx, b, p, eb.Ino, &out.Added)
	}
	changed, err := fileChanged(ctx, a, b, aa, ba)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if changed {
		out.Modified = append(out.Modified, p)
	}
	return nil
}

// fileChanged compares two non-directories. The same inode with the same size and mtime is
// taken as unchanged (every write moves mtime); a different inode is compared by content.
func fileChanged(ctx context.Context, a, b *View, aa, ba Attr) (bool, error) {
	if aa.Mode != ba.Mode || aa.UID != ba.UID || aa.GID != ba.GID || aa.Size != ba.Size || aa.Mtime != ba.Mtime {
		return true, nil
	}
	switch aa.Mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		ta, err := a.Readlink(ctx, aa.Ino)
		if err != nil {
			return false, err
		}
		tb, err := b.Readlink(ctx, ba.Ino)
		return ta != tb, err
	case syscall.S_IFREG:
		if aa.Ino == ba.Ino {
			return false, nil
		}
		return contentDiffers(ctx, a, b, aa.Ino, ba.Ino, int64(aa.Size))
	}
	return aa.Rdev != ba.Rdev, nil
}

func contentDiffers(ctx context.Context, a, b *View, ai, bi Ino, size int64) (bool, error) {
	const step = 1 << 20
	bufA, bufB := make([]byte, step), make([]byte, step)
	for off := int64(0); off < size; off += step {
		na, err := a.ReadAt(ctx, ai, bufA, off)
		if err != nil && err != io.EOF {
			return false, err
		}
		nb, err := b.ReadAt(ctx, bi, bufB, off)
		if err != nil && err != io.EOF {
			return false, err
		}
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return true, nil
		}
	}
	return false, nil
}

// listTree appends p and, for a directory, everything under it.
func listTree(ctx context.Context, v *View, p string, e DirEntry, into *[]string) error {
	*into = append(*into, p)
	if !isDir(e.Mode) {
		return nil
	}
	return listChildren(ctx, v, p, e.Ino, into)
}

func listChildren(ctx context.Context, v *View, p string, dir Ino, into *[]string) error {
	ents, err := dirEntries(ctx, v, dir)
	if err != nil {
		return err
	}
	for name, e := range ents {
		if err := listTree(ctx, v, path.Join(p, name), e, into); err != nil {
			return err
		}
	}
	return nil
}

func dirEntries(ctx context.Context, v *View, dir Ino) (map[string]DirEntry, error) {
	ents, err := v.ReadDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("read directory inode %d: %w", dir, err)
	}
	m := make(map[string]DirEntry, len(ents))
	for _, e := range ents {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		m[e.Name] = e
	}
	return m, nil
}
