package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Badger's files in the store directory, by name. Nothing else in fusevol knows them.
const (
	vlogExt     = ".vlog"   // value log: chunk bodies; only the newest file is appended to
	memExt      = ".mem"    // memtable write-ahead log
	sstExt      = ".sst"    // LSM table, written whole
	discardFile = "DISCARD" // value-log discard statistics
)

// DefaultDiskReserve is the Options.DiskReserve the daemon uses.
//
// Badger writes its value log and memtable logs through memory maps of files it creates sparse
// (truncated to their full size up front). When the filesystem is full, a store into such a hole
// raises SIGBUS and kills the process, and with it every mount. The disk guard keeps file data
// from getting there: data commits fail with ENOSPC while the store's free space, less the holes
// Badger may still fill, is under the reserve, which is left for metadata, memtable flushes and
// compactions (they keep working, so deleting files still works on a full store).
const DefaultDiskReserve = 64 << 20

// Between two looks at the filesystem the guard lets through at most half the spare room it last
// saw, never more than diskBudget bytes (a new value-log file takes 128 MiB of spare room at
// once: twice the value-log file size) and only for diskRecheck.
const (
	diskBudget  = 16 << 20
	diskRecheck = time.Second
)

// diskGuard watches the free space of the filesystem holding the store directory. One guard
// serves every live view of a store.
type diskGuard struct {
	dir     string
	reserve int64

	mu      sync.Mutex
	checked time.Time
	budget  int64 // bytes that may be committed before the next look
}

// newDiskGuard returns the guard of a store in dir, or nil (no guard) when reserve is 0 or the
// store is in memory.
func newDiskGuard(dir string, opts Options) *diskGuard {
	if opts.DiskReserve <= 0 || opts.InMemory {
		return nil
	}
	return &diskGuard{dir: dir, reserve: opts.DiskReserve}
}

// admitData passes a commit of up to n bytes of file data to a live view through the store's
// disk guard, if it has one. Read-only views are left to refuse the write themselves.
func (v *View) admitData(n int64) error {
	if g := v.s.guard; g != nil && !v.ReadOnly() {
		return g.admit(n)
	}
	return nil
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
	need := g.reserve + g.holes()
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
		case strings.HasSuffix(name, vlogExt):
			newestVlog = max(newestVlog, name)
		case strings.HasSuffix(name, memExt), name == discardFile:
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

// diskBytes sums the blocks allocated to Badger's table and value-log files. db.Size() would do,
// but Badger refreshes it only once a minute, so df and gc would report stale sizes (0 for a new
// store); and a value log is preallocated sparse, so its apparent size overstates it.
func (s *Store) diskBytes() int64 {
	o := s.db.Opts()
	if o.InMemory {
		lsm, vlog := s.db.Size()
		return lsm + vlog
	}
	var n int64
	for _, dir := range slices.Compact([]string{o.Dir, o.ValueDir}) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			ext := filepath.Ext(e.Name())
			if ext != sstExt && ext != vlogExt {
				continue
			}
			if fi, err := e.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				}
			}
		}
	}
	return n
}
