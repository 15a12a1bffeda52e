package fs

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/fusevol/fusevol/backend"
)

// chunkReader reads a chunk as stored (cache.go fills; writeback.go merges partial chunks).
type chunkReader interface {
	ReadChunk(ctx context.Context, ino backend.Ino, index uint64, dst []byte) (int, error)
}

var _ chunkReader = (*backend.View)(nil)

// partReader reads a verified span of a chunk. A mount whose reader has it (a backend.View does)
// serves small reads of chunks not in the cache by verifying only backend.GroupSize spans of
// them, not the whole chunk; the cache looks for it on the chunkReader it is given.
type partReader interface {
	ReadChunkPart(ctx context.Context, ino backend.Ino, index uint64, off int, dst []byte) (bool, error)
}

var _ partReader = (*backend.View)(nil)

// spanSize is the unit of partial caching: one group of a chunk's BLAKE3 tree.
const spanSize = backend.GroupSize

// maxReadSpans is the most spans a read may touch to be served by spans: one span costs a store
// transaction, so a bigger read is cheaper verifying the whole chunk once.
const maxReadSpans = 2

// maxChunkSpans is how many spans of one chunk the cache holds before a read that needs one more
// loads the whole chunk: reads that keep coming back to a chunk cost at most about the four span
// loads (a transaction and 16 KiB of hashing each) more than loading it whole at once would have.
const maxChunkSpans = 4

// errWholeChunk is a span load's answer when the chunk can only be verified whole.
var errWholeChunk = errors.New("chunk verifies only whole")

// DefaultCacheBytes is the chunk-cache budget of a Cache made with NewCache(0). The kernel's
// page cache keeps what is read through a mount; this cache serves reads that bypass it (O_DIRECT,
// partial pages of a chunk read before) and read-ahead, so a moderate budget is enough, and it
// keeps the daemon within its soft memory limit next to the write buffers.
const DefaultCacheBytes = 128 << 20

// entryOverhead is what an entry costs besides its data (entry, list element, map slots), so
// that cached holes, which hold no data, still count.
const entryOverhead = 256

// Cache is a budget of chunk bytes shared by every mount given it (Options.Cache): one daemon
// caps its chunk cache as a whole, whatever number of volumes it mounts.
//
// Invariants (under mu, which also guards every mount's chunkCache):
//   - used is the sum of the mounts' used bytes and exceeds max only by the chunk just added.
//   - Above the budget, the mount holding the most bytes gives up its least recently used chunk
//     (the mount adding one on a tie): a busy mount takes what others leave unused, but cannot
//     push a mount that reads too below an equal share of the budget.
//   - A cached chunk's bytes are verified (backend.View.ReadChunk checks the chunk's hash) and
//     never change; its buffer goes back to the pool only once it is out of the cache and no
//     reader is copying from it.
//   - An entry is a whole chunk or one span of one (cacheKey.span): a small read of a chunk that
//     is neither cached nor loading whole loads and verifies only the spans it touches
//     (ReadChunkPart), each an entry of its own under the same budget; a whole chunk, once
//     cached, replaces its spans. Invalidating a chunk drops its spans with it.
type Cache struct {
	mu     sync.Mutex
	max    int64
	used   int64
	mounts map[*chunkCache]struct{}
	pools  sync.Map // chunk size -> *sync.Pool of *[]byte of that length

	hits, misses uint64 // entries found (or being loaded) and loads from the store, under mu
}

// CacheStats is a Cache's counters since it was made (for metrics).
type CacheStats struct {
	Hits   uint64 // lookups served from the cache or from a load already under way
	Misses uint64 // loads of a chunk or span from the store (read-ahead included)
	Bytes  int64  // held now
	Max    int64  // the budget
}

// Stats returns the cache's counters.
func (s *Cache) Stats() CacheStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return CacheStats{Hits: s.hits, Misses: s.misses, Bytes: s.used, Max: s.max}
}

// NewCache makes a cache of max bytes (0 = DefaultCacheBytes).
func NewCache(max int64) *Cache {
	if max <= 0 {
		max = DefaultCacheBytes
	}
	return &Cache{max: max, mounts: map[*chunkCache]struct{}{}}
}

