package plugin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

func (d *Daemon) ctlSnapshotDiff(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	if from == "" {
		return nil, invalid("diff of %s: the from snapshot is required", name)
	}
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	a, err := st.OpenSnapshot(ctx, name, from)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s@%s: %w", name, from, err)
	}
	var b *backend.View
	if to == "" {
		// The live state: make what applications wrote visible first. The lock is held only
		// for the flush, not the walk.
		v := d.lockVolume(name)
		err = d.flushLive(ctx, name, v)
		d.unlockVolume(name, v)
		if err != nil {
			return nil, err
		}
		b, err = st.OpenVolume(ctx, name)
	} else {
		b, err = st.OpenSnapshot(ctx, name, to)
	}
	if err != nil {
		return nil, fmt.Errorf("%s@%s: %w", name, to, err)
	}
	out := api.Diff{Volume: name, From: from, To: to, Added: []string{}, Modified: []string{}, Removed: []string{}}
	if err := diffDir(ctx, a, b, "/", backend.RootIno, backend.RootIno, &out); err != nil {
		return nil, fmt.Errorf("diff %s: %w", name, err)
	}
	sort.Strings(out.Added)
	sort.Strings(out.Modified)
	sort.Strings(out.Removed)
	return out, nil
}

// diffDir compares directory ai of view a with directory bi of view b, both at path dir.
func diffDir(ctx context.Context, a, b *backend.View, dir string, ai, bi backend.Ino, out *api.Diff) error {
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
func diffEntry(ctx context.Context, a, b *backend.View, p string, ea, eb backend.DirEntry, out *api.Diff) error {
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
func fileChanged(ctx context.Context, a, b *backend.View, aa, ba backend.Attr) (bool, error) {
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

func contentDiffers(ctx context.Context, a, b *backend.View, ai, bi backend.Ino, size int64) (bool, error) {
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
func listTree(ctx context.Context, v *backend.View, p string, e backend.DirEntry, into *[]string) error {
	*into = append(*into, p)
	if !isDir(e.Mode) {
		return nil
	}
	return listChildren(ctx, v, p, e.Ino, into)
}

func listChildren(ctx context.Context, v *backend.View, p string, dir backend.Ino, into *[]string) error {
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

func dirEntries(ctx context.Context, v *backend.View, dir backend.Ino) (map[string]backend.DirEntry, error) {
	ents, err := v.ReadDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("read directory inode %d: %w", dir, err)
	}
	m := make(map[string]backend.DirEntry, len(ents))
	for _, e := range ents {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		m[e.Name] = e
	}
	return m, nil
}

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }
