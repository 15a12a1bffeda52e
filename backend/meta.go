package backend

import (
	"context"
	"fmt"
	"sort"
	"syscall"
)

// Rename moves an entry; flags are RenameNoReplace / RenameExchange. Errors follow rename(2).
func (v *View) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error {
	if err := checkName(oldName); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return fmt.Errorf("%w: rename flags %#x", ErrInvalid, flags)
	}
	return v.write(ctx, func(t *tx) error {
		r := &renamer{t: t, dirs: map[Ino]*inode{}, ts: now()}
		return r.rename(oldParent, oldName, newParent, newName, flags)
	})
}

// renamer holds the inodes one rename touches, so that a directory loaded twice is written once.
type renamer struct {
	t    *tx
	dirs map[Ino]*inode
	ts   int64
}

func (r *renamer) dir(ino Ino) (*inode, error) {
	if d, ok := r.dirs[ino]; ok {
		return d, nil
	}
	d, err := r.t.dir(ino)
	if err == nil {
		r.dirs[ino] = d
	}
	return d, err
}

// inode returns an inode, sharing the copy of a directory already loaded.
func (r *renamer) inode(ino Ino) (*inode, error) {
	if d, ok := r.dirs[ino]; ok {
		return d, nil
	}
	n, err := r.t.getInode(ino)
	if err == nil && isDir(n.Mode) {
		r.dirs[ino] = n
	}
	return n, err
}

// isUnder reports whether directory d is ino or lies below it.
func (r *renamer) isUnder(d, ino Ino) (bool, error) {
	for i := 0; d != 0 && i < 1<<16; i++ {
		if d == ino {
			return true, nil
		}
		if d == RootIno {
			return false, nil
		}
		n, err := r.dir(d)
		if err != nil {
			return false, err
		}
		d = n.parent
	}
	return false, nil
}

func (r *renamer) rename(op Ino, on string, np Ino, nn string, flags uint32) error {
	t := r.t
	oldDir, err := r.dir(op)
	if err != nil {
		return err
	}
	newDir, err := r.dir(np)
	if err != nil {
		return err
	}
	src, _, err := t.getDirent(op, on)
	if err != nil {
		return err
	}
	srcN, err := r.inode(src)
	if err != nil {
		return err
	}
	dst, _, dstErr := t.getDirent(np, nn)
	dstExists := dstErr == nil
	switch {
	case flags&RenameExchange != 0 && !dstExists:
		return fmt.Errorf("%q: %w", nn, ErrNotFound)
	case flags&RenameNoReplace != 0 && dstExists:
		return fmt.Errorf("%q: %w", nn, ErrExists)
	case op == np && on == nn:
		return nil
	}
	if isDir(srcN.Mode) && op != np {
		if under, err := r.isUnder(np, src); err != nil || under {
			return orErr(err, fmt.Errorf("%w: moving a directory into itself", ErrInvalid))
		}
	}
	if flags&RenameExchange != 0 {
		return r.exchange(oldDir, on, srcN, newDir, nn, dst)
	}
	if dstExists {
		if dst == src {
			return nil // two links to one inode: rename(2) does nothing
		}
		if err := r.replace(newDir, srcN, dst); err != nil {
			return err
		}
	}
	if err := t.put(direntLKey(t.tree, np, nn), encodeDirent(src, srcN.Mode&syscall.S_IFMT)); err != nil {
		return err
	}
	if err := t.remove(direntLKey(t.tree, op, on)); err != nil {
		return err
	}
	if isDir(srcN.Mode) && op != np {
		oldDir.Nlink--
		newDir.Nlink++
		srcN.parent = np
	}
	srcN.Ctime = r.ts
	oldDir.Mtime, oldDir.Ctime, newDir.Mtime, newDir.Ctime = r.ts, r.ts, r.ts, r.ts
	return r.flush(srcN)
}

