package fs

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Node ids: the low 48 bits are the backend inode, the high 16 bits the view slot.
// Slot 0 is the mounted view, slots 1..0xFFFE are snapshots opened under .snapshots,
// and slot 0xFFFF holds the .snapshots directory itself.
const (
	slotShift   = 48
	inoMask     = 1<<slotShift - 1
	snapDirSlot = 0xFFFF
	snapDirID   = uint64(snapDirSlot)<<slotShift | 1
	snapDirName = ".snapshots"
)

// Kernel cache lifetimes. Every change to a live volume passes through this mount, so the
// kernel's caches stay coherent and long timeouts are safe; snapshots never change.
const (
	liveTimeout     = 30 * time.Second
	negativeTimeout = 10 * time.Second
	snapTimeout     = time.Hour
	snapListTimeout = time.Second
)

// fsys implements fuse.RawFileSystem over a Volume.
type fsys struct {
	fuse.RawFileSystem

	ctx     context.Context // lives as long as the mount; requests are not cancelled by interrupts
	log     *slog.Logger
	vol     Volume
	ro      bool
	atime   atomic.Int32 // an Atime: when reads update atime
	snapDir bool         // expose .snapshots in the root
	cs      int

	snaps      snapshotter // nil: no .snapshots
	snapMu     sync.RWMutex
	slots      []*snapSlot // slot k is slots[k-1]
	snapByName map[string]*snapSlot

	nodesMu sync.Mutex
	nodes   map[uint64]*nodeRef

	handlesMu sync.Mutex
	handles   map[uint64]any // *fileHandle or *dirHandle
	nextFh    uint64

	// A mount resumed from a predecessor process (resume.go) serves handles and kernel
	// references it was not told of: epoch numbers its own handles apart, and orphans whose
	// references it cannot count wait for the unmount (see removed).
	resumed bool
	crashed bool // the predecessor did not Freeze: its buffered writes may be lost
	frozen  atomic.Bool
	epoch   uint16

	init      fuse.InitIn // the kernel's INIT, kept for a successor
	maxWrite  int
	gate      *gate // nil unless restartable
	persistFn func(ResumeState, *os.File)
	dev       *os.File // the connection, for persistFn
	persistMu sync.Mutex

	wb     *writeback
	cache  *chunkCache
	noCaps sync.Map // node id -> struct{}: known to have no security.capability xattr
}

type snapSlot struct {
	slot    uint16
	name    string
	created time.Time
	vol     Volume
}

// nodeRef counts the kernel's references (lookups) and open handles of one node.
type nodeRef struct {
	lookups uint64
	opens   int
	orphan  bool // unlinked to nlink 0 while referenced: View.Forget when the last reference goes
	// uncounted: a resumed mount's node whose references the predecessor counted (resume.go)
	uncounted bool
}

func newFsys(ctx context.Context, vol Volume, opts Options) *fsys {
	f := &fsys{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		ctx:           ctx,
		log:           opts.Logger,
		vol:           vol,
		ro:            vol.ReadOnly(),
		cs:            vol.ChunkSize(),
		snapByName:    map[string]*snapSlot{},
		nodes:         map[uint64]*nodeRef{},
		handles:       map[uint64]any{},
		maxWrite:      opts.MaxWrite,
		persistFn:     opts.Persist,
	}
	f.atime.Store(int32(opts.Atime))
	if sn, ok := vol.(snapshotter); ok && !vol.ReadOnly() {
		f.snaps, f.snapDir = sn, true
	}
	f.cache = newChunkCache(opts.cache(), f.log)
	f.wb = newWriteback(ctx, f.log, f.cache, vol, f.cs, opts.writeBudget())
	f.wb.quota.awaitReclaims = f.awaitReclaims
	f.wb.observe = opts.Observe
	return f
}

func (f *fsys) String() string { return "fusevol" }

// view returns the volume and backend inode a node id refers to.
func (f *fsys) view(id uint64) (Volume, backend.Ino, uint16, syscall.Errno) {
	slot := uint16(id >> slotShift)
	ino := backend.Ino(id & inoMask)
	if slot == 0 {
		return f.vol, ino, 0, 0
	}
	if slot == snapDirSlot {
		return nil, 0, slot, syscall.EROFS
	}
	f.snapMu.RLock()
	defer f.snapMu.RUnlock()
	if int(slot) > len(f.slots) || f.slots[slot-1].vol == nil {
		return nil, 0, slot, syscall.ESTALE
	}
	return f.slots[slot-1].vol, ino, slot, 0
}

// writable is like view but refuses read-only views with EROFS.
func (f *fsys) writable(id uint64) (Volume, backend.Ino, uint16, syscall.Errno) {
	vol, ino, slot, en := f.view(id)
	if en == 0 && (slot != 0 || f.ro) {
		en = syscall.EROFS
	}
	return vol, ino, slot, en
}

func nodeID(slot uint16, ino backend.Ino) uint64 {
	return uint64(slot)<<slotShift | uint64(ino)
}

func timeouts(slot uint16) time.Duration {
	if slot == 0 {
		return liveTimeout
	}
	return snapTimeout
}

// fillAttr converts a backend attribute (with buffered writes applied) to FUSE's.
func (f *fsys) fillAttr(slot uint16, a backend.Attr, out *fuse.Attr) {
	f.wb.overlay(nodeID(slot, a.Ino), &a)
	*out = fuse.Attr{
		Ino:       nodeID(slot, a.Ino),
		Size:      a.Size,
		Blocks:    a.Blocks,
		Atime:     uint64(a.Atime / 1e9),
		Atimensec: uint32(a.Atime % 1e9),
		Mtime:     uint64(a.Mtime / 1e9),
		Mtimensec: uint32(a.Mtime % 1e9),
		Ctime:     uint64(a.Ctime / 1e9),
		Ctimensec: uint32(a.Ctime % 1e9),
		Mode:      a.Mode,
		Nlink:     a.Nlink,
		Owner:     fuse.Owner{Uid: a.UID, Gid: a.GID},
		Rdev:      a.Rdev,
		Blksize:   uint32(f.cs),
	}
}

