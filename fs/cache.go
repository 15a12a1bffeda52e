package fs

import (
	"container/list"
	"context"
	"sync"

	"github.com/fusevol/fusevol/backend"
)

// chunkReader reads a chunk as stored (cache.go fills; writeback.go merges partial chunks).
type chunkReader interface {
	ReadChunk(ctx context.Context, ino backend.Ino, index uint64, dst []byte) (int, error)
}

var _ chunkReader = (*backend.View)(nil)

// chunkCache is a bounded LRU of chunk contents as stored (read path only). A fill that raced
// with an invalidation of the same file is dropped, using a global invalidation epoch: a fill
// started at epoch E is kept only if the file was not invalidated after E.
type chunkCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	lru     *list.List // of *cacheEntry, most recent first
	items   map[cacheKey]*list.Element
	byID    map[uint64]map[uint64]*list.Element
	epoch   uint64
	inval   map[uint64]uint64 // node id -> epoch of its last invalidation
	loading map[cacheKey]*loadCall
	pfq     chan prefetch
}

type cacheKey struct{ id, idx uint64 }

type cacheEntry struct {
	key  cacheKey
	data []byte
}

type loadCall struct {
	done  chan struct{}
	epoch uint64
	data  []byte
	err   error
}

type prefetch struct {
	vol   chunkReader
	key   cacheKey
	ino   backend.Ino
	cs    int
	epoch uint64
}

const defaultCacheBytes = 64 << 20

func newChunkCache(max int64) *chunkCache {
	if max <= 0 {
		max = defaultCacheBytes
	}
	return &chunkCache{
		max:     max,
		lru:     list.New(),
		items:   map[cacheKey]*list.Element{},
		byID:    map[uint64]map[uint64]*list.Element{},
		inval:   map[uint64]uint64{},
		loading: map[cacheKey]*loadCall{},
		pfq:     make(chan prefetch, 64),
	}
}

// runPrefetch serves read-ahead requests until ctx ends.
func (c *chunkCache) runPrefetch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-c.pfq:
			_, _ = c.get(ctx, p.vol, p.key, p.ino, p.cs, p.epoch)
		}
	}
}

// now returns the epoch to pass to get; take it before checking for buffered data.
func (c *chunkCache) now() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// get returns the stored content of a chunk (shorter than the chunk size when its tail is
// zeros). The slice must not be modified.
func (c *chunkCache) get(ctx context.Context, vol chunkReader, key cacheKey, ino backend.Ino, cs int, epoch uint64) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.lru.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*cacheEntry).data, nil
	}
	if call := c.loading[key]; call != nil && call.epoch >= c.inval[key.id] && call.epoch <= epoch {
		c.mu.Unlock()
		<-call.done
		return call.data, call.err
	}
	call := &loadCall{done: make(chan struct{}), epoch: epoch}
	if c.loading[key] == nil {
		c.loading[key] = call
	}
	c.mu.Unlock()

	buf := make([]byte, cs)
	n, err := vol.ReadChunk(ctx, ino, key.idx, buf)
	if err == nil && n < cs/2 {
		buf = append([]byte(nil), buf[:n]...)
	} else if err == nil {
		buf = buf[:n]
	}
	call.data, call.err = buf, err

	c.mu.Lock()
	if c.loading[key] == call {
		delete(c.loading, key)
	}
	if err == nil && c.inval[key.id] <= epoch && c.items[key] == nil {
		c.insert(key, buf)
	}
	c.mu.Unlock()
	close(call.done)
	return buf, err
}

func (c *chunkCache) insert(key cacheKey, data []byte) {
	el := c.lru.PushFront(&cacheEntry{key: key, data: data})
	c.items[key] = el
	m := c.byID[key.id]
	if m == nil {
		m = map[uint64]*list.Element{}
		c.byID[key.id] = m
	}
	m[key.idx] = el
	c.used += int64(cap(data))
	for c.used > c.max && c.lru.Len() > 1 {
		c.remove(c.lru.Back())
	}
}

func (c *chunkCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	if m := c.byID[e.key.id]; m != nil {
		delete(m, e.key.idx)
		if len(m) == 0 {
			delete(c.byID, e.key.id)
		}
	}
	c.used -= int64(cap(e.data))
}

// prefetch asks the read-ahead workers for a chunk unless it is cached, loading or the
// workers are busy.
func (c *chunkCache) prefetch(vol chunkReader, key cacheKey, ino backend.Ino, cs int) {
	c.mu.Lock()
	_, cached := c.items[key]
	_, loading := c.loading[key]
	epoch := c.epoch
	c.mu.Unlock()
	if cached || loading {
		return
	}
	select {
	case c.pfq <- prefetch{vol: vol, key: key, ino: ino, cs: cs, epoch: epoch}:
	default:
	}
}

// invalidateChunk forgets one chunk of a file.
func (c *chunkCache) invalidateChunk(id, idx uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.inval[id] = c.epoch
	if el, ok := c.items[cacheKey{id, idx}]; ok {
		c.remove(el)
	}
}

// invalidate forgets every chunk of a file.
func (c *chunkCache) invalidate(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.inval[id] = c.epoch
	for _, el := range c.byID[id] {
		c.remove(el)
	}
}
