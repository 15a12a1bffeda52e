package backend

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Options configures Open.
type Options struct {
	Logger *slog.Logger
	// InMemory runs Badger without disk (tests only).
	InMemory bool
	// GCInterval is how often background GC runs: it collects dead snapshot nodes, deletes the
	// bodies of unreferenced chunks, compacts once 64 MiB of them were deleted and rewrites value-log
	// files that hold garbage, so the disk space comes back; writers do not wait for it (see vlogGC).
	// 0 means one minute; negative disables it (Store.GC still works).
	GCInterval time.Duration
	// ValueLogFileSize is the size of Badger's value-log files (0 = 64 MiB). GC reclaims space a
	// whole file at a time and never the file being written, so this bounds the garbage left behind.
	ValueLogFileSize int64
	// IntentLogSize is the size of each of the intent log's two segment files (0 =
	// DefaultIntentLogSize); negative runs without an intent log (every fsync syncs the store).
	// Ignored when InMemory.
	IntentLogSize int64
	// DiskReserve turns on the disk guard (diskspace.go): writes of file data to a volume fail
	// with ENOSPC while the store's filesystem has less than this many bytes free beyond what
	// Badger's sparse files may still take, every write transaction does below a smaller floor
	// or when Badger's memory-mapped files cannot be given blocks before it writes them.
	// 0 = no guard; ignored when InMemory.
	DiskReserve int64
	// KeepOrphans names the volumes whose orphans Open leaves alone: those of a FUSE mount
	// that outlived the process serving it, whose files may still be open (live restart).
	KeepOrphans func(volume string) bool

	// noChecksums turns Badger's checksum checks off (BenchmarkChecksumCost's baseline only).
	noChecksums bool
}

// Store is one Badger database holding every volume, snapshot and chunk. Safe for concurrent use.
type Store struct {
	db  *badger.DB
	log *slog.Logger

	// wmu serializes every write transaction, so transactions never conflict and the in-memory
	// mirrors below change only together with the keys they mirror.
	wmu sync.Mutex

	mu       sync.RWMutex // guards the fields below
	nodes    map[uint32]nodeRec
	vols     map[string]*volRec
	nextNode uint32 // next node ID to hand out (counting down)
	nextTree uint32
	anc      map[uint32][]uint32 // ancestor paths cache, cleared whenever the tree changes

	codecs *codecs

	closed   atomic.Bool
	stop     context.CancelFunc
	bg       sync.WaitGroup
	gcMu     sync.Mutex  // one GC at a time; chunk bodies are deleted only under it (sweepDead)
	legacy   atomic.Bool // metadata values remain in the value log (upgradeFormat)
	inMemory bool
	rewrites atomic.Int64 // value-log files rewritten since Open
	gcPasses atomic.Int64 // GC passes since Open (GCStats)
	gcNanos  atomic.Int64 // time they took
	gcSwept  atomic.Int64 // chunk-body bytes (as stored) they deleted
	panics   atomic.Int64 // storage-engine panics recovered (damage.go)

	intents *intents // nil: no intent log
	// commitSeq counts commits; syncedSeq is the count a completed Badger sync covered. touched
	// maps each inode changed since then to the commit that last changed it, so an fsync knows
	// whether the log alone makes the file durable.
	commitSeq  atomic.Uint64
	syncMu     sync.Mutex // one Badger sync at a time
	tmu        sync.Mutex // guards the fields below
	syncedSeq  uint64
	syncedOnce bool
	touched    map[touchKey]uint64
	touchedAll uint64     // every inode counts as changed at this commit (touched overflowed)
	guard      *diskGuard // nil: no disk guard (Options.DiskReserve)
}

// volRec is a volume's stored record.
type volRec struct {
	Name      string        `json:"name"`
	ID        string        `json:"id"`
	CreatedAt time.Time     `json:"created_at"`
	Options   VolumeOptions `json:"options"`
	Tree      uint32        `json:"tree"`
	Head      uint32        `json:"head"` // the live (leaf) node
}

func (v *volRec) info() VolumeInfo {
	return VolumeInfo{Name: v.Name, ID: v.ID, CreatedAt: v.CreatedAt, Options: v.Options}
}

// snapRec is a snapshot's stored record.
type snapRec struct {
	CreatedAt time.Time `json:"created_at"`
	Node      uint32    `json:"node"`
	Auto      bool      `json:"auto,omitempty"` // taken by the scheduler: the only kind pruned (schedule.go)
}