// replace removes the rename target dst, checking it is compatible with the source.
func (r *renamer) replace(newDir *inode, srcN *inode, dst Ino) error {
	dstN, err := r.inode(dst)
	if err != nil {
		return err
	}
	switch {
	case isDir(srcN.Mode) && !isDir(dstN.Mode):
		return fmt.Errorf("rename a directory over a file: %w", ErrNotDir)
	case !isDir(srcN.Mode) && isDir(dstN.Mode):
		return fmt.Errorf("rename a file over a directory: %w", ErrIsDir)
	case isDir(dstN.Mode):
		delete(r.dirs, dst) // removeDir writes it
		if err := r.t.removeDir(dstN, r.ts); err != nil {
			return err
		}
		newDir.Nlink--
		return nil
	default:
		return r.t.dropLink(dstN, r.ts)
	}
}

func (r *renamer) exchange(oldDir *inode, on string, srcN *inode, newDir *inode, nn string, dst Ino) error {
	t := r.t
	dstN, err := r.inode(dst)
	if err != nil {
		return err
	}
	if isDir(dstN.Mode) && oldDir.Ino != newDir.Ino {
		if under, err := r.isUnder(oldDir.Ino, dst); err != nil || under {
			return orErr(err, fmt.Errorf("%w: moving a directory into itself", ErrInvalid))
		}
	}
	if err := t.put(direntLKey(t.tree, oldDir.Ino, on), encodeDirent(dst, dstN.Mode&syscall.S_IFMT)); err != nil {
		return err
	}
	if err := t.put(direntLKey(t.tree, newDir.Ino, nn), encodeDirent(srcN.Ino, srcN.Mode&syscall.S_IFMT)); err != nil {
		return err
	}
	if oldDir.Ino != newDir.Ino {
		if isDir(srcN.Mode) {
			oldDir.Nlink--
			newDir.Nlink++
			srcN.parent = newDir.Ino
		}
		if isDir(dstN.Mode) {
			newDir.Nlink--
			oldDir.Nlink++
			dstN.parent = oldDir.Ino
		}
	}
	srcN.Ctime, dstN.Ctime = r.ts, r.ts
	oldDir.Mtime, oldDir.Ctime, newDir.Mtime, newDir.Ctime = r.ts, r.ts, r.ts, r.ts
	if err := r.flush(srcN); err != nil {
		return err
	}
	if _, ok := r.dirs[dstN.Ino]; ok {
		return nil // flushed with the directories
	}
	return t.putInode(dstN)
}

// flush writes n and every directory the rename touched.
func (r *renamer) flush(n *inode) error {
	if _, ok := r.dirs[n.Ino]; !ok {
		if err := r.t.putInode(n); err != nil {
			return err
		}
	}
	inos := make([]Ino, 0, len(r.dirs))
	for ino := range r.dirs {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		if err := r.t.putInode(r.dirs[ino]); err != nil {
			return err
		}
	}
	return nil
}

func orErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

const maxXattrValue = 64 << 10

// GetXattr returns an extended attribute's value (ErrNoData when unset).
func (v *View) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	var val []byte
	err := v.read(func(t *tx) error {
		if _, err := t.getInode(ino); err != nil {
			return err
		}
		ver, err := t.lookup(xattrLKey(t.tree, ino, name), 0)
		if err != nil {
			return err
		}
		if !ver.live() {
			return fmt.Errorf("xattr %q: %w", name, ErrNoData)
		}
		val = ver.val[1:]
		return nil
	})
	return val, err
}

// SetXattr sets an extended attribute; flags are XattrCreate / XattrReplace.
func (v *View) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: xattr name of %d bytes", ErrNameTooLong, len(name))
	}
	if len(value) > maxXattrValue {
		return fmt.Errorf("%w: xattr value of %d bytes", ErrInvalid, len(value))
	}
	return v.write(ctx, func(t *tx) error {
		n, err := t.getInode(ino)
		if err != nil {
			return err
		}
		lkey := xattrLKey(t.tree, ino, name)
		ver, err := t.lookup(lkey, 0)
		if err != nil {
			return err
		}
		switch {
		case flags&XattrCreate != 0 && ver.live():
			return fmt.Errorf("xattr %q: %w", name, ErrExists)
		case flags&XattrReplace != 0 && !ver.live():
			return fmt.Errorf("xattr %q: %w", name, ErrNoData)
		}
		if err := t.put(lkey, append([]byte{tagLive}, value...)); err != nil {
			return err
		}
		n.Ctime = now()
		return t.putInode(n)
	})
}

