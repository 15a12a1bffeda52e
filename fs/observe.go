package fs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Observer is told of every request a mount answers (Options.Observe): the operation (the FUSE
// opcode's name in lower case: "read", "write", "fsync", ...), how long serving it took, the
// bytes it moved (read, write, copy_file_range; 0 for the others) and its errno (0 = success).
// It runs on the request's goroutine before the reply is sent, so it must be quick, and safe
// for concurrent use. It is also told of each commit of buffered writes to the store, as
// OpCommit with the bytes committed, on the committing goroutine: no request waits for most of
// them, so their latency is not any request's.
type Observer func(op string, took time.Duration, n int, errno syscall.Errno)

// OpCommit is the Observer's operation for a commit of buffered writes (not a FUSE request).
const OpCommit = "commit"

// observeCommit tells the observer of a commit of jobs that started at start.
func (wb *writeback) observeCommit(start time.Time, jobs []*commitJob, err error) {
	if wb.observe == nil {
		return
	}
	n := 0
	for _, j := range jobs {
		for _, p := range j.pieces {
			n += len(p.data)
		}
	}
	wb.observe(OpCommit, time.Since(start), n, toErrno(err))
}

// observed times the requests of a mount that has an Observer, and holds them at the gate of
// a restartable mount (resume.go). It wraps the fsys rather than hooking each handler, so that a
// mount with neither serves the fsys itself, at no cost, and handlers added later are passed
// through (timed once listed here).
type observed struct {
	fuse.RawFileSystem          // the mount's fsys: Init, String and SetDebug pass through
	obs                Observer // nil: not timed
	gate               *gate    // nil: not held
}

// rawFS is what Mount serves: f itself, or f wrapped for obs and g.
func rawFS(f *fsys, obs Observer, g *gate) fuse.RawFileSystem {
	if obs == nil && g == nil {
		return f
	}
	return &observed{RawFileSystem: f, obs: obs, gate: g}
}

func (o *observed) begin() time.Time {
	if o.gate != nil {
		o.gate.enter()
	}
	if o.obs == nil {
		return time.Time{}
	}
	return time.Now()
}

func (o *observed) done(op string, start time.Time, n int, st fuse.Status) {
	if o.obs != nil {
		o.obs(op, time.Since(start), n, syscall.Errno(st))
	}
	if o.gate != nil {
		o.gate.exit()
	}
}

// Forget is held at the gate (it may reclaim an orphan in the store), not timed.
func (o *observed) Forget(nodeid, nlookup uint64) {
	if o.gate != nil {
		o.gate.enter()
		defer o.gate.exit()
	}
	o.RawFileSystem.Forget(nodeid, nlookup)
}

func (o *observed) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Lookup(c, h, name, out)
	o.done("lookup", t, 0, st)
	return st
}

func (o *observed) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.GetAttr(c, in, out)
	o.done("getattr", t, 0, st)
	return st
}

func (o *observed) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.SetAttr(c, in, out)
	o.done("setattr", t, 0, st)
	return st
}

func (o *observed) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Mknod(c, in, name, out)
	o.done("mknod", t, 0, st)
	return st
}

func (o *observed) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Mkdir(c, in, name, out)
	o.done("mkdir", t, 0, st)
	return st
}

func (o *observed) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Unlink(c, h, name)
	o.done("unlink", t, 0, st)
	return st
}

func (o *observed) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Rmdir(c, h, name)
	o.done("rmdir", t, 0, st)
	return st
}

func (o *observed) Rename(c <-chan struct{}, in *fuse.RenameIn, from, to string) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Rename(c, in, from, to)
	o.done("rename", t, 0, st)
	return st
}

func (o *observed) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Link(c, in, name, out)
	o.done("link", t, 0, st)
	return st
}

func (o *observed) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Symlink(c, h, target, name, out)
	o.done("symlink", t, 0, st)
	return st
}

func (o *observed) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t := o.begin()
	b, st := o.RawFileSystem.Readlink(c, h)
	o.done("readlink", t, 0, st)
	return b, st
}