// buffer returns a chunk buffer of cs bytes, not zeroed: ReadChunk writes all of it.
func (s *Cache) buffer(cs int) []byte {
	p, ok := s.pools.Load(cs)
	if !ok {
		p, _ = s.pools.LoadOrStore(cs, &sync.Pool{New: func() any { b := make([]byte, cs); return &b }})
	}
	return *p.(*sync.Pool).Get().(*[]byte)
}

func (s *Cache) recycle(buf []byte) {
	if buf == nil {
		return
	}
	if p, ok := s.pools.Load(len(buf)); ok {
		p.(*sync.Pool).Put(&buf)
	}
}

// evict brings used back within the budget, never evicting the chunk keep just added.
func (s *Cache) evict(keep *chunkCache) {
	for s.used > s.max {
		v := keep
		for m := range s.mounts {
			if m.used > v.used {
				v = m
			}
		}
		if v.lru.Len() == 0 || (v == keep && v.lru.Len() == 1) {
			return
		}
		v.remove(v.lru.Back())
	}
}

// chunkCache is one mount's part of a Cache: an LRU of chunk contents as stored (read path
// only). A fill that raced with an invalidation of the same file is dropped, using an
// invalidation epoch: a fill started at epoch E is kept only if the file was not invalidated
// after E. Every field is guarded by s.mu.
type chunkCache struct {
	s       *Cache
	log     *slog.Logger
	used    int64
	lru     *list.List // of *cacheEntry, most recent first
	items   map[entryKey]*list.Element
	byID    map[uint64]map[uint64]map[uint32]*list.Element // node id -> chunk -> span -> entry
	epoch   uint64
	inval   map[uint64]uint64 // node id -> epoch of its last invalidation
	loading map[entryKey]*loadCall
	pfq     chan prefetch
}

// cacheKey names a chunk of a file (of a node id).
type cacheKey struct{ id, idx uint64 }

// entryKey names an entry: a whole chunk (span 0) or span span-1 of it, bytes
// [(span-1)*spanSize, span*spanSize).
type entryKey struct {
	cacheKey
	span uint32
}

type cacheEntry struct {
	key    entryKey
	data   []byte
	buf    []byte // the pooled buffer data lies in; nil when data is a copy
	refs   int    // readers holding data (get until release)
	listed bool   // in the LRU
}

func (e *cacheEntry) size() int64 { return int64(cap(e.data)) + entryOverhead }

type loadCall struct {
	done    chan struct{}
	epoch   uint64
	waiters int // readers waiting for this load, each holding a reference to entry
	entry   *cacheEntry
	err     error
}

type prefetch struct {
	vol   chunkReader
	key   cacheKey
	ino   backend.Ino
	cs    int
	epoch uint64
}

func newChunkCache(s *Cache, log *slog.Logger) *chunkCache {
	c := &chunkCache{
		s:       s,
		log:     log,
		lru:     list.New(),
		items:   map[entryKey]*list.Element{},
		byID:    map[uint64]map[uint64]map[uint32]*list.Element{},
		inval:   map[uint64]uint64{},
		loading: map[entryKey]*loadCall{},
		pfq:     make(chan prefetch, 64),
	}
	s.mu.Lock()
	s.mounts[c] = struct{}{}
	s.mu.Unlock()
	return c
}

// close gives the mount's chunks back to the shared budget (at unmount).
func (c *chunkCache) close() {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
	delete(c.s.mounts, c)
}

// runPrefetch serves read-ahead requests until ctx ends.
func (c *chunkCache) runPrefetch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-c.pfq:
			if e, err := c.get(ctx, p.vol, p.key, p.ino, p.cs, p.epoch); err == nil {
				c.release(e)
			}
		}
	}
}

// now returns the epoch to pass to get; take it before checking for buffered data.
func (c *chunkCache) now() uint64 {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.epoch
}

// read copies the chunk's stored content from within onwards into p, zeros past its end.
func (c *chunkCache) read(ctx context.Context, vol chunkReader, key cacheKey, ino backend.Ino, cs int, epoch uint64, p []byte, within int) error {
	if pr, ok := vol.(partReader); ok && c.bySpans(key, cs, within, len(p)) {
		done, err := c.readSpans(ctx, pr, key, ino, epoch, p, within)
		if done || err != nil {
			return err
		}
	}
	e, err := c.get(ctx, vol, key, ino, cs, epoch)
	if err != nil {
		return err
	}
	copyChunk(p, e.data, within)
	c.release(e)
	return nil
}

