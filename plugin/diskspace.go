package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
)

// Badger writes its value log and memtable logs through memory maps of files it creates sparse
// (truncated to their full size up front). When the filesystem is full, a store into such a hole
// raises SIGBUS and kills the daemon, and with it every mount. The disk guard keeps file data
// from getting there: data commits fail with ENOSPC while the store's free space, less the holes
// Badger may still fill, is under diskMargin, which is left for metadata, memtable flushes and
// compactions (they keep working, so deleting files still works on a full store).
const diskMargin = 64 << 20

// Between two looks at the filesystem the guard lets through at most half the spare room it last
// saw, never more than diskBudget bytes (a new value-log file takes 128 MiB of spare room at
// once: twice the value-log file size) and only for diskRecheck.
const (
	diskBudget  = 16 << 20
	diskRecheck = time.Second
)

// diskGuard watches the free space of the filesystem holding the store directory. One guard
// serves every mount of a daemon.
type diskGuard struct {
	dir string

	mu      sync.Mutex
	checked time.Time
	budget  int64 // bytes that may be committed before the next look
}

// admit accounts for a commit of up to n bytes of file data; it fails with ENOSPC when the
// store's filesystem lacks the room.
func (g *diskGuard) admit(n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n <= g.budget && time.Since(g.checked) < diskRecheck {
		g.budget -= n
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", g.dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	need := diskMargin + g.holes()
	g.checked, g.budget = time.Now(), 0
	if free < need+n {
		return fmt.Errorf("store filesystem of %s has %d bytes free, %d are kept in reserve: %w",
			g.dir, free, need, syscall.ENOSPC)
	}
	g.budget = min((free-need)/2, diskBudget) - n
	return nil
}

// holes is how much Badger may still write into space its mapped files hold but have not
// allocated: the newest value-log file (the only one appended to), the memtable logs and the
// discard statistics.
func (g *diskGuard) holes() int64 {
	ents, _ := os.ReadDir(g.dir)
	var n int64
	newestVlog := "" // names are zero-padded file IDs, so the greatest is the newest
	for _, e := range ents {
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".vlog"):
			newestVlog = max(newestVlog, name)
		case strings.HasSuffix(name, ".mem"), name == "DISCARD":
			n += holeBytes(filepath.Join(g.dir, name))
		}
	}
	if newestVlog != "" {
		n += holeBytes(filepath.Join(g.dir, newestVlog))
	}
	return n
}

func holeBytes(path string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return max(st.Size-st.Blocks*512, 0)
}

// guardedView is a volume's live view whose data commits first pass the disk guard.
type guardedView struct {
	*backend.View
	guard *diskGuard
}

func (v guardedView) CommitChunks(ctx context.Context, ino backend.Ino, chunks []backend.Chunk, minSize uint64) (backend.Attr, error) {
	var n int64
	for i := range chunks {
		n += int64(chunks[i].Len())
	}
	if err := v.guard.admit(n); err != nil {
		return backend.Attr{}, err
	}
	return v.View.CommitChunks(ctx, ino, chunks, minSize)
}

func (v guardedView) Fallocate(ctx context.Context, ino backend.Ino, off, length int64, mode uint32) error {
	if mode&unix.FALLOC_FL_PUNCH_HOLE == 0 {
		if err := v.guard.admit(length); err != nil {
			return err
		}
	}
	return v.View.Fallocate(ctx, ino, off, length, mode)
}

// guardDisk wraps mount so that the live volumes it mounts check the disk guard of the store
// in storeDir. Snapshots are read-only and need no guard.
func guardDisk(mount mountFunc, storeDir string) mountFunc {
	guard := &diskGuard{dir: storeDir}
	return func(ctx context.Context, dir string, view fs.Volume, log *slog.Logger) (fsMount, error) {
		if bv, ok := view.(*backend.View); ok && !bv.ReadOnly() {
			view = guardedView{View: bv, guard: guard}
		}
		return mount(ctx, dir, view, log)
	}
}
