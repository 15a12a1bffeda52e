package fs

import (
	"context"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rangeCloner copies file ranges into a view, from itself or from one of its snapshots, sharing
// whole chunks (copy.go: copy_file_range).
type rangeCloner interface {
	CloneRange(ctx context.Context, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error)
	CloneRangeFrom(ctx context.Context, from *backend.View, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error)
}

var _ rangeCloner = (*backend.View)(nil)

// maxCopyLen is the most one FUSE_COPY_FILE_RANGE reply can report (a 32-bit count), rounded
// down to a page as the kernel rounds its own cap: a shorter count makes the caller loop.
const maxCopyLen = 1<<32 - 1<<12

// CopyFileRange serves copy_file_range(2) into a file of the mounted view from one of the
// view's files or of a snapshot under .snapshots (the kernel sends it only between files of one
// mount; across mounts it copies the bytes itself). The VFS has checked the file modes, the open
// modes, the overlap of ranges in one file and shortened the copy to the source's end as it
// knows it; the backend checks again against the stored size.
//
// EXDEV or EOPNOTSUPP make the kernel copy the bytes itself (splice). ENOSYS must never be
// returned: the kernel would stop sending the request on this connection for good.
func (f *fsys) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if in.Flags != 0 {
		return 0, fuse.EINVAL
	}
	hin, st := f.fileHandle(in.NodeId, in.FhIn)
	if st != fuse.OK {
		return 0, st
	}
	if hout, st := f.fileHandle(in.NodeIdOut, in.FhOut); st != fuse.OK || !hout.write {
		return 0, fuse.EBADF
	}
	vol, dst, _, en := f.writable(in.NodeIdOut)
	if en != 0 {
		return 0, fuse.Status(en)
	}
	clone, st := f.cloneFrom(vol, hin.id)
	if st != fuse.OK {
		return 0, st
	}
	// Buffered writes of both files go to the store first: the copy reads and shares what is
	// committed (logged records the backend settles itself).
	for _, id := range []uint64{hin.id, in.NodeIdOut} {
		if err := f.wb.flush(f.ctx, id); err != nil {
			return 0, f.status("copy_file_range", err)
		}
	}
	n, err := clone(f.ctx, hin.ino, int64(in.OffIn), dst, int64(in.OffOut), int64(min(in.Len, maxCopyLen)))
	if n > 0 || err == nil {
		f.copied(in.NodeIdOut, vol, dst)
	}
	if err != nil && n == 0 {
		return 0, f.status("copy_file_range", err)
	}
	if err != nil {
		// The kernel reports the bytes copied; the caller's next call meets the error.
		f.log.Debug("copy_file_range stopped short", "ino", dst, "copied", n, "err", err)
	}
	return uint32(n), fuse.OK
}

type cloneFunc func(ctx context.Context, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error)

// cloneFrom returns the copy into vol from the view of node id: the mounted view's own, or
// from one of its snapshots.
func (f *fsys) cloneFrom(vol Volume, id uint64) (cloneFunc, fuse.Status) {
	svol, _, slot, en := f.view(id)
	if en != 0 {
		return nil, fuse.Status(en)
	}
	if slot == 0 {
		return vol.CloneRange, fuse.OK
	}
	from, ok := svol.(*backend.View)
	if !ok {
		return nil, fuse.Status(syscall.EXDEV)
	}
	return func(ctx context.Context, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error) {
		return vol.CloneRangeFrom(ctx, from, src, srcOff, dst, dstOff, n)
	}, fuse.OK
}

// copied brings the mount's state of a copy's destination up to date: its size for the
// write-back, no cached chunks, the quota as it is now.
func (f *fsys) copied(id uint64, vol Volume, ino backend.Ino) {
	f.cache.invalidate(id)
	f.wb.quota.invalidate()
	a, err := vol.GetAttr(f.ctx, ino)
	if err != nil {
		f.log.Warn("copy_file_range: attributes of the destination", "ino", ino, "err", err)
		return
	}
	f.wb.sizeChanged(id, a.Size)
}
