package fs

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// attrStore reads and changes inode attributes (entries.go: getattr, setattr, link; also
// dirs.go: readdirplus, snapshots.go: snapshot roots, writeback.go: file sizes and times).
type attrStore interface {
	GetAttr(ctx context.Context, ino backend.Ino) (backend.Attr, error)
	SetAttr(ctx context.Context, ino backend.Ino, in backend.SetAttr) (backend.Attr, error)
}

// namespace is the directory tree: names and the inodes they refer to (entries.go; Forget
// also from fsys.go, when an orphan is reclaimed).
type namespace interface {
	Lookup(ctx context.Context, parent backend.Ino, name string) (backend.Attr, error)
	Mknod(ctx context.Context, parent backend.Ino, name string, n backend.NewNode) (backend.Attr, error)
	Readlink(ctx context.Context, ino backend.Ino) (string, error)
	Link(ctx context.Context, ino, newParent backend.Ino, newName string) (backend.Attr, error)
	Unlink(ctx context.Context, parent backend.Ino, name string) error
	Rmdir(ctx context.Context, parent backend.Ino, name string) error
	Rename(ctx context.Context, oldParent backend.Ino, oldName string, newParent backend.Ino, newName string, flags uint32) error
	Forget(ctx context.Context, ino backend.Ino) error
}

var (
	_ attrStore = (*backend.View)(nil)
	_ namespace = (*backend.View)(nil)
)

func (f *fsys) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if len(name) > backend.MaxNameLen {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	if h.NodeId == snapDirID {
		return f.lookupSnapshot(name, out)
	}
	if f.isSnapDir(h.NodeId, name) {
		f.snapDirEntry(out)
		return fuse.OK
	}
	vol, ino, slot, en := f.view(h.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	a, err := f.settled(slot, func() (backend.Attr, error) { return vol.Lookup(f.ctx, ino, name) })
	if toErrno(err) == syscall.ENOENT {
		// A negative entry: the kernel remembers the name is absent.
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(negativeTimeout)
		if slot != 0 {
			out.SetEntryTimeout(snapTimeout)
		}
		return fuse.OK
	}
	if err != nil {
		return f.status("lookup", err)
	}
	f.entry(slot, a, out)
	return fuse.OK
}

func (f *fsys) isSnapDir(parent uint64, name string) bool {
	return f.snapDir && parent == uint64(backend.RootIno) && name == snapDirName
}

// newNode creates an inode the way Linux does for a local filesystem: owned by the caller,
// group and setgid inherited from a setgid parent directory.
func (f *fsys) newNode(h *fuse.InHeader, name string, mode, rdev uint32, target string, out *fuse.EntryOut) fuse.Status {
	if len(name) > backend.MaxNameLen {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	if f.isSnapDir(h.NodeId, name) {
		return fuse.Status(syscall.EEXIST)
	}
	vol, ino, slot, en := f.writable(h.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	n := backend.NewNode{Mode: mode, UID: h.Uid, GID: h.Gid, Rdev: rdev, Target: target}
	parent, err := vol.GetAttr(f.ctx, ino)
	if err != nil {
		return f.status("getattr parent", err)
	}
	if parent.Mode&syscall.S_ISGID != 0 {
		n.GID = parent.GID
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			n.Mode |= syscall.S_ISGID
		}
	}
	if mode&syscall.S_IFMT != syscall.S_IFDIR && n.Mode&syscall.S_ISGID != 0 && h.Uid != 0 && !inGroup(h.Pid, h.Gid, n.GID) {
		n.Mode &^= syscall.S_ISGID
	}
	a, err := vol.Mknod(f.ctx, ino, name, n)
	if err != nil {
		return f.status("mknod", err)
	}
	f.noCaps.Store(nodeID(slot, a.Ino), struct{}{}) // a new inode has no xattrs
	f.entry(slot, a, out)
	return fuse.OK
}

// inGroup reports whether the calling process has gid as its fsgid or a supplementary group.
func inGroup(pid, fsgid, gid uint32) bool {
	if gid == fsgid {
		return true
	}
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		for _, g := range strings.Fields(rest) {
			if v, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(v) == gid {
				return true
			}
		}
	}
	return false
}

func (f *fsys) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.newNode(&in.InHeader, name, in.Mode, in.Rdev, "", out)
}

