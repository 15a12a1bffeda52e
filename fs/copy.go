package fs

import (
	"context"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rangeCloner copies file ranges inside a view, sharing whole chunks (copy.go: copy_file_range).
type rangeCloner interface {
	CloneRange(ctx context.Context, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error)
}

var _ rangeCloner = (*backend.View)(nil)

// maxCopyLen is the most one FUSE_COPY_FILE_RANGE reply can report (a 32-bit count), rounded
// down to a page as the kernel rounds its own cap: a shorter count makes the caller loop.
const maxCopyLen = 1<<32 - 1<<12

// CopyFileRange serves copy_file_range(2) between two files of the mounted view (the kernel
// sends it only between files of one mount; anything else it copies itself). The VFS has
// checked the file modes, the open modes, the overlap of ranges in one file and shortened the
// copy to the source's end as it knows it; the backend checks again against the stored size.
//
// A source in a snapshot (.snapshots) is another view: EXDEV makes the kernel copy the bytes
// itself (splice), as it does across mounts. ENOSYS must never be returned: the kernel would
// stop sending the request on this connection for good.
func (f *fsys) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if in.Flags != 0 {
		return 0, fuse.EINVAL
	}
	hin, st := f.fileHandle(in.FhIn)
	if st != fuse.OK {
		return 0, st
	}
	hout, st := f.fileHandle(in.FhOut)
	if st != fuse.OK {
		return 0, st
	}
	if !hout.write {
		return 0, fuse.EBADF
	}
	vol, dst, _, en := f.writable(in.NodeIdOut)
	if en != 0 {
		return 0, fuse.Status(en)
	}
	if _, _, slot, _ := f.view(hin.id); slot != 0 {
		return 0, fuse.Status(syscall.EXDEV)
	}
	// Buffered writes of both files go to the store first: the copy reads and shares what is
	// committed (logged records the backend settles itself).
	for _, id := range []uint64{hin.id, in.NodeIdOut} {
		if err := f.wb.flush(f.ctx, id); err != nil {
			return 0, f.status("copy_file_range", err)
		}
	}
	n, err := vol.CloneRange(f.ctx, hin.ino, int64(in.OffIn), dst, int64(in.OffOut), int64(min(in.Len, maxCopyLen)))
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