// ListXattr lists an inode's extended attribute names, sorted.
func (v *View) ListXattr(ctx context.Context, ino Ino) ([]string, error) {
	var names []string
	err := v.read(func(t *tx) error {
		if _, err := t.getInode(ino); err != nil {
			return err
		}
		prefix := metaKind(t.tree, kXattr, ino)
		return t.scanVisible(prefix, func(lkey []byte, ver version) error {
			if ver.live() {
				names = append(names, string(lkey[len(prefix):len(lkey)-1]))
			}
			return nil
		})
	})
	return names, err
}

// RemoveXattr removes an extended attribute (ErrNoData when unset).
func (v *View) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	return v.write(ctx, func(t *tx) error {
		n, err := t.getInode(ino)
		if err != nil {
			return err
		}
		lkey := xattrLKey(t.tree, ino, name)
		ver, err := t.lookup(lkey, 0)
		if err != nil {
			return err
		}
		if !ver.live() {
			return fmt.Errorf("xattr %q: %w", name, ErrNoData)
		}
		if err := t.remove(lkey); err != nil {
			return err
		}
		n.Ctime = now()
		return t.putInode(n)
	})
}

// SetAttr changes the attributes selected by in.Valid; ctime becomes now unless SetCtime is given.
// A size change truncates or extends the file (extension reads as zeros).
func (v *View) SetAttr(ctx context.Context, ino Ino, in SetAttr) (Attr, error) {
	if in.Valid&SetSize != 0 {
		// Logged writes land before the truncation that follows them, in their own transaction
		// because the batches below each commit.
		if err := v.write(ctx, func(t *tx) error { return v.settleIn(t, ino) }); err != nil {
			return Attr{}, err
		}
		if err := v.shrinkInBatches(ctx, ino, in.Size); err != nil {
			return Attr{}, err
		}
	}
	var a Attr
	err := v.write(ctx, func(t *tx) error {
		if err := v.settleIn(t, ino); err != nil {
			return err
		}
		n, err := t.getInode(ino)
		if err != nil {
			return err
		}
		ts := now()
		if in.Valid&SetSize != 0 {
			if isDir(n.Mode) {
				return ErrIsDir
			}
			if n.Mode&syscall.S_IFMT != syscall.S_IFREG {
				return fmt.Errorf("%w: truncate of a non-regular file", ErrInvalid)
			}
			if err := t.truncate(v, n, in.Size); err != nil {
				return err
			}
			n.Mtime = ts
		}
		if in.Valid&SetMode != 0 {
			n.Mode = n.Mode&syscall.S_IFMT | in.Mode&07777
		}
		if in.Valid&SetUID != 0 {
			n.UID = in.UID
		}
		if in.Valid&SetGID != 0 {
			n.GID = in.GID
		}
		if in.Valid&SetAtime != 0 {
			n.Atime = in.Atime
		}
		if in.Valid&SetMtime != 0 {
			n.Mtime = in.Mtime
		}
		n.Ctime = ts
		if in.Valid&SetCtime != 0 {
			n.Ctime = in.Ctime
		}
		a = n.Attr
		return t.putInode(n)
	})
	return a, err
}

// Touch sets an inode's access time alone: a read is no change, so ctime stays.
func (v *View) Touch(ctx context.Context, ino Ino, atime int64) error {
	return v.write(ctx, func(t *tx) error {
		n, err := t.getInode(ino)
		if err != nil {
			return err
		}
		n.Atime = atime
		return t.putInode(n)
	})
}
