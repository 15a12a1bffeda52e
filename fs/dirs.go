package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirLister lists a directory (dirs.go: readdir).
type dirLister interface {
	ReadDir(ctx context.Context, dir backend.Ino) ([]backend.DirEntry, error)
}

// syncer makes committed changes durable (dirs.go: fsyncdir, files.go: fsync).
type syncer interface {
	Sync(ctx context.Context) error
}

var (
	_ dirLister = (*backend.View)(nil)
	_ syncer    = (*backend.View)(nil)
)

// dirHandle holds the listing of an open directory, taken when the stream is (re)started at
// offset 0, so that offsets stay meaningful while the directory changes.
type dirHandle struct {
	id   uint64
	mu   sync.Mutex
	ents []fuse.DirEntry // "." and ".." first; Off is the index of the next entry
}

func (f *fsys) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId != snapDirID {
		if _, _, _, en := f.view(in.NodeId); en != 0 {
			return fuse.Status(en)
		}
	}
	out.Fh = f.addHandle(&dirHandle{id: in.NodeId}, false)
	return fuse.OK
}

func (f *fsys) ReleaseDir(in *fuse.ReleaseIn) {
	f.dropHandle(in.Fh)
}

// list reads the directory's entries in readdir order.
func (f *fsys) list(id uint64) ([]fuse.DirEntry, error) {
	ents := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: id},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: uint64(backend.RootIno)},
	}
	if id == snapDirID {
		snaps, err := f.snapshotEntries()
		if err != nil {
			return nil, err
		}
		for i, s := range snaps {
			ents = append(ents, fuse.DirEntry{Name: s.Name, Mode: s.Mode, Ino: snapDirID + 1 + uint64(i)})
		}
		return number(ents), nil
	}
	vol, ino, slot, en := f.view(id)
	if en != 0 {
		return nil, en
	}
	list, err := vol.ReadDir(f.ctx, ino)
	if err != nil {
		return nil, err
	}
	for _, e := range list {
		if slot == 0 && ino == backend.RootIno && f.snapDir && e.Name == snapDirName {
			continue
		}
		ents = append(ents, fuse.DirEntry{Name: e.Name, Mode: e.Mode, Ino: nodeID(slot, e.Ino)})
	}
	return number(ents), nil
}

func number(ents []fuse.DirEntry) []fuse.DirEntry {
	for i := range ents {
		ents[i].Off = uint64(i + 1)
	}
	return ents
}

func (f *fsys) dirEntries(in *fuse.ReadIn) (*dirHandle, []fuse.DirEntry, fuse.Status) {
	d, st := f.dirHandle(in.NodeId, in.Fh)
	if st != fuse.OK {
		return nil, nil, st
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if in.Offset == 0 || d.ents == nil {
		ents, err := f.list(d.id)
		if err != nil {
			return nil, nil, f.status("readdir", err)
		}
		d.ents = ents
	}
	if in.Offset >= uint64(len(d.ents)) {
		return d, nil, fuse.OK
	}
	return d, d.ents[in.Offset:], fuse.OK
}

func (f *fsys) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	_, ents, st := f.dirEntries(in)
	for _, e := range ents {
		if !out.AddDirEntry(e) {
			break
		}
	}
	return st
}

func (f *fsys) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	d, ents, st := f.dirEntries(in)
	if st != fuse.OK {
		return st
	}
	vol, _, slot, _ := f.view(d.id)
	for _, e := range ents {
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if e.Name == "." || e.Name == ".." || d.id == snapDirID {
			continue // the kernel looks these up itself
		}
		a, err := f.settled(slot, func() (backend.Attr, error) { return vol.GetAttr(f.ctx, backend.Ino(e.Ino&inoMask)) })
		if err != nil {
			continue // removed meanwhile: a zero node id makes the kernel skip the entry
		}
		f.entry(slot, a, eo)
	}
	return fuse.OK
}

func (f *fsys) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return f.status("fsyncdir", f.sync())
}

// sync makes committed changes durable.
func (f *fsys) sync() error {
	return f.vol.Sync(f.ctx)
}

// Capacity reported by statfs when the volume has no quota.
const unlimitedBytes = 1 << 50

func (f *fsys) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	limit, used, err := f.vol.Quota(f.ctx)
	if err != nil {
		return f.status("statfs", err)
	}
	const bsize = 4096
	total := limit
	if total <= 0 {
		total = unlimitedBytes
	}
	free := max(total-used.Bytes, 0)
	*out = fuse.StatfsOut{
		Blocks:  uint64(total) / bsize,
		Bfree:   uint64(free) / bsize,
		Bavail:  uint64(free) / bsize,
		Files:   1 << 32,
		Ffree:   1<<32 - uint64(max(used.Files, 0)),
		Bsize:   bsize,
		Frsize:  bsize,
		NameLen: backend.MaxNameLen,
	}
	return fuse.OK
}
