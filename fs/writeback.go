package fs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fusevol/fusevol/backend"
)

// fileData is what the write-back needs of a file's view: its size and times, its stored
// chunks (merged under partial writes), and the two halves of a commit (PrepareChunk hashes
// and encodes off the file's lock, CommitChunks stores a batch). fileHandle holds one too,
// for reads.
type fileData interface {
	attrStore
	chunkReader
	PrepareChunk(index uint64, data []byte) backend.Chunk
	PrepareExtent(index uint64, off int, data []byte) backend.Chunk
	CommitChunks(ctx context.Context, ino backend.Ino, chunks []backend.Chunk, minSize uint64) (backend.Attr, error)
	// CommitLoggedChunks commits chunks holding only data that is stored or in the intent log.
	CommitLoggedChunks(ctx context.Context, ino backend.Ino, chunks []backend.Chunk, minSize uint64) (backend.Attr, error)
	// LogWrites makes buffered writes durable through the store's intent log (fsync).
	LogWrites(ctx context.Context, ino backend.Ino, size uint64, mtime int64, ws []backend.Write) (bool, error)
	// Settle applies the file's logged writes to the store (a commit of logged data failed).
	Settle(ctx context.Context, ino backend.Ino) (backend.Attr, error)
	// WriteAt stores a write at once (writes to a file whose commits fail).
	WriteAt(ctx context.Context, ino backend.Ino, data []byte, off int64) (backend.Attr, error)
}

var _ fileData = (*backend.View)(nil)

// chunkInvalidator forgets cached copies of a chunk whose stored content the write-back is
// about to change or has changed. *chunkCache implements it.
type chunkInvalidator interface {
	invalidateChunk(id, idx uint64)
}

var _ chunkInvalidator = (*chunkCache)(nil)

// writeback buffers written data per file in whole chunks. A chunk that a write fills
// completely is hashed at once by the hash workers and committed in the background; partial
// chunks wait for close or memory pressure. A partial chunk remembers the ranges written into it
// (up to maxSpans); when it is committed, ranges of up to a quarter of a chunk in all become
// extents in the store (backend PrepareExtent: no read of the stored chunk, no re-hash of the
// whole chunk), bigger ones are merged with the stored contents (loadBase) and committed as a
// whole chunk. A read of unwritten bytes of a buffered chunk, or a write that would make more
// ranges, merges the stored contents in too. Commits of one file happen in submission order;
// until one lands, reads see it through inflight (the stored chunk overlaid with every pending
// commit of the chunk, in order).
//
// fsync does not commit: it hands the ranges written since the file's last fsync to the store's
// intent log (one device flush) and keeps the buffers, which are committed later as usual. Once
// a file has logged writes, its full chunks are no longer committed eagerly either: a commit
// changes the inode in the store, and the next fsync would have to sync the whole store.
//
// A commit that fails (no room under the quota or on the store's disk, or any other error)
// loses the data it carried, which the writes were acknowledged for: the file records the
// ranges (lostData), and every later fsync and close of it fails with the commit's error until
// they are written again. Data an fsync put in the intent log is not lost that way: the store
// settles the log's records for the file instead (their room was granted when they were logged),
// and only if that fails too do they count as lost. From then until a commit of the file succeeds, the file is failing:
// each write is stored at once (writeThrough) instead of buffered, so that it fails, unacknowledged,
// while there is no room, and the first one that fits ends the failing state. Buffers count
// against the mount's share of a WriteBudget (budget.go), which the daemon shares between mounts.
type writeback struct {
	ctx   context.Context
	log   *slog.Logger
	cache chunkInvalidator
	quota *quotaEstimate // reserved by write; see quotaEstimate for why the write-back owns it
	cs    int
	share *budgetShare
	hashq chan *commitJob

	observe Observer // told of each commit (OpCommit); nil: none

	mu    sync.Mutex
	files map[uint64]*fileState

	bufs *sync.Pool // *[]byte chunk buffers, shared by the mounts of the budget
	// seq counts commits; attribute readers retry when one lands between their read of the
	// store and their look at the buffered state (see fsys.settled).
	seq atomic.Uint64
}

