package backend

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// View is the filesystem of one volume (read-write) or one snapshot (read-only). Every mutating
// method is one Badger transaction. Safe for concurrent use. A volume's view follows the volume
// across snapshots taken while it is open.
type View struct {
	s        *Store
	info     VolumeInfo
	tree     uint32
	snapNode uint32 // the frozen node of a snapshot view; 0 for a volume's live view
	snapName string
}

// OpenVolume returns a read-write view of the volume's live state.
func (s *Store) OpenVolume(ctx context.Context, name string) (*View, error) {
	s.mu.RLock()
	rec, ok := s.vols[name]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	return &View{s: s, info: rec.info(), tree: rec.Tree}, nil
}

// OpenSnapshot returns a read-only view of a snapshot: every mutation returns ErrReadOnly.
func (s *Store) OpenSnapshot(ctx context.Context, volume, snapshot string) (*View, error) {
	var rec volRec
	var snap snapRec
	err := s.view(func(t *tx) error {
		if err := t.getJSON(volumeKey(volume), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", volume, err)
		}
		if err := t.getJSON(snapshotKey(volume, snapshot), &snap); err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", volume, snapshot, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &View{s: s, info: rec.info(), tree: rec.Tree, snapNode: snap.Node, snapName: snapshot}, nil
}

func (v *View) ReadOnly() bool { return v.snapNode != 0 }
func (v *View) ChunkSize() int { return v.info.Options.ChunkSize }

// Volume is the volume as it is now (its settable options may have changed since the view was
// opened).
func (v *View) Volume() VolumeInfo {
	info := v.info
	info.Options = v.options()
	return info
}

// options are the volume's options as they are now: SetVolumeOptions changes the quota and the
// compression of volumes in use, and a live view must enforce and report the new ones at once.
// They come from the in-memory record, which commits update under s.mu. A snapshot's view keeps
// the options it was opened with.
func (v *View) options() VolumeOptions {
	if v.snapNode != 0 {
		return v.info.Options
	}
	v.s.mu.RLock()
	defer v.s.mu.RUnlock()
	if rec, ok := v.s.vols[v.info.Name]; ok && rec.ID == v.info.ID {
		return rec.Options
	}
	return v.info.Options
}

// Sync makes everything committed so far durable.
func (v *View) Sync(ctx context.Context) error { return v.s.Sync(ctx) }

// target resolves the node the view reads and writes at, with its ancestors.
func (v *View) target() (node uint32, anc []uint32, err error) {
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	node = v.snapNode
	if node == 0 {
		rec, ok := s.vols[v.info.Name]
		if !ok || rec.ID != v.info.ID {
			return 0, nil, fmt.Errorf("volume %q was deleted: %w", v.info.Name, ErrNotFound)
		}
		node = rec.Head
	}
	if _, ok := s.nodes[node]; !ok {
		return 0, nil, fmt.Errorf("snapshot %s@%s was deleted: %w", v.info.Name, v.snapName, ErrNotFound)
	}
	return node, s.ancestorsLocked(node), nil
}

// read runs fn in a read transaction bound to the view. The binding is resolved before the
// transaction starts, so a concurrent GC merge can only make the binding more complete.
func (v *View) read(fn func(t *tx) error) error {
	node, anc, err := v.target()
	if err != nil {
		return err
	}
	return v.s.view(func(t *tx) error {
		t.at(v.tree, node, anc)
		return fn(t)
	})
}

// write runs fn in one write transaction bound to the view's live node.
func (v *View) write(ctx context.Context, fn func(t *tx) error) error {
	if v.ReadOnly() {
		return ErrReadOnly
	}
	return v.s.update(ctx, func(t *tx) error {
		node, anc, err := v.target()
		if err != nil {
			return err
		}
		t.at(v.tree, node, anc)
		return fn(t)
	})
}

// Quota returns the volume's size limit in bytes (0 = none) and its current usage.
func (v *View) Quota(ctx context.Context) (limit int64, used Usage, err error) {
	err = v.read(func(t *tx) error {
		used, err = t.getUsage(t.node)
		return err
	})
	return v.QuotaLimit(), used, err
}

// QuotaLimit is the volume's size limit in bytes (0 = none), as it is now; it reads no
// transaction, so callers may ask on every write.
func (v *View) QuotaLimit() int64 { return v.options().Size }

func checkName(name string) error {
	switch {
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes", ErrNameTooLong, len(name))
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: name %q", ErrInvalid, name)
	}
	return nil
}

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

// dir returns a directory inode (ErrNotDir for anything else). A removed directory still held
// open has no entries and takes none, as on Linux: ErrNotFound.
func (t *tx) dir(ino Ino) (*inode, error) {
	n, err := t.getInode(ino)
	if err != nil {
		return nil, err
	}
	if !isDir(n.Mode) {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	if n.Nlink == 0 {
		return nil, fmt.Errorf("directory %d: removed: %w", ino, ErrNotFound)
	}
	return n, nil
}

func now() int64 { return time.Now().UnixNano() }

// entry loads directory parent and the inode its entry name points at.
func (t *tx) entry(parent Ino, name string) (dir, child *inode, err error) {
	if dir, err = t.dir(parent); err != nil {
		return nil, nil, err
	}
	ino, _, err := t.getDirent(parent, name)
	if err != nil {
		return nil, nil, err
	}
	child, err = t.getInode(ino)
	return dir, child, err
}

// GetAttr returns an inode's attributes.
func (v *View) GetAttr(ctx context.Context, ino Ino) (Attr, error) {
	var a Attr
	err := v.read(func(t *tx) error {
		n, err := t.getInode(ino)
		if err == nil {
			a = n.Attr
		}
		return err
	})
	return a, err
}

// Lookup returns the attributes of the entry name in directory parent.
func (v *View) Lookup(ctx context.Context, parent Ino, name string) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	var a Attr
	err := v.read(func(t *tx) error {
		_, n, err := t.entry(parent, name)
		if err == nil {
			a = n.Attr
		}
		return err
	})
	return a, err
}

// ReadDir lists a directory's entries sorted by name (without "." and "..").
func (v *View) ReadDir(ctx context.Context, dir Ino) ([]DirEntry, error) {
	var out []DirEntry
	err := v.read(func(t *tx) error {
		if _, err := t.dir(dir); err != nil {
			return err
		}
		var err error
		out, err = t.readDir(dir)
		return err
	})
	return out, err
}

func (t *tx) readDir(dir Ino) ([]DirEntry, error) {
	var out []DirEntry
	prefix := metaKind(t.tree, kDirent, dir)
	err := t.scanVisible(prefix, func(lkey []byte, ver version) error {
		if !ver.live() {
			return nil
		}
		ino, typ, err := decodeDirent(ver.val)
		if err != nil {
			return err
		}
		out = append(out, DirEntry{Name: string(lkey[len(prefix) : len(lkey)-1]), Ino: ino, Mode: typ})
		return nil
	})
	return out, err
}

func (t *tx) dirEmpty(dir Ino) (bool, error) {
	ents, err := t.readDir(dir)
	return len(ents) == 0, err
}

// allocIno hands out the tree's next inode number.
func (t *tx) allocIno() (Ino, error) {
	var next uint64
	item, err := t.txn.Get(treeKey(t.tree))
	if err != nil {
		return 0, fmt.Errorf("inode counter of tree %d: %w", t.tree, err)
	}
	if err := item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: bad inode counter", ErrCorrupt)
		}
		next = beUint64(v)
		return nil
	}); err != nil {
		return 0, err
	}
	return Ino(next), t.set(treeKey(t.tree), beAppend64(nil, next+1))
}

