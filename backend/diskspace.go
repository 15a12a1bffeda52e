package backend

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
	"golang.org/x/sys/unix"
)

// # A full disk, from this store or from anyone else
//
// Badger writes its memtable logs (.mem), its value log (.vlog) and its discard statistics
// through shared memory maps of files it first truncates to their full size, so they start as
// holes. A store into a hole needs a new block; when the filesystem has none the kernel raises
// SIGBUS, which kills the daemon and every mount with it. Another process filling the
// filesystem (a plain dd) made that happen in logFile.writeEntry of the memtable log. Checking
// free space is not enough: the other process takes the space between the check and the store.
// What closes the window is to give those files real blocks before Badger writes them, and to
// let no transaction commit while that cannot be done. When Badger creates its files (badger
// v4.9.6):
//
//   - Memtable log: newMemTable opens "%05d.mem" of the next file ID with O_CREATE (no O_EXCL),
//     truncates it to 2 × MemTableSize when it is empty and writes its header at once. It runs in
//     ensureRoomForWrite, in the middle of a commit (before the commit's entries are written to
//     the new log), when the current log holds MemTableSize bytes; and in DropPrefix (the
//     memtable flush of flushMemtableLocked). IDs grow by one. So the guard keeps a spare log
//     ready: an empty file with a log's blocks preallocated beyond its end (FALLOC_FL_KEEP_SIZE),
//     which Badger takes as new, its truncation leaving the blocks in place. It lies beside under
//     its own name, and is renamed (RENAME_NOREPLACE) to the next log's name before a commit that
//     could make Badger start a new memtable: the guard counts what commits put in the memtable.
//     Beside, it leaves no empty log in a closed store, which Badger would refuse to open. After a
//     rotation the next commit finds the next log made, allocates it whole (it is already when it
//     was the spare) and prepares a new spare. A commit's entries never fill more than the rest
//     of a log (Badger rotates before a request once MemTableSize is reached, a request is at
//     most 15% of it, the file is twice it).
//   - Value log: createVlogFile opens the next "%06d.vlog" with O_EXCL, so it cannot be prepared
//     in advance; Badger creates it (2 × ValueLogFileSize, header written at once) in
//     valueLog.write right after the request that took the current file past ValueLogFileSize,
//     and at Open. The next commit allocates it whole before anything is written to it. Only
//     chunk bodies go to the value log (t.set), so while a new file cannot be allocated the guard
//     refuses the transactions that write a body and lets the others (metadata, deletes) commit.
//   - DISCARD: allocated whole (1 MiB, doubled when full, which is rare).
//
// Every transaction goes through ready (Store.updateLocked, after fn, before the commit) and
// fails with ENOSPC when those files cannot be made whole. Room: commits of file data
// (admitData) need Options.DiskReserve free; other commits need diskFloor free beyond a spare
// room of 40 MiB the guard holds in a file. Below that for a second, the guard lets the spare
// room go (the process that filled the filesystem has had time to finish or fail), so that
// Badger can finish what it writes on its own (memtable flushes, compactions, the flush of Close
// and of the next Open), and metadata changes (deleting above all) still commit as long as they
// cannot make Badger start a new memtable, whose flush would need room: they go to the memtable
// log the store already holds (the guard counts what commits put in the memtable). Allocating
// Badger's files never takes the floor or the spare room (a failed fallocate keeps what it got).
// Reads need no room and keep working.
//
// What stays open, and why (none of it is in a commit of this store's writers):
//
//   - Badger writes SST files (memtable flushes, compactions) through a map of a file it has
//     just created with O_EXCL and truncated: they cannot be prepared either. The floor, the
//     reserve and the spare room keep room for them, but a process that takes that room while
//     Badger writes a table can still cause SIGBUS there.
//   - The header page of a value-log file created by a commit, and of the memtable log and
//     value-log file created at Open, is written before any later commit can allocate the file
//     (one 4 KiB page each).
//   - Value-log GC (RunValueLogGC) and DropPrefix write without a commit of ours: vlog.go calls
//     ready(nil) before each (allocating the files and placing the spare), but a rewrite that
//     moves into a value-log file it starts itself still writes into that file's holes.
//   - A single commit of more than ValueLogFileSize bytes of bodies (64 chunks of 4 MiB) makes
//     Badger extend the value-log file past the size that was allocated.
//   - A store closed or killed with the spare in place (the memtable was nearly full) holds an
//     empty memtable log: Badger refuses it at the first badger.Open; Open's retry for empty logs
//     (removeEmptyLogs) opens the store, other tools built on Badger do not.

// Badger's files in the store directory, by name. Nothing else in fusevol knows them.
const (
	vlogExt     = ".vlog"   // value log: chunk bodies; only the newest file is appended to
	memExt      = ".mem"    // memtable write-ahead log
	sstExt      = ".sst"    // LSM table, written whole
	discardFile = "DISCARD" // value-log discard statistics
)

