package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileSpace allocates and finds a file's data outside the write path (files.go: fallocate,
// lseek).
type fileSpace interface {
	Fallocate(ctx context.Context, ino backend.Ino, off, length int64, mode uint32) error
	SeekData(ctx context.Context, ino backend.Ino, off int64, whence int) (int64, error)
}

var _ fileSpace = (*backend.View)(nil)

// fileHandle is one open of a regular file.
type fileHandle struct {
	id    uint64
	vol   fileData
	ino   backend.Ino
	write bool
	// lostInCrash: adopted from a predecessor that crashed; the next fsync or flush fails with
	// EIO (handles.go)
	lostInCrash atomic.Bool
	atime       atomic.Bool // the next read updates atime (atimeDue at open)

	mu     sync.Mutex // read-ahead state
	raNext int64      // where a sequential read would continue
	raWin  int        // chunks to read ahead; doubles while reads stay sequential
}

const maxReadAheadChunks = 8

func (f *fsys) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return f.open(in.NodeId, in.Flags, out)
}

func (f *fsys) open(id uint64, flags uint32, out *fuse.OpenOut) fuse.Status {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	view := f.view
	if write {
		view = f.writable
	}
	vol, ino, _, en := view(id)
	if en != 0 {
		return fuse.Status(en)
	}
	h := &fileHandle{id: id, vol: vol, ino: ino, write: write}
	if write {
		if _, err := f.wb.state(id, vol, ino, true); err != nil {
			return f.status("open", err)
		}
	}
	// The page cache stays valid across opens: every change to the data passes through
	// this mount (and so through the kernel), and snapshots never change. Only a read that
	// must update atime has to reach the mount.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	if f.atimeDue(id, flags) {
		h.atime.Store(true)
		out.OpenFlags = 0
	}
	f.ref(id, 0, 1)
	out.Fh = f.addHandle(h, write)
	return fuse.OK
}

func (f *fsys) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	h, ok := f.dropHandle(in.Fh).(*fileHandle)
	if !ok {
		return
	}
	if h.write {
		if err := f.wb.flush(f.ctx, h.id); err != nil {
			f.log.Warn("release: commit failed", "ino", h.ino, "err", err)
		}
		f.wb.closeFile(h.id)
	}
	f.unref(h.id, 0, 1)
}

func (f *fsys) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h, st := f.fileHandle(in.NodeId, in.Fh)
	if st != fuse.OK || !h.write {
		return fuse.OK
	}
	if h.lostInCrash.Swap(false) {
		return fuse.EIO
	}
	// A close reports data of the file that could not be stored, as fsync does.
	return f.status("flush", f.wb.report(f.ctx, h.id))
}

func (f *fsys) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	vol, ino, _, en := f.writable(in.NodeId)
	if en != 0 {
		return f.status("fsync", f.sync()) // a snapshot's file: nothing of it can be dirty
	}
	if h, st := f.fileHandle(in.NodeId, in.Fh); st == fuse.OK && h.lostInCrash.Swap(false) {
		return fuse.EIO
	}
	return f.status("fsync", f.wb.fsync(f.ctx, in.NodeId, vol, ino, f.vol.Sync))
}

func (f *fsys) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h, st := f.fileHandle(in.NodeId, in.Fh)
	if st != fuse.OK {
		return 0, st
	}
	if !h.write {
		return 0, fuse.EBADF
	}
	n, err := f.wb.write(h.id, h.vol, h.ino, data, int64(in.Offset))
	if err != nil && n == 0 {
		return 0, f.status("write", err)
	}
	return uint32(n), fuse.OK
}

func (f *fsys) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, st := f.fileHandle(in.NodeId, in.Fh)
	if st != fuse.OK {
		return nil, st
	}
	n, err := f.readAt(h, buf[:in.Size], int64(in.Offset))
	if err != nil {
		return nil, f.status("read", err)
	}
	if h.atime.Swap(false) {
		f.touch(h)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// readAt reads file data, buffered writes included.
func (f *fsys) readAt(h *fileHandle, dst []byte, off int64) (int, error) {
	st := f.wb.get(h.id)
	var size int64
	if st != nil {
		st.mu.Lock()
		size = int64(st.size)
		st.mu.Unlock()
	} else {
		a, err := h.vol.GetAttr(f.ctx, h.ino)
		if err != nil {
			return 0, err
		}
		size = int64(a.Size)
	}
	if off >= size {
		return 0, nil
	}
	dst = dst[:min(int64(len(dst)), size-off)]
	cs := int64(f.cs)
	done := 0
	for done < len(dst) {
		pos := off + int64(done)
		idx, within := uint64(pos/cs), int(pos%cs)
		p := dst[done:min(len(dst), done+int(cs)-within)]
		epoch := f.cache.now()
		if st != nil {
			ok, err := f.wb.readBuffered(st, idx, within, p)
			if err != nil {
				return done, err
			}
			if ok {
				done += len(p)
				continue
			}
		}
		if err := f.cache.read(f.ctx, h.vol, cacheKey{h.id, idx}, h.ino, f.cs, epoch, p, within); err != nil {
			return done, err
		}
		done += len(p)
	}
	if st == nil {
		// Buffered chunks must not be prefetched from the store: the stale copy would
		// outlive the commit.
		f.readAhead(h, off, done, size)
	}
	return done, nil
}

// readAhead prefetches the chunks after a read into the cache, more while reads stay sequential.
func (f *fsys) readAhead(h *fileHandle, off int64, n int, size int64) {
	h.mu.Lock()
	if off == h.raNext {
		h.raWin = min(max(1, h.raWin*2), maxReadAheadChunks)
	} else {
		h.raWin = 0
	}
	h.raNext = off + int64(n)
	win := h.raWin
	h.mu.Unlock()
	cs := int64(f.cs)
	last := (off + int64(n) - 1) / cs
	for i := int64(1); i <= int64(win); i++ {
		idx := last + i
		if idx*cs >= size {
			break
		}
		f.cache.prefetch(h.vol, cacheKey{h.id, uint64(idx)}, h.ino, f.cs)
	}
}

func (f *fsys) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	vol, ino, _, en := f.writable(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	if err := f.wb.flush(f.ctx, in.NodeId); err != nil {
		return f.status("fallocate", err)
	}
	err := vol.Fallocate(f.ctx, ino, int64(in.Offset), int64(in.Length), in.Mode)
	if err != nil {
		return f.status("fallocate", err)
	}
	a, err := vol.GetAttr(f.ctx, ino)
	if err != nil {
		return f.status("fallocate", err)
	}
	f.wb.sizeChanged(in.NodeId, a.Size)
	f.cache.invalidate(in.NodeId)
	f.wb.quota.invalidate()
	return fuse.OK
}

const (
	seekData = 3
	seekHole = 4
)

func (f *fsys) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if in.Whence != seekData && in.Whence != seekHole {
		return fuse.EINVAL
	}
	vol, ino, _, en := f.view(in.NodeId)
	if en != 0 {
		return fuse.Status(en)
	}
	if err := f.wb.flush(f.ctx, in.NodeId); err != nil {
		return f.status("lseek", err)
	}
	off, err := vol.SeekData(f.ctx, ino, int64(in.Offset), int(in.Whence))
	if toErrno(err) == syscall.ENOENT {
		return fuse.Status(syscall.ENXIO)
	}
	if err != nil {
		return f.status("lseek", err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}