// fileState is the buffered state of one file, shared by its open handles.
type fileState struct {
	wb  *writeback
	id  uint64
	vol fileData
	ino backend.Ino

	mu     sync.Mutex
	cond   *sync.Cond // broadcast when a commit batch finishes
	opens  int
	size   uint64 // file size including buffered writes
	stored uint64 // file size in the store
	mtime  int64  // time of the last buffered write
	// stamp is set while the store's mtime/ctime (set to the commit time by CommitChunks)
	// differ from mtime, the time of the write, which a local filesystem would keep.
	// observed says whether the kernel was told the write time; only then is it worth a
	// transaction to put it into the store, for the times not to move at close or fsync.
	stamp, observed bool
	dirty           map[uint64]*chunkBuf
	inflight        map[uint64][]*commitJob // submitted, not yet committed commits per chunk, in order
	queue           []*commitJob
	committing      bool
	logged          bool // buffers hold writes the intent log made durable
	lost            lostData
	failing         error  // the last commit failed: writes go through (writeThrough)
	fails           uint64 // failed commits so far; lastErr is the latest one's error
	lastErr         error
	probe           sync.Mutex // one writeThrough at a time
}

// chunkBuf is one chunk being written. Until base is set only the written spans of data are
// meaningful. [llo, lhi) spans what was written since the last fsync logged the chunk (llo < 0:
// nothing).
type chunkBuf struct {
	data     []byte
	spans    []span // written ranges: sorted, disjoint, not touching (until base)
	end      int    // end of the highest byte written
	base     bool
	llo, lhi int
}

// span is a written range of a chunk buffer.
type span = interval[int]

// addSpan adds [lo, hi) to b's spans, merging those it overlaps or touches.
func (b *chunkBuf) addSpan(lo, hi int) { b.spans = addInterval(b.spans, lo, hi) }

// covers reports whether [lo, hi) is meaningful in b.
func (b *chunkBuf) covers(lo, hi int) bool {
	if b.base {
		return true
	}
	for _, s := range b.spans {
		if s.lo <= lo && hi <= s.hi {
			return true
		}
	}
	return false
}

// piece is part of a commit: a whole chunk (full) or an extent's data at off.
type piece struct {
	off  int
	data []byte
}

type commitJob struct {
	st     *fileState
	idx    uint64
	buf    []byte // the whole chunk buffer, back to the pool after the commit
	full   bool   // pieces[0] is the chunk's whole new content; else they are extents
	pieces []piece
	end    int // end of the content within the chunk
	done   chan struct{}
	chunks []backend.Chunk
	logged bool // the intent log holds every write in it: a failed commit settles the log instead
}

const (
	maxCommitBatch    = 64
	inlineFlushChunks = 2
	// maxSpans is how many separate ranges a buffered chunk keeps before merging the stored
	// contents in.
	maxSpans = 8
)

// prepare hashes (and encodes) the job's chunk, or checksums its extents.
func (j *commitJob) prepare() {
	j.chunks = make([]backend.Chunk, 0, len(j.pieces))
	for _, p := range j.pieces {
		if j.full {
			j.chunks = append(j.chunks, j.st.vol.PrepareChunk(j.idx, p.data))
		} else {
			j.chunks = append(j.chunks, j.st.vol.PrepareExtent(j.idx, p.off, p.data))
		}
	}
}