// DefaultDiskReserve is the Options.DiskReserve the daemon uses: data commits fail with ENOSPC
// while the store's filesystem has less than this free (beyond the holes of Badger's files, which
// the guard allocates as they appear), leaving room for metadata, flushes and compactions, so
// deleting files still works on a store that filled its disk.
const DefaultDiskReserve = 64 << 20

// diskFloor is the free space, beyond the spare room, below which a write transaction fails
// unless it fits in the current memtable (the reserve when it is smaller): the room kept for
// memtable flushes and compactions.
const diskFloor = 16 << 20

// The guard also holds spareRoom bytes in a file of the store directory. When the filesystem
// stays short (another process took the room), it lets the file go: that room is then Badger's to
// finish what it is writing on its own (a memtable flush, a compaction, the flush of Close and of
// the next Open), unless the other process takes it too. Commits do not count it as free until
// the guard holds it again.
const (
	spareRoom     = 40 << 20 // a table of a full memtable (32 MiB and a last batch)
	spareRoomFile = "fusevol-spare-room"
	spareDelay    = time.Second                  // how long the filesystem must stay short before the spare room goes
	spareMemFile  = "fusevol-spare-memtable-log" // no ".mem": Badger does not take it for a log
)

// Between two looks at the filesystem the guard lets through at most half the spare room it last
// saw, never more than diskBudget bytes (a new value-log file takes 128 MiB of spare room at
// once: twice the value-log file size) and only for diskRecheck.
const (
	diskBudget  = 16 << 20
	diskRecheck = time.Second
)

// diskGuard watches the free space of the filesystem holding the store directory and keeps
// Badger's mapped files backed by blocks (see above). One guard serves a store.
type diskGuard struct {
	dir     string
	reserve int64

	mu      sync.Mutex
	checked time.Time
	budget  int64 // bytes of file data that may be committed before the next look

	// What ready has made safe: the newest memtable log and value-log file (by ID, -1 for none
	// yet) are allocated whole (memOK, vlogOK), the spare memtable log (memFid+1) is
	// preallocated (spareOK).
	memFid, vlogFid        int
	memSize                int64 // apparent size of a memtable log (2 × MemTableSize)
	memOK, spareOK, vlogOK bool
	placed                 bool      // the spare memtable log is at memFid+1, where Badger takes it
	held                   bool      // the spare-room file holds spareRoom bytes
	memUsed                int64     // bound on what commits put in the memtable since memFid became current
	lowSince               time.Time // a commit found the filesystem short of room (zero: not since)
}

// newDiskGuard returns the guard of a store in dir, or nil (no guard) when reserve is 0 or the
// store is in memory.
func newDiskGuard(dir string, opts Options) *diskGuard {
	if opts.DiskReserve <= 0 || opts.InMemory {
		return nil
	}
	return &diskGuard{dir: dir, reserve: opts.DiskReserve, memFid: -1, vlogFid: -1}
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
	free, err := g.free()
	if err != nil {
		return err
	}
	need := g.reserve + g.holes()
	g.checked, g.budget = time.Now(), 0
	if free < need+n {
		return fmt.Errorf("store filesystem of %s has %d bytes free, %d are kept in reserve: %w",
			g.dir, free, need, syscall.ENOSPC)
	}
	g.budget = min((free-need)/2, diskBudget) - n
	return nil
}

func (g *diskGuard) free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", g.dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// ready is called before every commit (txn nil: before Badger writes on its own). It makes sure
// that whatever the commit makes Badger write lands in allocated blocks, and fails with ENOSPC
// when that cannot be done or the filesystem is below the floor. A nil guard admits everything.
func (g *diskGuard) ready(txn *badger.Txn) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.changed() {
		g.prepare()
	}
	if !g.memOK {
		return fmt.Errorf("store filesystem of %s has no room for the memtable log: %w", g.dir, syscall.ENOSPC)
	}
	if !g.vlogOK && writesValueLog(txn) {
		return fmt.Errorf("store filesystem of %s has no room for the new value-log file: %w", g.dir, syscall.ENOSPC)
	}
	// Badger starts a new memtable before a commit once the current one holds MemTableSize
	// (half its log's size); memUsed is an upper bound, memMargin leaves room for Badger's own
	// small writes. A commit that fits needs neither the spare log nor room for a flush.
	n := memtableBytes(txn)
	fits := g.memUsed+n < g.memSize/2-memMargin
	if !fits {
		if err := g.placeSpare(); err != nil {
			return err
		}
	}
	if err := g.room(fits); err != nil {
		return err
	}
	g.memUsed += n
	return nil
}