// Open opens (creating if needed) the store in dir and reclaims orphaned inodes left by a dead process.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(false).
		WithDetectConflicts(false). // wmu serializes writers
		WithNumVersionsToKeep(1).
		WithValueThreshold(valueThreshold). // only chunk bodies may go to the value log
		WithValueLogFileSize(cmp.Or(opts.ValueLogFileSize, 64<<20)).
		WithMemTableSize(32 << 20).
		WithNumMemtables(3).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(32 << 20).
		// Checksums of SST blocks and value-log entries are checked on every read (damage.go
		// says what a mismatch does; Open checks every table first).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(!opts.noChecksums).
		WithInMemory(opts.InMemory)
	if opts.noChecksums {
		bo = bo.WithChecksumVerificationMode(options.NoVerification)
	}
	if opts.InMemory {
		bo.Dir, bo.ValueDir = "", ""
	} else if err := verifyTables(dir, bo, log); err != nil {
		return nil, fmt.Errorf("open store in %s: %w", dir, err)
	}
	db, err := openBadger(bo)
	if err != nil && !opts.InMemory && strings.Contains(err.Error(), z.NewFile.Error()) {
		// Killed between creating a value-log or memtable file and sizing it, Badger leaves an
		// empty file that it then refuses to open. Such a file holds nothing: drop it, retry.
		if rerr := removeEmptyLogs(dir); rerr != nil {
			return nil, fmt.Errorf("open store in %s: %w (cleaning up: %v)", dir, err, rerr)
		}
		db, err = openBadger(bo)
	}
	if err != nil {
		return nil, fmt.Errorf("open store in %s: %w", dir, openErr(err))
	}
	cod, err := newCodecs()
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, log: log, codecs: cod, nodes: map[uint32]nodeRec{}, vols: map[string]*volRec{}, anc: map[uint32][]uint32{},
		touched: map[touchKey]uint64{}}
	s.guard = newDiskGuard(dir, opts)
	s.inMemory = opts.InMemory
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.guarded("format upgrade", func() error { return s.upgradeFormat(ctx) }); err != nil {
		db.Close()
		return nil, err
	}
	if !opts.InMemory && opts.IntentLogSize >= 0 {
		if err := s.openIntents(ctx, dir, cmp.Or(opts.IntentLogSize, DefaultIntentLogSize)); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.reclaimAllOrphans(ctx, opts.KeepOrphans); err != nil {
		s.closeIntents()
		db.Close()
		return nil, err
	}
	bgctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	if s.intents != nil {
		s.bg.Add(1)
		go s.checkpointLoop(bgctx)
	}
	if opts.GCInterval >= 0 {
		every := opts.GCInterval
		if every == 0 {
			every = time.Minute
		}
		s.bg.Add(1)
		go s.gcLoop(bgctx, every)
	}
	return s, nil
}

// openBadger is badger.Open with a panic on damaged files (in Open's own goroutine) turned
// into ErrCorrupt.
func openBadger(bo badger.Options) (db *badger.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: storage engine panicked opening its files: %v", ErrCorrupt, p)
		}
	}()
	return badger.Open(bo)
}