// newWriteback buffers chunks of cs bytes within a share of budget until ctx (the mount's) ends.
// It reports failed commits to log, tells cache about changed chunks, and checks writes that
// grow files against the quota of quota.
func newWriteback(ctx context.Context, log *slog.Logger, cache chunkInvalidator, quota quotaSource, cs int, budget *WriteBudget) *writeback {
	wb := &writeback{ctx: ctx, log: log, cache: cache, cs: cs, files: map[uint64]*fileState{}}
	wb.quota = newQuotaEstimate(ctx, quota, wb.flushAll)
	wb.share = budget.share(int64(cs), wb.kick)
	context.AfterFunc(ctx, wb.share.close)
	wb.bufs = budget.pool(cs)
	// Every job holds a chunk of the budget, so this many never block a submitter.
	wb.hashq = make(chan *commitJob, int(max(budget.limit, wb.share.floor)/int64(max(wb.cs, 1)))+64)
	for range runtime.GOMAXPROCS(0) {
		go wb.hashWorker()
	}
	return wb
}

func (wb *writeback) hashWorker() {
	for {
		select {
		case <-wb.ctx.Done():
			return
		case j := <-wb.hashq:
			j.prepare()
			close(j.done)
		}
	}
}

// acquire takes a chunk buffer's worth of the budget, pushing buffered data to the store and
// waiting while the mount is over its share.
func (wb *writeback) acquire() { wb.share.acquire(int64(wb.cs)) }

// release gives back n chunk buffers.
func (wb *writeback) release(n int) { wb.share.release(int64(n) * int64(wb.cs)) }

// kick submits every file's partial chunks so that their memory can be freed.
func (wb *writeback) kick() {
	for _, st := range wb.all() {
		st.mu.Lock()
		st.submitAll(false)
		st.mu.Unlock()
	}
}

func (wb *writeback) all() []*fileState {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	out := make([]*fileState, 0, len(wb.files))
	for _, st := range wb.files {
		out = append(out, st)
	}
	return out
}

func (wb *writeback) get(id uint64) *fileState {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	return wb.files[id]
}

// state returns the file's state, creating it (and counting an open when opening) if needed.
func (wb *writeback) state(id uint64, vol fileData, ino backend.Ino, opening bool) (*fileState, error) {
	wb.mu.Lock()
	st := wb.files[id]
	if st != nil {
		if opening {
			st.mu.Lock()
			st.opens++
			st.mu.Unlock()
		}
		wb.mu.Unlock()
		return st, nil
	}
	wb.mu.Unlock()
	a, err := vol.GetAttr(wb.ctx, ino)
	if err != nil {
		return nil, err
	}
	wb.mu.Lock()
	defer wb.mu.Unlock()
	if st = wb.files[id]; st == nil {
		st = &fileState{wb: wb, id: id, vol: vol, ino: ino, size: a.Size, stored: a.Size,
			dirty: map[uint64]*chunkBuf{}, inflight: map[uint64][]*commitJob{}}
		st.cond = sync.NewCond(&st.mu)
		wb.files[id] = st
	}
	if opening {
		st.mu.Lock()
		st.opens++
		st.mu.Unlock()
	}
	return st, nil
}

// closeFile drops an open of the file, and the state when nothing is left in it.
func (wb *writeback) closeFile(id uint64) {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	st := wb.files[id]
	if st == nil {
		return
	}
	st.mu.Lock()
	st.opens--
	if st.idle() {
		delete(wb.files, id)
	}
	st.mu.Unlock()
}

// idle reports (under st.mu) that the state holds nothing and nobody has the file open.
func (st *fileState) idle() bool {
	return st.opens <= 0 && !st.active() && !st.lost.any() && !st.stamp
}

func (st *fileState) active() bool {
	return len(st.dirty) > 0 || len(st.queue) > 0 || st.committing
}

// overlay applies buffered writes to attributes read from the store.
func (wb *writeback) overlay(id uint64, a *backend.Attr) {
	st := wb.get(id)
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stamp {
		a.Mtime, a.Ctime = st.mtime, st.mtime
		st.observed = true
	}
	if !st.active() {
		return
	}
	a.Size = st.size
	a.Blocks = max(a.Blocks, (st.size+511)/512)
}