func (f *fsys) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.newNode(&in.InHeader, name, in.Mode|syscall.S_IFDIR, 0, "", out)
}

func (f *fsys) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return f.newNode(h, name, syscall.S_IFLNK|0o777, 0, target, out)
}

func (f *fsys) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := f.newNode(&in.InHeader, name, in.Mode|syscall.S_IFREG, 0, "", &out.EntryOut)
	if st == fuse.Status(syscall.EEXIST) && in.Flags&syscall.O_EXCL == 0 {
		// Lost a race with another creator: open the file that won, as open(O_CREAT) does.
		if st = f.Lookup(cancel, &in.InHeader, name, &out.EntryOut); st != fuse.OK {
			return st
		}
		if out.NodeId == 0 {
			return fuse.ENOENT
		}
		if out.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			f.unref(out.NodeId, 1, 0)
			return fuse.Status(syscall.EISDIR)
		}
	}
	if st != fuse.OK {
		return st
	}
	if st := f.open(out.NodeId, in.Flags, &out.OpenOut); st != fuse.OK {
		f.unref(out.NodeId, 1, 0)
		return st
	}
	return fuse.OK
}

func (f *fsys) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if len(name) > backend.MaxNameLen {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	if f.isSnapDir(in.NodeId, name) {
		return fuse.Status(syscall.EEXIST)
	}
	vol, dir, slot, en := f.writable(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	_, ino, srcSlot, en := f.view(in.Oldnodeid)
	if en != 0 || srcSlot != slot {
		return fuse.Status(syscall.EXDEV)
	}
	a, err := vol.Link(f.ctx, ino, dir, name)
	if err != nil {
		return f.status("link", err)
	}
	if a, err = f.refreshed(in.Oldnodeid, vol, a); err != nil {
		return f.status("link", err)
	}
	f.entry(slot, a, out)
	return fuse.OK
}

func (f *fsys) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.remove(h, name, false)
}

func (f *fsys) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.remove(h, name, true)
}

