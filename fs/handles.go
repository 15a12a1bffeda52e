package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// File handles are numbered so that a successor process (resume.go) can serve the handles its
// predecessor gave out without having been told of them: bit 0 is the write access, the top 16
// bits the epoch of the process that opened it. A request on an unknown handle of an earlier
// epoch adopts it, rebuilt from the request's node id; within one epoch an unknown handle is
// EBADF, as before. Nothing else of an open is per handle: read-ahead state starts over.
const (
	fhWrite      = 1
	fhEpochShift = 48
)

func (f *fsys) addHandle(h any, write bool) uint64 {
	f.handlesMu.Lock()
	defer f.handlesMu.Unlock()
	f.nextFh++
	fh := uint64(f.epoch)<<fhEpochShift | f.nextFh<<1
	if write {
		fh |= fhWrite
	}
	f.handles[fh] = h
	return fh
}

func (f *fsys) handle(fh uint64) any {
	f.handlesMu.Lock()
	defer f.handlesMu.Unlock()
	return f.handles[fh]
}

func (f *fsys) dropHandle(fh uint64) any {
	f.handlesMu.Lock()
	defer f.handlesMu.Unlock()
	h := f.handles[fh]
	delete(f.handles, fh)
	return h
}

// inherited reports whether fh was given out by a predecessor of this process.
func (f *fsys) inherited(fh uint64) bool {
	return f.resumed && uint16(fh>>fhEpochShift) != f.epoch
}

// fileHandle returns the open file fh of node id, adopting a predecessor's.
func (f *fsys) fileHandle(id, fh uint64) (*fileHandle, fuse.Status) {
	if h, ok := f.handle(fh).(*fileHandle); ok {
		return h, fuse.OK
	}
	if !f.inherited(fh) {
		return nil, fuse.EBADF
	}
	return f.adoptFile(id, fh)
}

func (f *fsys) adoptFile(id, fh uint64) (*fileHandle, fuse.Status) {
	write := fh&fhWrite != 0
	view := f.view
	if write {
		view = f.writable
	}
	vol, ino, _, en := view(id)
	if en != 0 {
		return nil, fuse.Status(en)
	}
	if write {
		if _, err := f.wb.state(id, vol, ino, true); err != nil {
			return nil, f.status("adopt handle", err)
		}
	}
	f.handlesMu.Lock()
	defer f.handlesMu.Unlock()
	if h, ok := f.handles[fh].(*fileHandle); ok { // adopted by a concurrent request
		if write {
			f.wb.closeFile(id)
		}
		return h, fuse.OK
	}
	h := &fileHandle{id: id, vol: vol, ino: ino, write: write}
	// What the handle wrote since its last fsync may have died with a crashed predecessor:
	// its next fsync or close says so once, as a failed disk write would.
	h.lostInCrash.Store(write && f.crashed)
	f.handles[fh] = h
	f.ref(id, 0, 1)
	return h, fuse.OK
}

// dirHandle returns the open directory fh of node id, adopting a predecessor's: its listing
// is taken again, and readdir continues at the offset the kernel asks for.
func (f *fsys) dirHandle(id, fh uint64) (*dirHandle, fuse.Status) {
	if d, ok := f.handle(fh).(*dirHandle); ok {
		return d, fuse.OK
	}
	if !f.inherited(fh) {
		return nil, fuse.EBADF
	}
	if id != snapDirID {
		if _, _, _, en := f.view(id); en != 0 && en != syscall.EROFS {
			return nil, fuse.Status(en)
		}
	}
	f.handlesMu.Lock()
	defer f.handlesMu.Unlock()
	if d, ok := f.handles[fh].(*dirHandle); ok {
		return d, fuse.OK
	}
	d := &dirHandle{id: id}
	f.handles[fh] = d
	return d, fuse.OK
}