// settled reads an inode's attributes from the store and applies buffered writes to them. A
// commit between the two steps would make the result stale (the store read before the
// commit, the buffers looked at after it), so the read is repeated until none came between.
func (f *fsys) settled(slot uint16, fetch func() (backend.Attr, error)) (backend.Attr, error) {
	for {
		seq := f.wb.seq.Load()
		a, err := fetch()
		if err != nil {
			return a, err
		}
		f.wb.overlay(nodeID(slot, a.Ino), &a)
		if f.wb.seq.Load() == seq {
			return a, nil
		}
	}
}

// entry fills a lookup reply and counts the kernel reference it creates.
func (f *fsys) entry(slot uint16, a backend.Attr, out *fuse.EntryOut) {
	id := nodeID(slot, a.Ino)
	out.NodeId = id
	out.Generation = a.Gen
	t := timeouts(slot)
	out.SetEntryTimeout(t)
	out.SetAttrTimeout(t)
	f.fillAttr(slot, a, &out.Attr)
	f.ref(id, 1, 0)
}

// ref adds kernel lookups and open handles to a node.
func (f *fsys) ref(id uint64, lookups uint64, opens int) {
	f.nodesMu.Lock()
	n := f.nodes[id]
	if n == nil {
		n = &nodeRef{uncounted: f.resumed}
		f.nodes[id] = n
	}
	n.lookups += lookups
	n.opens += opens
	f.nodesMu.Unlock()
}

// unref drops references; when none remain, an orphaned inode is reclaimed.
func (f *fsys) unref(id uint64, lookups uint64, opens int) {
	f.nodesMu.Lock()
	n := f.nodes[id]
	if n == nil {
		f.nodesMu.Unlock()
		return
	}
	n.lookups -= min(lookups, n.lookups)
	n.opens -= opens
	gone := n.lookups == 0 && n.opens <= 0
	if n.uncounted {
		// Lookups and opens a predecessor counted are unknown, but the kernel sends FORGET
		// only when it evicts the inode, after its last close: that, and only that, ends it.
		gone = lookups > 0
	}
	// A deleted file is reclaimed at its last release, even while the kernel still holds
	// lookups on it (see removed); only files are ever opened through here.
	orphan := n.orphan && (gone || (opens > 0 && n.opens <= 0 && !n.uncounted))
	if orphan {
		n.orphan = false
	}
	if gone {
		delete(f.nodes, id)
	}
	f.nodesMu.Unlock()
	if orphan {
		f.reclaim(id)
	}
}

// removed is called after an entry naming a (an inode of slot 0) was removed. If that was the
// inode's last link it becomes an orphan, reclaimed now or when the kernel lets it go. A file
// nobody has open is reclaimed at once, even while the kernel still holds lookups on it (it
// forgets them later, at its own pace): as on a local filesystem, deleting a file that no
// process has open frees its space now. Directories wait for the kernel, since a process can sit
// in a removed directory without opening it.
func (f *fsys) removed(a backend.Attr) {
	dir := a.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if !dir && a.Nlink > 1 {
		return
	}
	id := nodeID(0, a.Ino)
	f.nodesMu.Lock()
	n := f.nodes[id]
	if n == nil && f.resumed {
		// The kernel may hold it from before the restart, and a predecessor's handle may
		// have it open: reclaimed when the kernel forgets it, or at the unmount.
		n = &nodeRef{uncounted: true}
		f.nodes[id] = n
	}
	now := n == nil || (!dir && n.opens <= 0 && !n.uncounted)
	if n != nil && !now {
		n.orphan = true
	}
	f.nodesMu.Unlock()
	if now {
		f.reclaim(id)
	}
}

func (f *fsys) reclaim(id uint64) {
	f.wb.discard(id)
	f.cache.invalidate(id)
	f.noCaps.Delete(id)
	if err := f.vol.Forget(f.ctx, backend.Ino(id&inoMask)); err != nil && toErrno(err) != syscall.ENOENT {
		f.log.Warn("forget orphan", "ino", id, "err", err)
	}
}

// reclaimOrphans hands every still-referenced orphan to the backend when the mount goes away.
func (f *fsys) reclaimOrphans() {
	f.nodesMu.Lock()
	var ids []uint64
	for id, n := range f.nodes {
		if n.orphan {
			ids = append(ids, id)
		}
	}
	f.nodes = map[uint64]*nodeRef{}
	f.nodesMu.Unlock()
	for _, id := range ids {
		f.reclaim(id)
	}
}

func (f *fsys) Forget(nodeid, nlookup uint64) {
	f.unref(nodeid, nlookup, 0)
}

// awaitReclaims waits up to reclaimWait for deleted files that are still open to be released
// and reclaimed, and reports whether there were any. A close returns before the kernel sends its
// RELEASE, so right after "close; unlink" the space is not free yet.
func (f *fsys) awaitReclaims(ctx context.Context) bool {
	pending := func() bool {
		f.nodesMu.Lock()
		defer f.nodesMu.Unlock()
		for _, n := range f.nodes {
			if n.orphan && n.opens > 0 {
				return true
			}
		}
		return false
	}
	if !pending() {
		return false
	}
	deadline := time.Now().Add(reclaimWait)
	for pending() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

const reclaimWait = 500 * time.Millisecond
