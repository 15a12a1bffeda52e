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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
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
				call := c.loading[key]
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

// syncBuffer is a log sink for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFuseLogFilter(t *testing.T) {
	for _, tc := range []struct {
		line string
		kept bool
	}{
		{"trySplice: max pipe size 1048576", false},
		{"Failed to read from fuse conn: bad file descriptor", true},
	} {
		var buf syncBuffer
		fuseLogger(slog.New(slog.NewTextHandler(&buf, nil)), false).Println(tc.line)
		if got := strings.Contains(buf.String(), tc.line); got != tc.kept {
			t.Errorf("%q: in the log = %v, want %v (log: %q)", tc.line, got, tc.kept, buf.String())
		}
	}
}

// Reading 1 MiB blocks (replies larger than a pipe) must not log go-fuse's trySplice line, in
// the mount's logger or in the process's standard log.
func TestMountLogNoSplice(t *testing.T) {
	var buf syncBuffer
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