// Mknod creates a file, directory, symlink, fifo, socket or device node. ErrExists if name is taken.
func (v *View) Mknod(ctx context.Context, parent Ino, name string, nn NewNode) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	switch nn.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	case 0:
		nn.Mode |= syscall.S_IFREG
	default:
		return Attr{}, fmt.Errorf("%w: file type %o", ErrInvalid, nn.Mode&syscall.S_IFMT)
	}
	if nn.Mode&syscall.S_IFMT == syscall.S_IFLNK && (nn.Target == "" || len(nn.Target) > 4095) {
		return Attr{}, fmt.Errorf("%w: symlink target of %d bytes", ErrInvalid, len(nn.Target))
	}
	var a Attr
	err := v.write(ctx, func(t *tx) error {
		p, err := t.dir(parent)
		if err != nil {
			return err
		}
		if _, _, err := t.getDirent(parent, name); err == nil {
			return fmt.Errorf("%q: %w", name, ErrExists)
		}
		ino, err := t.allocIno()
		if err != nil {
			return err
		}
		ts := now()
		n := &inode{Attr: Attr{Ino: ino, Mode: nn.Mode, UID: nn.UID, GID: nn.GID, Rdev: nn.Rdev, Nlink: 1,
			Atime: ts, Mtime: ts, Ctime: ts, Gen: 1}}
		if p.Mode&syscall.S_ISGID != 0 {
			n.GID = p.GID
			if isDir(n.Mode) {
				n.Mode |= syscall.S_ISGID
			}
		}
		if isDir(n.Mode) {
			n.Nlink, n.parent = 2, parent
			p.Nlink++
		}
		if n.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			n.target, n.Size = nn.Target, uint64(len(nn.Target))
		}
		p.Mtime, p.Ctime = ts, ts
		if err := t.putInode(n); err != nil {
			return err
		}
		if err := t.putInode(p); err != nil {
			return err
		}
		if err := t.put(direntLKey(t.tree, parent, name), encodeDirent(ino, n.Mode&syscall.S_IFMT)); err != nil {
			return err
		}
		a = n.Attr
		return t.addUsage(t.node, 0, 1)
	})
	return a, err
}

