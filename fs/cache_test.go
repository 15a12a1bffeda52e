package fs

import (
	"bytes"
	"context"
	"errors"
	stdlog "log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"golang.org/x/sys/unix"
)

const testCS = 4096

// fakeChunks is a store of chunks whose bytes depend on (seed, ino, index).
type fakeChunks struct {
	seed  byte
	calls atomic.Int64
	gate  chan struct{} // when set, reads wait for it to close
	panic any           // when set, reads panic with it
	err   error         // when set, reads fail with it
}

func (f *fakeChunks) ReadChunk(ctx context.Context, ino backend.Ino, index uint64, dst []byte) (int, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if f.panic != nil {
		panic(f.panic)
	}
	if f.err != nil {
		return 0, f.err
	}
	copy(dst, f.want(ino, index))
	return testCS, nil
}

func (f *fakeChunks) want(ino backend.Ino, index uint64) []byte {
	return bytes.Repeat([]byte{f.seed, byte(ino), byte(index), byte(index >> 8)}, testCS/4)
}

// readCached reads chunk idx of node ino through c and checks its bytes against r's.
func readCached(t *testing.T, c *chunkCache, r *fakeChunks, ino, idx uint64) {
	t.Helper()
	p := make([]byte, testCS)
	if err := c.read(context.Background(), r, cacheKey{ino, idx}, backend.Ino(ino), testCS, c.now(), p, 0); err != nil {
		t.Fatalf("read node %d chunk %d: %v", ino, idx, err)
	}
	if !bytes.Equal(p, r.want(backend.Ino(ino), idx)) {
		t.Fatalf("node %d chunk %d: wrong bytes (another mount's or a reused buffer's)", ino, idx)
	}
}

