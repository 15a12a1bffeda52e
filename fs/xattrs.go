package fs

import (
	"context"
	"strings"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// xattrStore holds extended attributes (xattrs.go).
type xattrStore interface {
	GetXattr(ctx context.Context, ino backend.Ino, name string) ([]byte, error)
	SetXattr(ctx context.Context, ino backend.Ino, name string, value []byte, flags uint32) error
	ListXattr(ctx context.Context, ino backend.Ino) ([]string, error)
	RemoveXattr(ctx context.Context, ino backend.Ino, name string) error
}

var _ xattrStore = (*backend.View)(nil)

// The kernel asks for security.capability before every write; a remembered "none" answers
// without touching the store.
const capXattr = "security.capability"

func (f *fsys) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	if name == capXattr {
		if _, ok := f.noCaps.Load(h.NodeId); ok {
			return 0, fuse.ENODATA
		}
	}
	if h.NodeId == snapDirID {
		return 0, fuse.ENODATA
	}
	vol, ino, _, en := f.view(h.NodeId)
	if en != 0 {
		return 0, fuse.Status(en)
	}
	val, err := vol.GetXattr(f.ctx, ino, name)
	if err != nil {
		if name == capXattr && toErrno(err) == syscall.ENODATA {
			f.noCaps.Store(h.NodeId, struct{}{})
		}
		return 0, f.status("getxattr", err)
	}
	return xattrReply(val, dest)
}

func xattrReply(val, dest []byte) (uint32, fuse.Status) {
	if len(dest) == 0 {
		return uint32(len(val)), fuse.OK
	}
	if len(val) > len(dest) {
		return uint32(len(val)), fuse.ERANGE
	}
	return uint32(copy(dest, val)), fuse.OK
}

func (f *fsys) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if h.NodeId == snapDirID {
		return 0, fuse.OK
	}
	vol, ino, _, en := f.view(h.NodeId)
	if en != 0 {
		return 0, fuse.Status(en)
	}
	names, err := vol.ListXattr(f.ctx, ino)
	if err != nil {
		return 0, f.status("listxattr", err)
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(0)
	}
	return xattrReply([]byte(b.String()), dest)
}

func (f *fsys) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, data []byte) fuse.Status {
	vol, ino, _, en := f.writable(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	if len(name) > backend.MaxNameLen {
		return fuse.ERANGE
	}
	f.noCaps.Delete(in.NodeId)
	if err := vol.SetXattr(f.ctx, ino, name, data, in.Flags); err != nil {
		return f.status("setxattr", err)
	}
	return fuse.OK
}

func (f *fsys) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	vol, ino, _, en := f.writable(h.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	f.noCaps.Delete(h.NodeId)
	if err := vol.RemoveXattr(f.ctx, ino, name); err != nil {
		return f.status("removexattr", err)
	}
	return fuse.OK
}