// Readlink returns a symlink's target.
func (v *View) Readlink(ctx context.Context, ino Ino) (string, error) {
	var target string
	err := v.read(func(t *tx) error {
		n, err := t.getInode(ino)
		if err != nil {
			return err
		}
		if n.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			return fmt.Errorf("inode %d is not a symlink: %w", ino, ErrInvalid)
		}
		target = n.target
		return nil
	})
	return target, err
}

// Link adds a hard link newParent/newName to ino.
func (v *View) Link(ctx context.Context, ino, newParent Ino, newName string) (Attr, error) {
	if err := checkName(newName); err != nil {
		return Attr{}, err
	}
	var a Attr
	err := v.write(ctx, func(t *tx) error {
		n, err := t.getInode(ino)
		if err != nil {
			return err
		}
		switch {
		case isDir(n.Mode):
			return fmt.Errorf("hard link to a directory: %w", ErrPerm)
		case n.Nlink == 0:
			return fmt.Errorf("inode %d was unlinked: %w", ino, ErrNotFound)
		case n.Nlink >= 65000:
			return ErrTooManyLink
		}
		p, err := t.dir(newParent)
		if err != nil {
			return err
		}
		if _, _, err := t.getDirent(newParent, newName); err == nil {
			return fmt.Errorf("%q: %w", newName, ErrExists)
		}
		ts := now()
		n.Nlink++
		n.Ctime = ts
		p.Mtime, p.Ctime = ts, ts
		if err := t.put(direntLKey(t.tree, newParent, newName), encodeDirent(ino, n.Mode&syscall.S_IFMT)); err != nil {
			return err
		}
		if err := t.putInode(p); err != nil {
			return err
		}
		a = n.Attr
		return t.putInode(n)
	})
	return a, err
}