// room fails with ENOSPC unless the filesystem has the floor free beyond the spare room (held or
// not), or the commit fits in the current memtable (Badger starts no new one, whose flush would
// need room): below the floor, metadata changes, deleting above all, still commit into the
// memtable log the store holds already. It takes the spare room back when the floor is there,
// and lets it go when it is not.
func (g *diskGuard) room(fits bool) error {
	free, err := g.free()
	if err != nil {
		return err
	}
	avail := free
	if g.held {
		avail += spareRoom
	}
	if floor := min(g.reserve, diskFloor); avail < floor+spareRoom {
		if g.held && g.lowSince.IsZero() {
			g.lowSince = time.Now()
			time.AfterFunc(spareDelay, g.releaseIfLow)
		}
		if fits {
			return nil
		}
		return fmt.Errorf("store filesystem of %s has %d bytes free, %d are kept for Badger's flushes: %w",
			g.dir, free, floor+spareRoom, syscall.ENOSPC)
	}
	g.lowSince = time.Time{}
	if !g.held {
		if err := g.holdSpareRoom(); err != nil {
			os.Truncate(g.spareRoomPath(), 0) // an allocation cut short
			return fmt.Errorf("store filesystem of %s: %w", g.dir, err)
		}
		g.held = true
	}
	return nil
}

func (g *diskGuard) spareRoomPath() string { return filepath.Join(g.dir, spareRoomFile) }

// releaseIfLow lets the spare room go if the filesystem has stayed short of room since lowSince:
// the process that filled it has had spareDelay to finish or fail, so the room is more likely
// to stay Badger's.
func (g *diskGuard) releaseIfLow() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lowSince.IsZero() || !g.held {
		return
	}
	g.lowSince = time.Time{}
	if free, err := g.free(); err == nil && free < min(g.reserve, diskFloor) {
		g.held = os.Truncate(g.spareRoomPath(), 0) != nil
	}
}

func (g *diskGuard) holdSpareRoom() error {
	f, err := os.OpenFile(g.spareRoomPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), 0, 0, spareRoom)
}

// changed reports whether Badger made a file since the last prepare or prepare left something
// undone. Two stats: the next memtable log is absent (or our spare, still empty), the next
// value-log file is absent.
func (g *diskGuard) changed() bool {
	if !g.memOK || !g.spareOK || !g.vlogOK {
		return true
	}
	var st unix.Stat_t
	if err := unix.Stat(g.memPath(g.memFid+1), &st); err == nil {
		if st.Size != 0 || !g.placed {
			return true
		}
	} else if g.placed {
		return true
	}
	return unix.Stat(g.vlogPath(g.vlogFid+1), &st) == nil
}