// bySpans tells whether a read of n bytes at within of a chunk is served by spans: it touches few
// of them, the chunk is neither cached nor loading whole (a sequential reader's read-ahead), and
// the spans it needs are cached or the chunk has fewer than maxChunkSpans of them.
func (c *chunkCache) bySpans(key cacheKey, cs, within, n int) bool {
	first, last := within/spanSize, (within+n-1)/spanSize
	if n == 0 || cs <= spanSize || last-first >= maxReadSpans {
		return false
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	whole := entryKey{cacheKey: key}
	if c.items[whole] != nil || c.loading[whole] != nil {
		return false
	}
	spans := c.byID[key.id][key.idx]
	if len(spans) < maxChunkSpans {
		return true
	}
	for s := first; s <= last; s++ {
		if spans[uint32(s)+1] == nil {
			return false
		}
	}
	return true
}

// readSpans copies [within, within+len(p)) of a chunk from its spans, loading the missing ones.
// done is false when the chunk verifies only whole: the caller reads it whole.
func (c *chunkCache) readSpans(ctx context.Context, pr partReader, key cacheKey, ino backend.Ino, epoch uint64, p []byte, within int) (done bool, err error) {
	for s := within / spanSize; s*spanSize < within+len(p); s++ {
		sk := entryKey{key, uint32(s) + 1}
		e, err := c.getWith(sk, epoch, func() (*cacheEntry, error) { return c.loadSpan(ctx, pr, sk, ino) })
		if errors.Is(err, errWholeChunk) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		lo, hi := max(within, s*spanSize), min(within+len(p), (s+1)*spanSize)
		copy(p[lo-within:hi-within], e.data[lo-s*spanSize:])
		c.release(e)
	}
	return true, nil
}

// get returns the stored content of a chunk (shorter than the chunk size when its tail is
// zeros) in e.data, which must not be modified and must be given back with release.
func (c *chunkCache) get(ctx context.Context, vol chunkReader, key cacheKey, ino backend.Ino, cs int, epoch uint64) (*cacheEntry, error) {
	return c.getWith(entryKey{cacheKey: key}, epoch, func() (*cacheEntry, error) { return c.load(ctx, vol, key, ino, cs) })
}

// getWith returns the entry of key, calling load for it if it is neither cached nor loading. One
// load serves every reader that asks meanwhile; whatever it ends with, error or panic, they all
// get.
func (c *chunkCache) getWith(key entryKey, epoch uint64, load func() (*cacheEntry, error)) (*cacheEntry, error) {
	c.s.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.lru.MoveToFront(el)
		e := el.Value.(*cacheEntry)
		e.refs++
		c.s.hits++
		c.s.mu.Unlock()
		return e, nil
	}
	if call := c.loading[key]; call != nil && call.epoch >= c.inval[key.id] && call.epoch <= epoch {
		call.waiters++
		c.s.hits++
		c.s.mu.Unlock()
		<-call.done
		return call.entry, call.err
	}
	call := &loadCall{done: make(chan struct{}), epoch: epoch}
	c.s.misses++
	if c.loading[key] == nil {
		c.loading[key] = call
	}
	c.s.mu.Unlock()

	e, err := load()

	c.s.mu.Lock()
	if c.loading[key] == call {
		delete(c.loading, key)
	}
	if err == nil {
		e.refs = 1 + call.waiters
		if c.inval[key.id] <= epoch && c.items[key] == nil {
			c.insert(e)
		}
	}
	call.entry, call.err = e, err
	c.s.mu.Unlock()
	close(call.done)
	return e, err
}

// load reads a chunk from the store into a pooled buffer; a panic in the store becomes
// backend.ErrCorrupt (EIO), so that no reader of the chunk is left waiting.
func (c *chunkCache) load(ctx context.Context, vol chunkReader, key cacheKey, ino backend.Ino, cs int) (e *cacheEntry, err error) {
	defer c.recoverLoad(entryKey{cacheKey: key}, ino, &e, &err)
	buf := c.s.buffer(cs)
	n, err := vol.ReadChunk(ctx, ino, key.idx, buf)
	if err != nil {
		c.s.recycle(buf)
		return nil, err
	}
	if n < cs/2 {
		// A short chunk (a small file) keeps only its bytes.
		data := append([]byte(nil), buf[:n]...)
		c.s.recycle(buf)
		return &cacheEntry{key: entryKey{cacheKey: key}, data: data}, nil
	}
	return &cacheEntry{key: entryKey{cacheKey: key}, data: buf[:n], buf: buf}, nil
}