// Unlink removes a non-directory entry. When the last link goes, the inode becomes an orphan: it
// stays readable and writable by inode number until Forget is called (and is reclaimed at the next
// Open if the process dies first).
func (v *View) Unlink(ctx context.Context, parent Ino, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return v.write(ctx, func(t *tx) error {
		p, n, err := t.entry(parent, name)
		if err != nil {
			return err
		}
		if isDir(n.Mode) {
			return fmt.Errorf("%q: %w", name, ErrIsDir)
		}
		ts := now()
		p.Mtime, p.Ctime = ts, ts
		if err := t.remove(direntLKey(t.tree, parent, name)); err != nil {
			return err
		}
		if err := t.putInode(p); err != nil {
			return err
		}
		return t.dropLink(n, ts)
	})
}

// dropLink decrements a non-directory's link count, making it an orphan at zero.
func (t *tx) dropLink(n *inode, ts int64) error {
	if n.Nlink > 0 {
		n.Nlink--
	}
	n.Ctime = ts
	if n.Nlink == 0 {
		if err := t.put(orphanLKey(t.tree, n.Ino), []byte{tagLive}); err != nil {
			return err
		}
	}
	return t.putInode(n)
}

// Rmdir removes an empty directory.
func (v *View) Rmdir(ctx context.Context, parent Ino, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return v.write(ctx, func(t *tx) error {
		p, n, err := t.entry(parent, name)
		if err != nil {
			return err
		}
		if !isDir(n.Mode) {
			return fmt.Errorf("%q: %w", name, ErrNotDir)
		}
		ts := now()
		if err := t.removeDir(n, ts); err != nil {
			return err
		}
		p.Nlink--
		p.Mtime, p.Ctime = ts, ts
		if err := t.remove(direntLKey(t.tree, parent, name)); err != nil {
			return err
		}
		return t.putInode(p)
	})
}

// removeDir unlinks an empty directory's inode: like a file's last link, it becomes an orphan
// (nlink 0, orphan marker) until Forget, because a process may still hold it open or sit in it,
// and fstat must still answer there. Its entries' whiteouts go with it at reclaim.
func (t *tx) removeDir(n *inode, ts int64) error {
	empty, err := t.dirEmpty(n.Ino)
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("directory %d: %w", n.Ino, ErrNotEmpty)
	}
	n.Nlink, n.Ctime = 0, ts
	if err := t.put(orphanLKey(t.tree, n.Ino), []byte{tagLive}); err != nil {
		return err
	}
	return t.putInode(n)
}

// dropOwn deletes every version under prefix written at the transaction's node (not chunk maps:
// those need refcounting, see reclaim).
func (t *tx) dropOwn(prefix []byte) error {
	var keys [][]byte
	t.closeIter()
	if err := scanPrefix(t.txn, prefix, false, func(k, _ []byte) error {
		if len(k) >= len(prefix)+4 && beUint32(k[len(k)-4:]) == t.node {
			keys = append(keys, k)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := t.delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Forget tells the store that nothing holds ino open any more: an orphan (nlink 0) is reclaimed.
func (v *View) Forget(ctx context.Context, ino Ino) error {
	if v.ReadOnly() {
		return nil
	}
	return v.s.reclaim(ctx, v, ino)
}

// Snapshots lists the volume's snapshots, oldest first (none for a snapshot's own view).
func (v *View) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	if v.ReadOnly() {
		return nil, nil
	}
	return v.s.ListSnapshots(ctx, v.info.Name)
}

// Snapshot opens one of the volume's snapshots read-only.
func (v *View) Snapshot(ctx context.Context, name string) (*View, error) {
	if v.ReadOnly() {
		return nil, fmt.Errorf("snapshot %q of a snapshot: %w", name, ErrNotFound)
	}
	return v.s.OpenSnapshot(ctx, v.info.Name, name)
}
