package fs

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// opLog records what an Observer is told.
type opLog struct {
	mu     sync.Mutex
	count  map[string]int
	bytes  map[string]int
	errnos map[string]syscall.Errno // op -> last error
	slow   time.Duration            // longest request
}

func (l *opLog) observe(op string, took time.Duration, n int, errno syscall.Errno) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count[op]++
	l.bytes[op] += n
	if errno != 0 {
		l.errnos[op] = errno
	}
	l.slow = max(l.slow, took)
}

// The Observer sees each request with its bytes and errno: writes add up to what was written,
// reads to at most what was read back, fsync and a failed rmdir are told too.
func TestObserver(t *testing.T) {
	l := &opLog{count: map[string]int{}, bytes: map[string]int{}, errnos: map[string]syscall.Errno{}}
	tv := newVolume(t, backendOpts(64<<10), Options{Observe: l.observe})
	data := bytes.Repeat([]byte("fusevol!"), 300_000/8) // several chunks, not a multiple of one
	p := filepath.Join(tv.dir, "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The page cache may serve some of this read: the mount's reads add up to at most the file.
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	if err := os.Mkdir(filepath.Join(tv.dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tv.dir, "d", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Rmdir(filepath.Join(tv.dir, "d")); err != syscall.ENOTEMPTY {
		t.Fatalf("rmdir of a full directory: %v, want ENOTEMPTY", err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bytes["write"] != len(data) {
		t.Errorf("write bytes %d, want %d (%d writes)", l.bytes["write"], len(data), l.count["write"])
	}
	if l.count["fsync"] < 1 || l.count["create"] != 2 || l.count["flush"] < 1 {
		t.Errorf("counts %v: want create 2, fsync and flush at least 1", l.count)
	}
	if l.bytes["read"] > len(data) || l.count["read"] > 0 && l.bytes["read"] == 0 {
		t.Errorf("read %d bytes in %d reads of a %d-byte file", l.bytes["read"], l.count["read"], len(data))
	}
	if l.errnos["rmdir"] != syscall.ENOTEMPTY {
		t.Errorf("rmdir errno %v, want ENOTEMPTY", l.errnos["rmdir"])
	}
	// Close committed the file: its bytes, the tail chunk's within a chunk.
	if l.count[OpCommit] < 1 || l.bytes[OpCommit] < len(data)-64<<10 || l.bytes[OpCommit] > len(data)+64<<10 {
		t.Errorf("%d commits of %d bytes, want about %d", l.count[OpCommit], l.bytes[OpCommit], len(data))
	}
	if l.slow <= 0 {
		t.Errorf("no request took any time")
	}
}

// A mount without an Observer serves its fsys itself: nothing stands between go-fuse and it.
func TestNoObserverServesFsys(t *testing.T) {
	f := &fsys{}
	if got := rawFS(f, nil, nil); got != f {
		t.Fatalf("rawFS(f, nil, nil) = %T, want the fsys itself", got)
	}
	if _, ok := rawFS(f, func(string, time.Duration, int, syscall.Errno) {}, nil).(*observed); !ok {
		t.Fatal("rawFS with an observer does not time requests")
	}
}

// Cache.Stats counts a load from the store as a miss and every later read of the chunk as a hit.
func TestCacheStats(t *testing.T) {
	s := NewCache(4 * testCS)
	c := newChunkCache(s, slog.New(slog.DiscardHandler))
	r := &fakeChunks{seed: 1}
	for _, idx := range []uint64{0, 0, 1, 0, 1} {
		readCached(t, c, r, 1, idx)
	}
	got := s.Stats()
	if got.Misses != 2 || got.Hits != 3 || got.Bytes <= 0 || got.Max != 4*testCS {
		t.Fatalf("stats %+v: want 2 misses, 3 hits, some bytes of %d", got, 4*testCS)
	}
	if int64(got.Misses) != r.calls.Load() {
		t.Fatalf("%d misses but %d store reads", got.Misses, r.calls.Load())
	}
}