// loadSpan reads and verifies one span of a chunk into a pooled buffer (zeros past the chunk's
// end); errWholeChunk when the chunk verifies only whole.
func (c *chunkCache) loadSpan(ctx context.Context, pr partReader, key entryKey, ino backend.Ino) (e *cacheEntry, err error) {
	defer c.recoverLoad(key, ino, &e, &err)
	buf := c.s.buffer(spanSize)
	ok, err := pr.ReadChunkPart(ctx, ino, key.idx, int(key.span-1)*spanSize, buf)
	if err == nil && !ok {
		err = errWholeChunk
	}
	if err != nil {
		c.s.recycle(buf)
		return nil, err
	}
	return &cacheEntry{key: key, data: buf, buf: buf}, nil
}

// recoverLoad turns a panic in the store into backend.ErrCorrupt (EIO), so that no reader of the
// chunk is left waiting. Deferred by the loads.
func (c *chunkCache) recoverLoad(key entryKey, ino backend.Ino, e **cacheEntry, err *error) {
	if r := recover(); r != nil {
		c.log.Error("panic reading a chunk", "ino", ino, "chunk", key.idx, "span", key.span, "panic", r, "stack", string(debug.Stack()))
		*e, *err = nil, fmt.Errorf("%w: reading chunk %d of inode %d: panic: %v", backend.ErrCorrupt, key.idx, ino, r)
	}
}

// release gives back a reader's reference to e.
func (c *chunkCache) release(e *cacheEntry) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	e.refs--
	c.recycleIfFree(e)
}

func (c *chunkCache) recycleIfFree(e *cacheEntry) {
	if e.refs == 0 && !e.listed {
		c.s.recycle(e.buf)
		e.buf, e.data = nil, nil
	}
}

func (c *chunkCache) insert(e *cacheEntry) {
	k := e.key
	if k.span == 0 {
		for _, el := range c.byID[k.id][k.idx] {
			c.remove(el) // the whole chunk serves every span of it
		}
	}
	el := c.lru.PushFront(e)
	e.listed = true
	c.items[k] = el
	chunks := c.byID[k.id]
	if chunks == nil {
		chunks = map[uint64]map[uint32]*list.Element{}
		c.byID[k.id] = chunks
	}
	spans := chunks[k.idx]
	if spans == nil {
		spans = map[uint32]*list.Element{}
		chunks[k.idx] = spans
	}
	spans[k.span] = el
	c.used += e.size()
	c.s.used += e.size()
	c.s.evict(c)
}

func (c *chunkCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	k := e.key
	delete(c.items, k)
	if chunks := c.byID[k.id]; chunks != nil {
		if spans := chunks[k.idx]; spans != nil {
			delete(spans, k.span)
			if len(spans) == 0 {
				delete(chunks, k.idx)
			}
		}
		if len(chunks) == 0 {
			delete(c.byID, k.id)
		}
	}
	c.used -= e.size()
	c.s.used -= e.size()
	e.listed = false
	c.recycleIfFree(e)
}

// prefetch asks the read-ahead workers for a chunk unless it is cached, loading or the
// workers are busy.
func (c *chunkCache) prefetch(vol chunkReader, key cacheKey, ino backend.Ino, cs int) {
	c.s.mu.Lock()
	_, cached := c.items[entryKey{cacheKey: key}]
	_, loading := c.loading[entryKey{cacheKey: key}]
	epoch := c.epoch
	c.s.mu.Unlock()
	if cached || loading {
		return
	}
	select {
	case c.pfq <- prefetch{vol: vol, key: key, ino: ino, cs: cs, epoch: epoch}:
	default:
	}
}

// invalidateChunk forgets one chunk of a file, and its spans.
func (c *chunkCache) invalidateChunk(id, idx uint64) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.epoch++
	c.inval[id] = c.epoch
	for _, el := range c.byID[id][idx] {
		c.remove(el)
	}
}

// invalidate forgets every chunk of a file.
func (c *chunkCache) invalidate(id uint64) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.epoch++
	c.inval[id] = c.epoch
	for _, spans := range c.byID[id] {
		for _, el := range spans {
			c.remove(el)
		}
	}
}