// A load that fails or panics must release every reader waiting for it, with an error (a panic
// is a corrupt store: EIO), and leave nothing behind, so the next read tries again.
func TestCacheLoadFailure(t *testing.T) {
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		panic any
		err   error
		want  error
	}{
		{"panic", "table.(*blockIterator).setIdx: index out of range", nil, backend.ErrCorrupt},
		{"error", nil, errBoom, errBoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChunkCache(NewCache(1<<20), testLogger(t))
			r := &fakeChunks{gate: make(chan struct{}), panic: tc.panic, err: tc.err}
			key := cacheKey{1, 0}
			const readers = 8
			errs := make(chan error, readers)
			for range readers {
				go func() {
					e, err := c.get(context.Background(), r, key, 1, testCS, c.now())
					if err == nil {
						c.release(e)
					}
					errs <- err
				}()
			}
			waitUntil(t, "readers waiting for one load", func() bool {
				c.s.mu.Lock()
				defer c.s.mu.Unlock()
				call := c.loading[entryKey{cacheKey: key}]
				return call != nil && call.waiters == readers-1
			})
			close(r.gate)
			for range readers {
				select {
				case err := <-errs:
					if !errors.Is(err, tc.want) {
						t.Errorf("reader got %v, want %v", err, tc.want)
					}
					if tc.panic != nil && toErrno(err) != syscall.EIO {
						t.Errorf("a panic maps to %v, want EIO", toErrno(err))
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a reader still waits for the failed load")
				}
			}
			if n := r.calls.Load(); n != 1 {
				t.Errorf("%d loads for concurrent readers, want 1", n)
			}
			readCached(t, c, &fakeChunks{}, 1, 0)
		})
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for start := time.Now(); !ok(); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Mounts sharing a Cache stay within its budget, keep their chunks apart (node ids are per
// mount), and one reading a lot cannot take the other's equal share.
func TestCacheSharedBudget(t *testing.T) {
	const chunks = 16
	s := NewCache(chunks * (testCS + entryOverhead))
	a, b := newChunkCache(s, testLogger(t)), newChunkCache(s, testLogger(t))
	ra, rb := &fakeChunks{seed: 1}, &fakeChunks{seed: 2}
	for i := range uint64(4) {
		readCached(t, a, ra, 1, i)
	}
	for i := range uint64(100) {
		readCached(t, b, rb, 1, i)
	}
	loads := ra.calls.Load()
	for i := range uint64(4) {
		readCached(t, a, ra, 1, i)
	}
	if n := ra.calls.Load() - loads; n != 0 {
		t.Errorf("mount a lost %d of its 4 chunks to mount b's 100", n)
	}
	b.invalidate(1)
	for i := range uint64(4) {
		readCached(t, a, ra, 1, i)
	}
	if n := ra.calls.Load() - loads; n != 0 {
		t.Errorf("invalidating node 1 of mount b dropped %d chunks of mount a's node 1", n)
	}
	for i := range uint64(100) {
		readCached(t, a, ra, 2, i)
		readCached(t, b, rb, 2, i)
	}
	s.mu.Lock()
	used, aUsed, bUsed, max := s.used, a.used, b.used, s.max
	s.mu.Unlock()
	if used > max || used != aUsed+bUsed {
		t.Errorf("used %d (a %d + b %d), budget %d", used, aUsed, bUsed, max)
	}
	if aUsed != bUsed {
		t.Errorf("two mounts reading alike hold %d and %d bytes, want equal shares", aUsed, bUsed)
	}
	a.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used != b.used || len(s.mounts) != 1 {
		t.Errorf("after closing a: used %d, b holds %d, %d mounts", s.used, b.used, len(s.mounts))
	}
}

// An evicted chunk's buffer is reused only once no reader holds it.
func TestCacheEvictedWhileRead(t *testing.T) {
	c := newChunkCache(NewCache(2*(testCS+entryOverhead)), testLogger(t))
	r := &fakeChunks{seed: 3}
	e, err := c.get(context.Background(), r, cacheKey{1, 0}, 1, testCS, c.now())
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(50) {
		readCached(t, c, r, 2, i)
	}
	if !bytes.Equal(e.data, r.want(1, 0)) {
		t.Error("an evicted chunk's buffer was reused while a reader still held it")
	}
	c.release(e)
}

func TestFuseLogFilter(t *testing.T) {
	for _, tc := range []struct {
		line string
		kept bool
	}{
		{"trySplice: max pipe size 1048576", false},
		{"Failed to read from fuse conn: bad file descriptor", true},
	} {
		var buf fusetest.SyncBuffer
		fuseLogger(slog.New(slog.NewTextHandler(&buf, nil)), false).Println(tc.line)
		if got := strings.Contains(buf.String(), tc.line); got != tc.kept {
			t.Errorf("%q: in the log = %v, want %v (log: %q)", tc.line, got, tc.kept, buf.String())
		}
	}
}

// Reading 1 MiB blocks (replies larger than a pipe) must not log go-fuse's trySplice line, in
// the mount's logger or in the process's standard log.
func TestMountLogNoSplice(t *testing.T) {
	var buf fusetest.SyncBuffer
	stdlog.SetOutput(&buf)
	t.Cleanup(func() { stdlog.SetOutput(os.Stderr) })
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tv := newVolume(t, backend.VolumeOptions{}, Options{Logger: logger})
	p := filepath.Join(tv.dir, "f")
	if err := os.WriteFile(p, randBytes(11, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 1<<20)
	for off := int64(0); off < 8<<20; off += 1 << 20 {
		if _, err := fh.ReadAt(block, off); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(buf.String(), "trySplice") {
		t.Errorf("the log has go-fuse's trySplice lines:\n%s", buf.String())
	}
}

// partCS is the chunk size of the span tests: eight spans.
const partCS = 8 * spanSize

// fakeParts is a store of partCS-byte chunks that can be read in part, unless whole is set.
type fakeParts struct {
	seed         byte
	whole        bool // chunks verify only whole (compressed or old bodies)
	wholes, runs atomic.Int64
	gate         chan struct{} // when set, part reads wait for it to close
	panic        any           // when set, part reads panic with it
}

func (f *fakeParts) bytesOf(ino backend.Ino, index uint64) []byte {
	b := make([]byte, partCS)
	for i := range b {
		b[i] = f.seed ^ byte(ino) ^ byte(index*7) ^ byte(i) ^ byte(i>>8)
	}
	return b
}

func (f *fakeParts) ReadChunk(ctx context.Context, ino backend.Ino, index uint64, dst []byte) (int, error) {
	f.wholes.Add(1)
	return copy(dst, f.bytesOf(ino, index)), nil
}

func (f *fakeParts) ReadChunkPart(ctx context.Context, ino backend.Ino, index uint64, off int, dst []byte) (bool, error) {
	f.runs.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if f.panic != nil {
		panic(f.panic)
	}
	if f.whole {
		return false, nil
	}
	copy(dst, f.bytesOf(ino, index)[off:])
	return true, nil
}

// readPart reads n bytes at within of chunk idx of node 1 and checks them.
func readPart(t *testing.T, c *chunkCache, r *fakeParts, idx uint64, within, n int) {
	t.Helper()
	p := make([]byte, n)
	if err := c.read(context.Background(), r, cacheKey{1, idx}, 1, partCS, c.now(), p, within); err != nil {
		t.Fatalf("read %d bytes at %d of chunk %d: %v", n, within, idx, err)
	}
	if !bytes.Equal(p, r.bytesOf(1, idx)[within:within+n]) {
		t.Fatalf("read %d bytes at %d of chunk %d: wrong bytes", n, within, idx)
	}
}

func spansCached(c *chunkCache, id, idx uint64) (spans int, whole bool) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for s := range c.byID[id][idx] {
		if s == 0 {
			whole = true
		} else {
			spans++
		}
	}
	return spans, whole
}

// Small reads of a cold chunk load (and verify) only the spans they touch, and later reads of
// those spans hit; reads of more spans, and chunks that verify only whole, load the whole chunk,
// which then serves every read of it in place of its spans.
func TestCacheSpans(t *testing.T) {
	type step struct {
		idx            uint64
		within, n      int
		parts, wholes  int64 // store calls this read makes
		spans          int   // spans of the chunk cached after it
		whole          bool  // whole chunk cached after it
		invalidateIdx  bool  // invalidate the chunk before the read
		invalidateFile bool  // invalidate the file before the read
	}
	tests := []struct {
		name  string
		whole bool
		steps []step
	}{
		{"4 KiB reads", false, []step{
			{idx: 0, within: spanSize + 4096, n: 4096, parts: 1, spans: 1},
			{idx: 0, within: spanSize, n: 4096, spans: 1},
			{idx: 0, within: 2*spanSize - 100, n: 4096, parts: 1, spans: 2},
			{idx: 0, within: 0, n: 1, parts: 1, spans: 3},
			{idx: 1, within: 3 * spanSize, n: spanSize, parts: 1, spans: 1},
		}},
		{"a big read replaces the spans", false, []step{
			{idx: 0, within: 0, n: 4096, parts: 1, spans: 1},
			{idx: 0, within: 100, n: 2 * spanSize, wholes: 1, whole: true},
			{idx: 0, within: 3 * spanSize, n: 4096, whole: true},
		}},
		{"invalidation drops spans", false, []step{
			{idx: 0, within: 0, n: 4096, parts: 1, spans: 1},
			{idx: 0, within: 0, n: 4096, parts: 1, spans: 1, invalidateIdx: true},
			{idx: 0, within: 0, n: 4096, parts: 1, spans: 1, invalidateFile: true},
		}},
		{"a chunk read all over loads whole", false, []step{
			{idx: 0, within: 0, n: 4096, parts: 1, spans: 1},
			{idx: 0, within: spanSize, n: 4096, parts: 1, spans: 2},
			{idx: 0, within: 2 * spanSize, n: 4096, parts: 1, spans: 3},
			{idx: 0, within: 3 * spanSize, n: 4096, parts: 1, spans: maxChunkSpans},
			{idx: 0, within: 4096, n: 4096, spans: maxChunkSpans}, // cached: still served by its span
			{idx: 0, within: 5 * spanSize, n: 4096, wholes: 1, whole: true},
		}},
		{"chunks that verify only whole", true, []step{
			{idx: 0, within: 0, n: 4096, parts: 1, wholes: 1, whole: true},
			{idx: 0, within: 2 * spanSize, n: 4096, whole: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newChunkCache(NewCache(1<<20), testLogger(t))
			r := &fakeParts{seed: 9, whole: tc.whole}
			for i, s := range tc.steps {
				if s.invalidateIdx {
					c.invalidateChunk(1, s.idx)
				}
				if s.invalidateFile {
					c.invalidate(1)
				}
				parts, wholes := r.runs.Load(), r.wholes.Load()
				readPart(t, c, r, s.idx, s.within, s.n)
				if dp, dw := r.runs.Load()-parts, r.wholes.Load()-wholes; dp != s.parts || dw != s.wholes {
					t.Errorf("step %d: %d span and %d whole loads, want %d and %d", i, dp, dw, s.parts, s.wholes)
				}
				if spans, whole := spansCached(c, 1, s.idx); spans != s.spans || whole != s.whole {
					t.Errorf("step %d: %d spans cached (whole %v), want %d (whole %v)", i, spans, whole, s.spans, s.whole)
				}
			}
		})
	}
}

// A span load that panics releases every reader waiting for it with EIO and leaves nothing
// loading; the next read loads again.
func TestCacheSpanLoadPanics(t *testing.T) {
	c := newChunkCache(NewCache(1<<20), testLogger(t))
	r := &fakeParts{gate: make(chan struct{}), panic: "index out of range"}
	const readers = 4
	errs := make(chan error, readers)
	for range readers {
		go func() {
			errs <- c.read(context.Background(), r, cacheKey{1, 0}, 1, partCS, c.now(), make([]byte, 4096), 0)
		}()
	}
	key := entryKey{cacheKey{1, 0}, 1}
	waitUntil(t, "readers waiting for one span load", func() bool {
		c.s.mu.Lock()
		defer c.s.mu.Unlock()
		call := c.loading[key]
		return call != nil && call.waiters == readers-1
	})
	close(r.gate)
	for range readers {
		select {
		case err := <-errs:
			if toErrno(err) != syscall.EIO {
				t.Errorf("reader got %v, want EIO", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a reader still waits for the failed span load")
		}
	}
	c.s.mu.Lock()
	left := len(c.loading) + len(c.items)
	c.s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d loads or entries left after a failed load", left)
	}
	r.panic, r.gate = nil, nil
	readPart(t, c, r, 0, 0, 4096)
}

// Spans count in the shared budget like chunks: many of them stay within it, and a whole chunk
// and its spans are never both charged.
func TestCacheSpansBudget(t *testing.T) {
	const entries = 8
	s := NewCache(entries * (spanSize + entryOverhead))
	c := newChunkCache(s, testLogger(t))
	r := &fakeParts{seed: 4}
	for i := range uint64(50) {
		readPart(t, c, r, i, int(i%4)*spanSize, 4096)
		s.mu.Lock()
		used, n := s.used, c.lru.Len()
		s.mu.Unlock()
		if used > s.max || used != int64(n)*(spanSize+entryOverhead) {
			t.Fatalf("after %d span reads: %d bytes used by %d entries, budget %d", i+1, used, n, s.max)
		}
	}
	readPart(t, c, r, 49, 0, partCS) // whole: replaces the chunk's span
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used != c.used || c.used > s.max+partCS+entryOverhead {
		t.Fatalf("after a whole read: used %d, mount %d, budget %d", s.used, c.used, s.max)
	}
}

// Through a mount, cold 4 KiB O_DIRECT reads return the file's bytes and cache only the spans
// they touched; a 1 MiB read caches whole chunks in place of their spans.
func TestMountColdSmallReads(t *testing.T) {
	cache := NewCache(64 << 20)
	tv := newVolume(t, backend.VolumeOptions{}, Options{Cache: cache})
	p := filepath.Join(tv.dir, "f")
	data := randBytes(12, 4<<20)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	used := func() int64 {
		cache.mu.Lock()
		defer cache.mu.Unlock()
		return cache.used
	}
	offs := []int64{3 << 20, 5 * 4096, 1<<20 + 7*spanSize, 2<<20 - 4096, 40 * 4096}
	for i, off := range offs {
		if n, err := unix.Pread(fd, buf[:4096], off); err != nil || n != 4096 {
			t.Fatalf("pread at %d: %d, %v", off, n, err)
		}
		if !bytes.Equal(buf[:4096], data[off:off+4096]) {
			t.Fatalf("4 KiB at %d: wrong bytes", off)
		}
		if got, want := used(), int64(i+1)*(spanSize+entryOverhead); got != want {
			t.Fatalf("after %d cold 4 KiB reads the cache holds %d bytes, want %d (one span each)", i+1, got, want)
		}
	}
	if n, err := unix.Pread(fd, buf, 0); err != nil || n != len(buf) || !bytes.Equal(buf, data[:len(buf)]) {
		t.Fatalf("1 MiB read: %d, %v", n, err)
	}
	// Chunks 0-3 are whole now (the two spans of chunk 0 gone); the spans in chunks 4, 7 and 12
	// stay. Read-ahead may add whole chunks after them.
	if got, min := used(), 4*int64(backend.DefaultChunkSize+entryOverhead)+3*(spanSize+entryOverhead); got < min || (got-min)%(backend.DefaultChunkSize+entryOverhead) != 0 {
		t.Fatalf("after a 1 MiB read the cache holds %d bytes, want 4 chunks, 1 span and any read-ahead chunks (%d + k chunks)", got, min)
	}
}