// load fills the in-memory mirrors of nodes, volumes and allocators.
func (s *Store) load() (err error) {
	s.nextNode, s.nextTree = ^uint32(0), 1
	defer func() { err = engineErr(err) }()
	defer s.recoverInto("load", &err)
	return s.db.View(func(txn *badger.Txn) error {
		if err := scanPrefix(txn, []byte{pNode}, true, func(k, v []byte) error {
			n, err := decodeNode(v)
			if err != nil {
				return err
			}
			s.nodes[binary.BigEndian.Uint32(k[1:])] = n
			return nil
		}); err != nil {
			return err
		}
		if err := scanPrefix(txn, []byte{pVolume}, true, func(k, v []byte) error {
			var r volRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: volume record %q: %v", ErrCorrupt, k[1:], err)
			}
			s.vols[r.Name] = &r
			return nil
		}); err != nil {
			return err
		}
		for _, a := range []struct {
			name string
			dst  *uint32
		}{{"node", &s.nextNode}, {"tree", &s.nextTree}} {
			item, err := txn.Get(append([]byte{pAlloc}, a.name...))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if err := item.Value(func(v []byte) error {
				if len(v) != 4 {
					return fmt.Errorf("%w: bad %s allocator", ErrCorrupt, a.name)
				}
				*a.dst = binary.BigEndian.Uint32(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// scanPrefix calls fn for every key under prefix (values are loaded when withValues).
func scanPrefix(txn *badger.Txn, prefix []byte, withValues bool, fn func(k, v []byte) error) error {
	o := badger.DefaultIteratorOptions
	o.Prefix, o.PrefetchValues = prefix, withValues
	it := txn.NewIterator(o)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var v []byte
		if withValues {
			var err error
			if v, err = item.ValueCopy(nil); err != nil {
				return err
			}
		}
		if err := fn(item.KeyCopy(nil), v); err != nil {
			return err
		}
	}
	return nil
}

// Close stops background work, flushes and closes the store. Views become unusable (ErrClosed).
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stop()
	s.bg.Wait()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Live records stay in the log (every one was synced before its fsync returned): the next
	// Open settles them.
	s.closeIntents()
	if err := s.db.Sync(); err != nil {
		s.db.Close()
		return fmt.Errorf("sync store: %w", err)
	}
	return s.db.Close()
}

// Sync makes every committed change durable (fsync of Badger's files).
func (s *Store) Sync(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.syncDB()
}

// update runs fn in one write transaction under the write lock and commits it. Hooks registered
// with tx.onCommit run after a successful commit, still under the lock.
func (s *Store) update(ctx context.Context, fn func(t *tx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.updateLocked(ctx, fn)
}

// A panic of the storage engine in fn or in the commit (damage.go) is returned as ErrCorrupt;
// the transaction is discarded (Badger applies a commit only once it is written whole).
func (s *Store) updateLocked(ctx context.Context, fn func(t *tx) error) (err error) {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer func() { err = engineErr(err) }()
	defer s.recoverInto("write transaction", &err)
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	t := &tx{txn: txn, s: s, rw: true}
	defer t.closeIter()
	if err := fn(t); err != nil {
		return err
	}
	t.closeIter()
	if err := s.guard.ready(txn); err != nil { // full disk: see diskspace.go
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.noteCommit(t)
	if len(t.hooks) > 0 {
		s.mu.Lock()
		for _, h := range t.hooks {
			h()
		}
		s.mu.Unlock()
	}
	return nil
}

// view runs fn in a read-only transaction. A panic of the storage engine (damage.go) is
// returned as ErrCorrupt.
func (s *Store) view(fn func(t *tx) error) (err error) {
	if s.closed.Load() {
		return ErrClosed
	}
	defer func() { err = engineErr(err) }()
	defer s.recoverInto("read transaction", &err)
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	t := &tx{txn: txn, s: s}
	defer t.closeIter()
	return fn(t)
}

// ancestors returns the path from node to its root (node first). Callers hold s.mu.
func (s *Store) ancestorsLocked(node uint32) []uint32 {
	if a, ok := s.anc[node]; ok {
		return a
	}
	var a []uint32
	for n := node; n != 0; n = s.nodes[n].parent {
		a = append(a, n)
		if len(a) > len(s.nodes)+1 {
			break // a cycle would be corruption; fsck reports it
		}
	}
	s.anc[node] = a
	return a
}

// newNode allocates a node under parent (0 for a new tree root) and registers it on commit.
// IDs count down so that children sort before their parents. An ID taken by a transaction that
// then fails is simply never used.
func (t *tx) newNode(tree, parent uint32) (uint32, error) {
	s := t.s
	s.mu.Lock()
	id := s.nextNode
	s.nextNode--
	s.mu.Unlock()
	if id < 1<<20 {
		return 0, fmt.Errorf("%w: snapshot node IDs exhausted", ErrNoSpace)
	}
	rec := nodeRec{tree: tree, parent: parent}
	if err := t.set(nodeKey(id), encodeNode(rec)); err != nil {
		return 0, err
	}
	if err := t.set([]byte("Anode"), binary.BigEndian.AppendUint32(nil, id-1)); err != nil {
		return 0, err
	}
	t.onCommit(func() {
		s.nodes[id] = rec
		clear(s.anc)
	})
	return id, nil
}

// newTree allocates a snapshot-tree ID.
func (t *tx) newTree() (uint32, error) {
	s := t.s
	s.mu.Lock()
	id := s.nextTree
	s.nextTree++
	s.mu.Unlock()
	if err := t.set([]byte("Atree"), binary.BigEndian.AppendUint32(nil, id+1)); err != nil {
		return 0, err
	}
	return id, t.set(treeKey(id), binary.BigEndian.AppendUint64(nil, uint64(RootIno)+1))
}

// getJSON reads a JSON record; ErrNotFound when absent.
func (t *tx) getJSON(key []byte, dst any) error {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(v []byte) error {
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%w: record %q: %v", ErrCorrupt, key, err)
		}
		return nil
	})
}

func (t *tx) setJSON(key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.set(key, b)
}

func (t *tx) getUsage(node uint32) (Usage, error) {
	item, err := t.txn.Get(usageKey(node))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Usage{}, nil
	}
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	err = item.Value(func(v []byte) error { u, err = decodeUsage(v); return err })
	return u, err
}

func (t *tx) addUsage(node uint32, bytes, files int64) error {
	u, err := t.getUsage(node)
	if err != nil {
		return err
	}
	u.Bytes += bytes
	u.Files += files
	return t.set(usageKey(node), encodeUsage(u))
}

// badgerLogger sends Badger's logs to slog; its chatty info messages become debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug("badger: " + fmt.Sprintf(f, a...)) }

// sortedVolumes returns the in-memory volume records sorted by name. Callers hold s.mu.
func (s *Store) sortedVolumesLocked() []*volRec {
	out := make([]*volRec, 0, len(s.vols))
	for _, v := range s.vols {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func jsonDecode(v []byte, dst any) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%w: record: %v", ErrCorrupt, err)
	}
	return nil
}

// removeEmptyLogs deletes empty value-log and memtable files from a Badger directory.
func removeEmptyLogs(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if ext := filepath.Ext(e.Name()); (ext != vlogExt && ext != memExt) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