func (f *fsys) remove(h *fuse.InHeader, name string, dir bool) fuse.Status {
	if f.isSnapDir(h.NodeId, name) {
		return fuse.Status(syscall.EBUSY)
	}
	vol, ino, _, en := f.writable(h.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	victim, err := vol.Lookup(f.ctx, ino, name)
	if err != nil {
		return f.status("lookup", err)
	}
	if dir {
		err = vol.Rmdir(f.ctx, ino, name)
	} else {
		err = vol.Unlink(f.ctx, ino, name)
	}
	if err != nil {
		return f.status("remove", err)
	}
	f.removed(victim)
	return fuse.OK
}

func (f *fsys) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if len(newName) > backend.MaxNameLen {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	if f.isSnapDir(in.NodeId, oldName) || f.isSnapDir(in.Newdir, newName) {
		return fuse.Status(syscall.EBUSY)
	}
	if in.Flags&^(backend.RenameNoReplace|backend.RenameExchange) != 0 {
		return fuse.Status(syscall.EINVAL)
	}
	vol, oldDir, slot, en := f.writable(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	_, newDir, newSlot, en := f.writable(in.Newdir)
	if en != 0 {
		return fuse.Status(en)
	}
	if newSlot != slot {
		return fuse.Status(syscall.EXDEV)
	}
	var victim backend.Attr
	replaced := false
	if in.Flags&backend.RenameExchange == 0 {
		src, err := vol.Lookup(f.ctx, oldDir, oldName)
		if err != nil {
			return f.status("lookup", err)
		}
		if v, err := vol.Lookup(f.ctx, newDir, newName); err == nil && v.Ino != src.Ino {
			victim, replaced = v, true
		}
	}
	if err := vol.Rename(f.ctx, oldDir, oldName, newDir, newName, in.Flags); err != nil {
		return f.status("rename", err)
	}
	if replaced {
		f.removed(victim)
	}
	return fuse.OK
}

func (f *fsys) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	vol, ino, _, en := f.view(h.NodeId)
	if en != 0 {
		return nil, fuse.Status(en)
	}
	t, err := vol.Readlink(f.ctx, ino)
	if err != nil {
		return nil, f.status("readlink", err)
	}
	return []byte(t), fuse.OK
}

func (f *fsys) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.NodeId == snapDirID {
		a, err := f.snapDirAttr()
		if err != nil {
			return f.status("getattr", err)
		}
		f.fillAttr(snapDirSlot, a, &out.Attr)
		out.SetTimeout(snapListTimeout)
		return fuse.OK
	}
	vol, ino, slot, en := f.view(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	a, err := f.settled(slot, func() (backend.Attr, error) { return vol.GetAttr(f.ctx, ino) })
	if err != nil {
		return f.status("getattr", err)
	}
	f.fillAttr(slot, a, &out.Attr)
	out.SetTimeout(timeouts(slot))
	return fuse.OK
}

func (f *fsys) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	vol, ino, slot, en := f.writable(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	s := toSetAttr(in)
	// Buffered data goes first: its commit would otherwise overwrite an explicit mtime
	// or resurrect bytes past a new, smaller size.
	if err := f.wb.flush(f.ctx, in.NodeId); err != nil {
		return f.status("flush", err)
	}
	// A request that changes nothing is chown(f, -1, -1): the kernel sends it for the ctime
	// update alone (without the time: no writeback cache), which ext4 makes too.
	a, err := vol.SetAttr(f.ctx, ino, s)
	if err != nil {
		return f.status("setattr", err)
	}
	if s.Valid&backend.SetSize != 0 {
		f.wb.sizeChanged(in.NodeId, a.Size)
		f.cache.invalidate(in.NodeId)
	}
	if a, err = f.refreshed(in.NodeId, vol, a); err != nil {
		return f.status("setattr", err)
	}
	f.fillAttr(slot, a, &out.Attr)
	out.SetTimeout(timeouts(slot))
	return fuse.OK
}

// toSetAttr converts a FUSE setattr request to the backend's form.
func toSetAttr(in *fuse.SetAttrIn) backend.SetAttr {
	var s backend.SetAttr
	now := time.Now().UnixNano()
	if in.Valid&fuse.FATTR_MODE != 0 {
		s.Valid |= backend.SetMode
		s.Mode = in.Mode & 0o7777
	}
	if in.Valid&fuse.FATTR_UID != 0 {
		s.Valid |= backend.SetUID
		s.UID = in.Uid
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		s.Valid |= backend.SetGID
		s.GID = in.Gid
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		s.Valid |= backend.SetSize
		s.Size = in.Size
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_ATIME_NOW) != 0 {
		s.Valid |= backend.SetAtime
		s.Atime = int64(in.Atime)*1e9 + int64(in.Atimensec)
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			s.Atime = now
		}
	}
	if in.Valid&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
		s.Valid |= backend.SetMtime
		s.Mtime = int64(in.Mtime)*1e9 + int64(in.Mtimensec)
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			s.Mtime = now
		}
	}
	if in.Valid&fuse.FATTR_CTIME != 0 {
		s.Valid |= backend.SetCtime
		s.Ctime = int64(in.Ctime)*1e9 + int64(in.Ctimensec)
	}
	return s
}

// refreshed returns a mutation's resulting attributes, read again (see settled) when the file
// has buffered writes, whose commits may have raced with the mutation.
func (f *fsys) refreshed(id uint64, vol attrStore, a backend.Attr) (backend.Attr, error) {
	if f.wb.get(id) == nil {
		return a, nil
	}
	return f.settled(uint16(id>>slotShift), func() (backend.Attr, error) { return vol.GetAttr(f.ctx, a.Ino) })
}
