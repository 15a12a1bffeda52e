package fs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// snapshotter is implemented by volume views whose snapshots can be browsed under .snapshots
// (snapshots.go; newFsys checks for it).
type snapshotter interface {
	Snapshots(ctx context.Context) ([]backend.SnapshotInfo, error)
	Snapshot(ctx context.Context, name string) (*backend.View, error)
}

var _ snapshotter = (*backend.View)(nil)

// snapDirAttr describes <mount>/.snapshots: a read-only directory with the root's times.
func (f *fsys) snapDirAttr() (backend.Attr, error) {
	root, err := f.vol.GetAttr(f.ctx, backend.RootIno)
	if err != nil {
		return backend.Attr{}, err
	}
	return backend.Attr{
		Ino:   1,
		Mode:  syscall.S_IFDIR | 0o555,
		Nlink: 2,
		Atime: root.Atime, Mtime: root.Mtime, Ctime: root.Ctime,
		Gen: 1,
	}, nil
}

func (f *fsys) snapDirEntry(out *fuse.EntryOut) {
	a, err := f.snapDirAttr()
	if err != nil {
		a = backend.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o555, Nlink: 2, Gen: 1}
	}
	f.entry(snapDirSlot, a, out)
	out.SetAttrTimeout(snapListTimeout)
}

// snapshotSlot returns the slot of the named snapshot, opening its view on first use. A
// snapshot deleted and created again under the same name gets a new slot, so the kernel
// never mixes the inodes of the two.
func (f *fsys) snapshotSlot(name string) (*snapSlot, error) {
	infos, err := f.snaps.Snapshots(f.ctx)
	if err != nil {
		return nil, err
	}
	var info *backend.SnapshotInfo
	for i := range infos {
		if infos[i].Name == name {
			info = &infos[i]
		}
	}
	if info == nil {
		return nil, fmt.Errorf("snapshot %q: %w", name, backend.ErrNotFound)
	}
	f.snapMu.RLock()
	s := f.snapByName[name]
	f.snapMu.RUnlock()
	if s != nil && s.created.Equal(info.CreatedAt) {
		return s, nil
	}
	v, err := f.snaps.Snapshot(f.ctx, name)
	if err != nil {
		return nil, err
	}
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	if s := f.snapByName[name]; s != nil && s.created.Equal(info.CreatedAt) {
		return s, nil
	}
	if len(f.slots) >= snapDirSlot-1 {
		return nil, fmt.Errorf("too many snapshots browsed in one mount: %w", syscall.EMFILE)
	}
	s = &snapSlot{slot: uint16(len(f.slots) + 1), name: name, created: info.CreatedAt, vol: v}
	f.slots = append(f.slots, s)
	f.snapByName[name] = s
	go f.persist() // takes snapMu
	return s, nil
}

func (f *fsys) lookupSnapshot(name string, out *fuse.EntryOut) fuse.Status {
	s, err := f.snapshotSlot(name)
	if err != nil {
		// No negative caching: the snapshot may be taken a moment later.
		return f.status("lookup snapshot", err)
	}
	a, err := s.vol.GetAttr(f.ctx, backend.RootIno)
	if err != nil {
		return f.status("snapshot root", err)
	}
	f.entry(s.slot, a, out)
	out.SetEntryTimeout(snapListTimeout)
	return fuse.OK
}

// snapshotEntries lists .snapshots.
func (f *fsys) snapshotEntries() ([]backend.DirEntry, error) {
	infos, err := f.snaps.Snapshots(f.ctx)
	if err != nil {
		return nil, err
	}
	out := make([]backend.DirEntry, 0, len(infos))
	for _, in := range infos {
		out = append(out, backend.DirEntry{Name: in.Name, Ino: 0, Mode: syscall.S_IFDIR})
	}
	return out, nil
}