// sizeChanged records a size set in the store by truncate or fallocate. Data written since
// (the callers flush first) still counts.
func (wb *writeback) sizeChanged(id uint64, size uint64) {
	if st := wb.get(id); st != nil {
		st.mu.Lock()
		st.stored = size
		st.resize()
		st.lost.truncate(size)
		st.mu.Unlock()
	}
}

// write buffers data at off. It returns the number of bytes accepted.
func (wb *writeback) write(id uint64, vol fileData, ino backend.Ino, data []byte, off int64) (int, error) {
	st, err := wb.state(id, vol, ino, false)
	if err != nil {
		return 0, err
	}
	st.mu.Lock()
	size := int64(st.size)
	failing := st.failing != nil
	st.mu.Unlock()
	if end := off + int64(len(data)); end > size {
		allowed, err := wb.quota.reserve(end - max(off, size))
		if err != nil {
			return 0, err
		}
		data = data[:int64(len(data))-(end-max(off, size)-allowed)]
	}
	if failing {
		return st.writeThrough(data, off)
	}
	cs := int64(wb.cs)
	done := 0
	for done < len(data) {
		pos := off + int64(done)
		idx, within := uint64(pos/cs), int(pos%cs)
		n := min(int(cs)-within, len(data)-done)
		if err := st.put(idx, within, data[done:done+n]); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// put copies p into chunk idx at offset within.
func (st *fileState) put(idx uint64, within int, p []byte) error {
	wb := st.wb
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.dirty[idx]
	if b == nil {
		st.mu.Unlock()
		wb.acquire()
		st.mu.Lock()
		if b = st.dirty[idx]; b != nil {
			wb.release(1)
		} else {
			b = &chunkBuf{data: *wb.bufs.Get().(*[]byte), llo: -1}
			st.dirty[idx] = b
			wb.cache.invalidateChunk(st.id, idx)
		}
	}
	end := within + len(p)
	if !b.base {
		b.addSpan(within, end)
		if len(b.spans) > maxSpans {
			if err := st.loadBase(idx, b); err != nil {
				return err
			}
		}
	}
	copy(b.data[within:], p)
	start := idx * uint64(wb.cs)
	st.lost.remove(start+uint64(within), start+uint64(end))
	if b.llo < 0 {
		b.llo, b.lhi = within, end
	} else {
		b.llo, b.lhi = min(b.llo, within), max(b.lhi, end)
	}
	b.end = max(b.end, end)
	st.size = max(st.size, idx*uint64(wb.cs)+uint64(end))
	st.mtime = time.Now().UnixNano()
	st.stamp = true
	if !b.base && b.covers(0, wb.cs) && !st.logged {
		st.submit(idx, b, false)
	}
	return nil
}

// current fills buf (a chunk buffer) with the chunk's content as the store will hold it once the
// pending commits land (under st.mu): the newest whole-chunk commit, or else the stored chunk,
// overlaid with the extents submitted after it. A commit landing meanwhile changes nothing: the
// overlay is applied again on top. Returns the content's length.
func (st *fileState) current(idx uint64, buf []byte) (int, error) {
	jobs := st.inflight[idx]
	length := 0
	full := -1
	for i := len(jobs) - 1; i >= 0 && full < 0; i-- {
		if jobs[i].full {
			full = i
		}
	}
	if full >= 0 {
		length = copy(buf, jobs[full].pieces[0].data)
		jobs = jobs[full+1:]
	} else if start := idx * uint64(st.wb.cs); start < st.stored {
		n, err := st.vol.ReadChunk(st.wb.ctx, st.ino, idx, buf)
		if err != nil {
			return 0, err
		}
		length = int(min(uint64(n), st.stored-start))
	}
	clear(buf[length:])
	for _, j := range jobs {
		for _, p := range j.pieces {
			copy(buf[p.off:], p.data)
			length = max(length, p.off+len(p.data))
		}
	}
	return length, nil
}

// loadBase merges the chunk's current content under the buffered bytes.
func (st *fileState) loadBase(idx uint64, b *chunkBuf) error {
	cs := st.wb.cs
	bp := st.wb.bufs.Get().(*[]byte)
	defer st.wb.bufs.Put(bp)
	n, err := st.current(idx, *bp)
	if err != nil {
		return err
	}
	base := (*bp)[:n]
	fill := func(from, to int) {
		if from >= to {
			return
		}
		n := 0
		if from < len(base) {
			n = copy(b.data[from:to], base[from:min(to, len(base))])
		}
		clear(b.data[from+n : to])
	}
	from := 0
	for _, s := range b.spans {
		fill(from, s.lo)
		from = s.hi
	}
	fill(from, cs)
	b.base, b.spans = true, nil
	return nil
}

// submit hands a chunk to the hash workers and the file's committer (under st.mu). An inline
// submit hashes in the caller and leaves starting the committer to it.
func (st *fileState) submit(idx uint64, b *chunkBuf, inline bool) {
	cs := uint64(st.wb.cs)
	length := int(min(cs, st.size-min(st.size, idx*cs)))
	var extents []piece
	if !b.base && !b.covers(0, length) {
		total := 0
		for _, s := range b.spans {
			if hi := min(s.hi, length); s.lo < hi {
				extents = append(extents, piece{s.lo, b.data[s.lo:hi]})
				total += hi - s.lo
			}
		}
		if total > int(cs)/4 {
			extents = nil
		} else if len(extents) == 0 { // all past the end: nothing to commit
			delete(st.dirty, idx)
			st.wb.bufs.Put(&b.data)
			st.wb.release(1)
			return
		}
	}
	if extents == nil && !b.base && !b.covers(0, length) {
		if err := st.loadBase(idx, b); err != nil {
			st.fail(err)
			if b.llo >= 0 || !st.logged {
				for _, s := range b.spans {
					st.lost.add(idx*cs+uint64(s.lo), idx*cs+uint64(min(s.hi, length)), err)
				}
			}
			delete(st.dirty, idx)
			st.wb.bufs.Put(&b.data)
			st.wb.release(1)
			return
		}
	}
	delete(st.dirty, idx)
	j := &commitJob{st: st, idx: idx, buf: b.data, done: make(chan struct{}), logged: b.llo < 0 && st.logged}
	if extents != nil {
		j.pieces = extents
		last := extents[len(extents)-1]
		j.end = last.off + len(last.data)
	} else {
		j.full, j.pieces, j.end = true, []piece{{0, b.data[:length]}}, length
	}
	st.inflight[idx] = append(st.inflight[idx], j)
	st.queue = append(st.queue, j)
	if inline {
		j.prepare()
		close(j.done)
		return
	}
	st.wb.hashq <- j
	if !st.committing {
		st.committing = true
		go st.commitLoop()
	}
}

// submitAll submits every dirty chunk, lowest index first (under st.mu).
func (st *fileState) submitAll(inline bool) {
	idxs := make([]uint64, 0, len(st.dirty))
	for idx := range st.dirty {
		idxs = append(idxs, idx)
	}
	slices.Sort(idxs)
	for _, idx := range idxs {
		st.submit(idx, st.dirty[idx], inline)
	}
}

// fail records a failed commit (under st.mu).
func (st *fileState) fail(err error) {
	st.fails++
	st.lastErr, st.failing = err, err
	st.wb.log.Warn("write-back failed", "ino", st.ino, "err", err)
}

// lose records the data of a failed commit as lost (under st.mu). Logged data the store could not
// settle either counts too: the intent log will bring it back at the next open, but until then
// reads would find older bytes, so fsync and close must not report success. A whole-chunk commit
// counts whole: which of its bytes were written is no longer known.
func (st *fileState) lose(j *commitJob, err error) {
	start := j.idx * uint64(st.wb.cs)
	if j.full {
		st.lost.add(start, start+uint64(j.end), err)
		return
	}
	for _, p := range j.pieces {
		st.lost.add(start+uint64(p.off), start+uint64(p.off+len(p.data)), err)
	}
}

// commitLoop commits queued chunks in order, batching those already hashed.
func (st *fileState) commitLoop() {
	for {
		st.mu.Lock()
		if len(st.queue) == 0 {
			st.committing = false
			st.cond.Broadcast()
			st.mu.Unlock()
			st.wb.dropIfIdle(st)
			return
		}
		jobs := slices.Clone(st.queue[:min(len(st.queue), maxCommitBatch)])
		st.mu.Unlock()

		<-jobs[0].done
		k := 1
		for k < len(jobs) && isDone(jobs[k].done) {
			k++
		}
		var chunks []backend.Chunk
		var end uint64 // all-zero chunks do not extend a file by themselves
		for _, j := range jobs[:k] {
			chunks = append(chunks, j.chunks...)
			end = max(end, j.idx*uint64(st.wb.cs)+uint64(j.end))
		}
		commit := st.vol.CommitChunks
		if !slices.ContainsFunc(jobs[:k], func(j *commitJob) bool { return !j.logged }) {
			commit = st.vol.CommitLoggedChunks // the next fsync need not sync the store for it
		}
		start := time.Now()
		a, err := commit(st.wb.ctx, st.ino, chunks, end)
		st.wb.observeCommit(start, jobs[:k], err)
		settled := false
		if err != nil && slices.ContainsFunc(jobs[:k], func(j *commitJob) bool { return j.logged }) {
			// The intent log has those jobs' data (fsync said so): settling it needs no room the
			// commit lacked, and reads find it in the store instead of the buffers dropped below.
			sa, serr := st.vol.Settle(st.wb.ctx, st.ino)
			if settled = serr == nil; settled {
				a = sa
				if !slices.ContainsFunc(jobs[:k], func(j *commitJob) bool { return !j.logged }) {
					err = nil // nothing was lost
				}
			} else {
				err = errors.Join(err, fmt.Errorf("settle logged writes: %w", serr))
			}
		}

		st.mu.Lock()
		st.wb.seq.Add(1)
		st.queue = st.queue[k:]
		for _, j := range jobs[:k] {
			if js := slices.DeleteFunc(st.inflight[j.idx], func(x *commitJob) bool { return x == j }); len(js) > 0 {
				st.inflight[j.idx] = js
			} else {
				delete(st.inflight, j.idx)
			}
			st.wb.cache.invalidateChunk(st.id, j.idx)
		}
		if err != nil {
			st.fail(err)
			for _, j := range jobs[:k] {
				if !j.logged || !settled {
					st.lose(j, err)
				}
			}
			if settled {
				st.stored = a.Size
			}
			st.resize()
		} else {
			st.stored, st.failing = a.Size, nil
		}
		st.cond.Broadcast()
		st.mu.Unlock()
		for _, j := range jobs[:k] {
			st.wb.bufs.Put(&j.buf)
		}
		st.wb.release(k)
	}
}

// resize recomputes the size from the store's and the buffered data (under st.mu).
func (st *fileState) resize() {
	cs := uint64(st.wb.cs)
	size := st.stored
	for idx, b := range st.dirty {
		size = max(size, idx*cs+uint64(b.end))
	}
	for _, j := range st.queue {
		size = max(size, j.idx*cs+uint64(j.end))
	}
	st.size = size
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (wb *writeback) dropIfIdle(st *fileState) {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.idle() && wb.files[st.id] == st {
		delete(wb.files, st.id)
	}
}

// flush commits everything buffered for the file and returns the error of a commit of it that
// failed meanwhile (data lost before is reported by report, not here: truncation, snapshots and
// unmounts must not fail for it forever). When ctx ends first, the commits go on without the
// caller.
func (wb *writeback) flush(ctx context.Context, id uint64) error {
	st := wb.get(id)
	if st == nil {
		return nil
	}
	st.mu.Lock()
	fails := st.fails
	// A close after a few small writes (the common case) is committed by the caller itself:
	// two goroutine hand-offs are a good part of the latency of such a commit.
	inline := len(st.dirty) <= inlineFlushChunks && !st.committing
	st.submitAll(inline)
	if inline && len(st.queue) > 0 {
		st.committing = true
		st.mu.Unlock()
		st.commitLoop()
		st.mu.Lock()
	}
	if err := st.wait(ctx, "flush"); err != nil {
		st.mu.Unlock()
		return err
	}
	var err error
	if st.fails != fails {
		err = st.lastErr
	}
	if err == nil && st.stamp && st.observed {
		err = st.restamp()
	}
	if err == nil && !st.active() {
		st.stamp, st.observed, st.logged = false, false, false
	}
	st.mu.Unlock()
	wb.dropIfIdle(st)
	return err
}

// report is flush for a close of the file: it fails too while the file has lost data.
func (wb *writeback) report(ctx context.Context, id uint64) error {
	if err := wb.flush(ctx, id); err != nil {
		return err
	}
	if st := wb.get(id); st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.lostErr()
	}
	return nil
}

// lostErr (under st.mu) is the error for fsync and close of a file that lost data.
func (st *fileState) lostErr() error {
	if !st.lost.any() {
		return nil
	}
	return fmt.Errorf("inode %d: %d range(s) of written data could not be stored: %w", st.ino, len(st.lost.ranges), st.lost.err)
}

// writeThrough stores a write to a failing file at once: while there is no room it fails
// without being acknowledged (no more data is lost), and the first one that fits ends the
// failing state. The file's buffered data is committed first, for the write to land on top.
func (st *fileState) writeThrough(data []byte, off int64) (int, error) {
	st.probe.Lock()
	defer st.probe.Unlock()
	st.mu.Lock()
	st.submitAll(false)
	err := st.wait(st.wb.ctx, "write")
	st.mu.Unlock()
	if err != nil {
		return 0, err
	}
	st.invalidate(off, len(data))
	a, err := st.vol.WriteAt(st.wb.ctx, st.ino, data, off)
	st.invalidate(off, len(data))
	if err != nil {
		return 0, fmt.Errorf("write inode %d: %w", st.ino, err)
	}
	st.mu.Lock()
	st.wb.seq.Add(1)
	st.failing = nil
	st.stored = a.Size
	st.size = max(st.size, a.Size)
	st.mtime = a.Mtime
	st.lost.remove(uint64(off), uint64(off)+uint64(len(data)))
	st.mu.Unlock()
	return len(data), nil
}

// invalidate forgets cached copies of the chunks that n bytes at off touch.
func (st *fileState) invalidate(off int64, n int) {
	cs := int64(st.wb.cs)
	for idx := off / cs; idx*cs < off+int64(n); idx++ {
		st.wb.cache.invalidateChunk(st.id, uint64(idx))
	}
}

// restamp sets the store's mtime and ctime back to the time of the last write (under st.mu,
// with nothing left to commit).
func (st *fileState) restamp() error {
	t := st.mtime
	in := backend.SetAttr{Valid: backend.SetMtime | backend.SetCtime, Mtime: t, Ctime: t}
	if _, err := st.vol.SetAttr(st.wb.ctx, st.ino, in); err != nil {
		return err
	}
	st.wb.seq.Add(1)
	st.stamp, st.observed = false, false
	return nil
}

// flushAll commits every file's buffered data.
func (wb *writeback) flushAll(ctx context.Context) error {
	var errs []error
	for _, st := range wb.all() {
		if err := wb.flush(ctx, st.id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// discard drops the buffered data of a file that is being reclaimed.
func (wb *writeback) discard(id uint64) {
	st := wb.get(id)
	if st == nil {
		return
	}
	st.mu.Lock()
	for len(st.queue) > 0 || st.committing {
		st.cond.Wait()
	}
	n := len(st.dirty)
	st.dirty = map[uint64]*chunkBuf{}
	st.stamp, st.observed = false, false
	st.lost, st.failing = lostData{}, nil
	st.mu.Unlock()
	wb.release(n)
	wb.dropIfIdle(st)
}

// readBuffered copies buffered content of chunk idx at within into p, reporting false when
// the chunk has nothing buffered.
func (wb *writeback) readBuffered(st *fileState, idx uint64, within int, p []byte) (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if b := st.dirty[idx]; b != nil {
		if !b.covers(within, within+len(p)) {
			if err := st.loadBase(idx, b); err != nil {
				return true, err
			}
		}
		copy(p, b.data[within:])
		return true, nil
	}
	jobs := st.inflight[idx]
	if len(jobs) == 0 {
		return false, nil
	}
	if j := jobs[len(jobs)-1]; j.full {
		copyChunk(p, j.pieces[0].data, within)
		return true, nil
	}
	bp := st.wb.bufs.Get().(*[]byte)
	defer st.wb.bufs.Put(bp)
	n, err := st.current(idx, *bp)
	if err != nil {
		return true, err
	}
	copyChunk(p, (*bp)[:n], within)
	return true, nil
}

// copyChunk copies stored chunk content from offset within into p; bytes past the
// stored content are zeros.
func copyChunk(p, data []byte, within int) {
	n := 0
	if within < len(data) {
		n = copy(p, data[within:])
	}
	clear(p[n:])
}

// fsync makes the file's data durable: the writes buffered since its last fsync go to the
// store's intent log, or, when the log cannot take them, are committed and the store synced.
func (wb *writeback) fsync(ctx context.Context, id uint64, vol fileData, ino backend.Ino, sync func(context.Context) error) error {
	st := wb.get(id)
	if st == nil {
		_, err := vol.LogWrites(ctx, ino, 0, 0, nil) // nothing buffered: make the stored file durable
		return err
	}
	st.mu.Lock()
	err := st.wait(ctx, "fsync")
	if err == nil {
		err = st.lostErr()
	}
	if err != nil {
		st.mu.Unlock()
		return err
	}
	ws := st.unlogged()
	logged, err := st.vol.LogWrites(ctx, st.ino, st.size, st.mtime, ws)
	if err == nil && logged {
		for _, b := range st.dirty {
			b.llo = -1
		}
		st.logged = st.logged || len(ws) > 0
	}
	st.mu.Unlock()
	if err != nil || logged {
		return err
	}
	if err := wb.report(ctx, id); err != nil {
		return err
	}
	return sync(ctx)
}

// wait waits (under st.mu) until the file's running commits are done; when ctx ends first, the
// commits go on without the caller.
func (st *fileState) wait(ctx context.Context, op string) error {
	stop := context.AfterFunc(ctx, func() {
		st.mu.Lock()
		st.cond.Broadcast()
		st.mu.Unlock()
	})
	defer stop()
	for (len(st.queue) > 0 || st.committing) && ctx.Err() == nil {
		st.cond.Wait()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s inode %d: %w", op, st.ino, err)
	}
	return nil
}

// unlogged returns (under st.mu) the ranges written since the last logged fsync, in file order.
func (st *fileState) unlogged() []backend.Write {
	cs := uint64(st.wb.cs)
	var ws []backend.Write
	for idx, b := range st.dirty {
		if b.llo < 0 {
			continue
		}
		hi := int(min(uint64(b.lhi), st.size-min(st.size, idx*cs)))
		add := func(lo, hi int) {
			if lo < hi {
				ws = append(ws, backend.Write{Off: idx*cs + uint64(lo), Data: b.data[lo:hi]})
			}
		}
		if b.base {
			add(b.llo, hi)
			continue
		}
		for _, s := range b.spans { // the bytes between spans are not the file's
			add(max(s.lo, b.llo), min(s.hi, hi))
		}
	}
	slices.SortFunc(ws, func(a, b backend.Write) int { return cmp.Compare(a.Off, b.Off) })
	return ws
}