func (o *observed) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Access(c, in)
	o.done("access", t, 0, st)
	return st
}

func (o *observed) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := o.begin()
	n, st := o.RawFileSystem.GetXAttr(c, h, attr, dest)
	o.done("getxattr", t, 0, st)
	return n, st
}

func (o *observed) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := o.begin()
	n, st := o.RawFileSystem.ListXAttr(c, h, dest)
	o.done("listxattr", t, 0, st)
	return n, st
}

func (o *observed) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.SetXAttr(c, in, attr, data)
	o.done("setxattr", t, 0, st)
	return st
}

func (o *observed) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.RemoveXAttr(c, h, attr)
	o.done("removexattr", t, 0, st)
	return st
}

func (o *observed) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Create(c, in, name, out)
	o.done("create", t, 0, st)
	return st
}

func (o *observed) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Tmpfile(c, in, out)
	o.done("tmpfile", t, 0, st)
	return st
}

func (o *observed) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Open(c, in, out)
	o.done("open", t, 0, st)
	return st
}

func (o *observed) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := o.begin()
	r, st := o.RawFileSystem.Read(c, in, buf)
	n := 0
	if st == fuse.OK && r != nil {
		n = r.Size()
	}
	o.done("read", t, n, st)
	return r, st
}

func (o *observed) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Lseek(c, in, out)
	o.done("lseek", t, 0, st)
	return st
}

func (o *observed) GetLk(c <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.GetLk(c, in, out)
	o.done("getlk", t, 0, st)
	return st
}

func (o *observed) SetLk(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.SetLk(c, in)
	o.done("setlk", t, 0, st)
	return st
}

func (o *observed) SetLkw(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.SetLkw(c, in)
	o.done("setlkw", t, 0, st)
	return st
}

func (o *observed) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	t := o.begin()
	o.RawFileSystem.Release(c, in)
	o.done("release", t, 0, fuse.OK)
}

func (o *observed) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := o.begin()
	n, st := o.RawFileSystem.Write(c, in, data)
	o.done("write", t, int(n), st)
	return n, st
}

// Writev answers ENOSYS unless the fsys implements it; go-fuse then calls Write, which counts.
func (o *observed) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := o.begin()
	n, st := o.RawFileSystem.Writev(c, in, data)
	if st == fuse.ENOSYS { // go-fuse falls back to Write, which is observed itself
		if o.gate != nil {
			o.gate.exit()
		}
		return n, st
	}
	o.done("write", t, int(n), st)
	return n, st
}

func (o *observed) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := o.begin()
	n, st := o.RawFileSystem.CopyFileRange(c, in)
	o.done("copy_file_range", t, int(n), st)
	return n, st
}

func (o *observed) Ioctl(c <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Ioctl(c, in, inbuf, out, outbuf)
	o.done("ioctl", t, 0, st)
	return st
}

func (o *observed) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Flush(c, in)
	o.done("flush", t, 0, st)
	return st
}

func (o *observed) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Fsync(c, in)
	o.done("fsync", t, 0, st)
	return st
}

func (o *observed) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Fallocate(c, in)
	o.done("fallocate", t, 0, st)
	return st
}

func (o *observed) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.OpenDir(c, in, out)
	o.done("opendir", t, 0, st)
	return st
}

func (o *observed) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.ReadDir(c, in, out)
	o.done("readdir", t, 0, st)
	return st
}

func (o *observed) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.ReadDirPlus(c, in, out)
	o.done("readdirplus", t, 0, st)
	return st
}

func (o *observed) ReleaseDir(in *fuse.ReleaseIn) {
	t := o.begin()
	o.RawFileSystem.ReleaseDir(in)
	o.done("releasedir", t, 0, fuse.OK)
}

func (o *observed) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.FsyncDir(c, in)
	o.done("fsyncdir", t, 0, st)
	return st
}

func (o *observed) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.StatFs(c, h, out)
	o.done("statfs", t, 0, st)
	return st
}

func (o *observed) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t := o.begin()
	st := o.RawFileSystem.Statx(c, in, out)
	o.done("statx", t, 0, st)
	return st
}