// placeSpare puts the spare memtable log where Badger will look for its next one, unless it is
// there already; Badger then takes it. It stays beside under its own name until a commit could
// make Badger start a new memtable, so that a closed store holds no empty log, which Badger
// refuses to open (Open retries without it; other tools do not).
func (g *diskGuard) placeSpare() error {
	if g.placed {
		return nil
	}
	var err error = syscall.ENOSPC
	if g.spareOK { // never over a file Badger made
		err = unix.Renameat2(unix.AT_FDCWD, g.spareMemPath(), unix.AT_FDCWD, g.memPath(g.memFid+1), unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return fmt.Errorf("store filesystem of %s has no room for the next memtable log: %w", g.dir, err)
	}
	g.placed = true
	return nil
}

func (g *diskGuard) spareMemPath() string { return filepath.Join(g.dir, spareMemFile) }

func (g *diskGuard) memPath(fid int) string {
	return filepath.Join(g.dir, fmt.Sprintf("%05d%s", fid, memExt))
}

func (g *diskGuard) vlogPath(fid int) string {
	return filepath.Join(g.dir, fmt.Sprintf("%06d%s", fid, vlogExt))
}

// prepare finds Badger's newest memtable log and value-log file and allocates them, the spare
// memtable log and DISCARD (best effort: only Badger's compactions write it); memOK, spareOK
// and vlogOK say what it achieved.
func (g *diskGuard) prepare() {
	g.memOK, g.spareOK, g.vlogOK = false, false, false
	var st unix.Stat_t
	g.held = unix.Stat(g.spareRoomPath(), &st) == nil && st.Blocks*512 >= spareRoom // from an earlier run
	ents, err := os.ReadDir(g.dir)
	if err != nil {
		return
	}
	mem, vlog := -1, -1
	for _, e := range ents {
		name := e.Name()
		if fid, ok := fileID(name, memExt); ok && fid > mem && !isEmpty(e) {
			mem = fid // the spare is empty until Badger takes it
		} else if fid, ok := fileID(name, vlogExt); ok {
			vlog = max(vlog, fid)
		}
	}
	if mem < 0 || vlog < 0 {
		return // not a Badger directory (tests of the guard alone): nothing to prepare
	}
	if mem != g.memFid {
		g.memUsed = 0 // a new memtable (Badger starts one at Open too)
	}
	memSize, err := g.allocate(g.memPath(mem))
	g.memFid, g.memSize, g.memOK = mem, memSize, err == nil
	// The spare is in place (an earlier placeSpare) or beside, under its own name.
	g.placed = unix.Stat(g.memPath(mem+1), &st) == nil && st.Size == 0 && st.Blocks*512 >= memSize
	g.spareOK = g.memOK && (g.placed || g.spare(g.spareMemPath(), memSize) == nil)
	g.allocateIfThere(filepath.Join(g.dir, discardFile))
	_, err = g.allocate(g.vlogPath(vlog))
	g.vlogFid, g.vlogOK = vlog, err == nil
}

// fileID parses Badger's "<id><ext>" file names.
func fileID(name, ext string) (int, bool) {
	id, ok := strings.CutSuffix(name, ext)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(id)
	return n, err == nil
}

func isEmpty(e fs.DirEntry) bool {
	fi, err := e.Info()
	return err == nil && fi.Size() == 0
}

// allocate gives every byte of the file at path a block (fallocate mode 0 keeps its data) and
// returns its size. Files already whole cost one fstat.
func (g *diskGuard) allocate(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	if missing := st.Size - st.Blocks*512; missing > 0 {
		if err := g.take(f, path, 0, st.Size, missing); err != nil {
			return 0, err
		}
	}
	return st.Size, nil
}

func (g *diskGuard) allocateIfThere(path string) error {
	_, err := g.allocate(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// spare creates path (or keeps it: an earlier attempt may have allocated part of it) and gives
// it size bytes of blocks beyond its end, so that it stays empty.
func (g *diskGuard) spare(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if missing := size - st.Blocks*512; missing > 0 {
		return g.take(f, path, unix.FALLOC_FL_KEEP_SIZE, size, missing)
	}
	return nil
}

// take allocates [0, size) of f (missing bytes of it are not yet), unless that would leave less
// than the floor and the spare room free: a failed fallocate keeps what it allocated, and it
// must not take the room the spare room left for Badger.
func (g *diskGuard) take(f *os.File, path string, mode uint32, size, missing int64) error {
	free, err := g.free()
	if err != nil {
		return err
	}
	keep := min(g.reserve, diskFloor)
	if !g.held {
		keep += spareRoom
	}
	if free < missing+keep {
		return fmt.Errorf("allocate %s: %d bytes missing, %d free, %d kept: %w", path, missing, free, keep, syscall.ENOSPC)
	}
	if err := unix.Fallocate(int(f.Fd()), mode, 0, size); err != nil {
		return fmt.Errorf("allocate %s: %w", path, err)
	}
	return nil
}

// writesValueLog reports whether committing txn writes to the value log: whether it sets a value
// of valueThreshold bytes or more (only chunk bodies are that large, see t.set). Badger does not
// show a transaction's pending writes, so this reads them by reflection; should a Badger
// upgrade rename them, it answers yes (refusing the commit is safe) and TestWritesValueLog fails.
// Only asked while a new value-log file lacks blocks; nil (Badger on its own) is a yes.
func writesValueLog(txn *badger.Txn) bool {
	if txn == nil {
		return true
	}
	pending := reflect.ValueOf(txn).Elem().FieldByName("pendingWrites")
	if pending.Kind() != reflect.Map {
		return true
	}
	for it := pending.MapRange(); it.Next(); {
		e := it.Value()
		if e.Kind() != reflect.Pointer || e.IsNil() {
			return true
		}
		v := e.Elem().FieldByName("Value")
		if v.Kind() != reflect.Slice || v.Len() >= valueThreshold {
			return true
		}
	}
	return false
}

// memMargin is what the guard leaves unused of a memtable below the floor, for the writes
// Badger makes on its own and the transaction-end marks it adds.
const memMargin = 1 << 20

// memtableBytes bounds what committing txn adds to Badger's memtable (log and skiplist arena):
// per entry its key, its value (or value pointer) and a skiplist node. Badger keeps the first
// two in the transaction's size and count, which it does not show: read by reflection, as in
// writesValueLog (nil or unreadable: more than any memtable holds).
func memtableBytes(txn *badger.Txn) int64 {
	if txn == nil {
		return math.MaxInt64 / 2
	}
	t := reflect.ValueOf(txn).Elem()
	size, count := t.FieldByName("size"), t.FieldByName("count")
	if size.Kind() != reflect.Int64 || count.Kind() != reflect.Int64 {
		return math.MaxInt64 / 2
	}
	return size.Int() + (count.Int()+1)*int64(skl.MaxNodeSize+64)
}

// holes is how much Badger may still write into space its mapped files hold but have not
// allocated: the newest value-log file (the only one appended to), the memtable logs and the
// discard statistics. Once ready has allocated them this is 0.
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
