package backend

// The intent log (package intentlog) in the store.
//
// An fsync of a file whose inode is already durable appends the file's buffered writes to the log
// and flushes only the log: one device flush, shared by concurrent fsyncs (View.LogWrites). The
// records stay in memory, live, until they are settled: applied to the file in a store transaction
// that also raises the file's log mark (key L volumeID 0x00 ino = the highest LSN applied). A
// record is live while its LSN is above the mark of its file.
//
// Invariants:
//   - Every transaction that changes a file's data or size settles the file's live records first,
//     in the same transaction (settleIn), so a record never lands on newer data: a replay after a
//     crash cannot undo a later commit.
//   - A snapshot settles its volume's records first, so it holds every fsynced write; a restore
//     voids them (the state they applied to is gone); records of a deleted volume are dropped.
//   - A segment is released only once every record in it is settled and the store synced; Open
//     settles every record the log returns before anything reads the store.
//   - Store.Sync covers every commit made before it started; concurrent Syncs share one flush.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/fusevol/fusevol/backend/intentlog"
)

// DefaultIntentLogSize is the size of each of the intent log's two segment files.
const DefaultIntentLogSize = 16 << 20

// maxLoggedBytes bounds one LogWrites call: bigger fsyncs commit their data to the store, where
// large writes cost no more than in the log and the log stays free for small ones.
const maxLoggedBytes = 4 << 20

// errNotLogged: the writes cannot go to the intent log (there is none, it is full, or they are
// too big).
var errNotLogged = errors.New("writes not logged")

// Write is file data at an offset, for LogWrites.
type Write struct {
	Off  uint64
	Data []byte
}

type fileKey struct {
	vol string // volume ID
	ino Ino
}

type intents struct {
	log  *intentlog.Log
	mu   sync.Mutex // guards live; taken under Store.mu by commit hooks, never the other way round
	live map[fileKey][]intentlog.Record
	// full counts fsyncs that found both segments busy (and synced the store instead) since
	// the last checkpoint's log line.
	full atomic.Int64
}

type touchKey struct {
	tree uint32
	ino  Ino
}

func logMarkKey(k fileKey) []byte {
	b := append(append([]byte{pLogMark}, k.vol...), 0)
	return binary.BigEndian.AppendUint64(b, uint64(k.ino))
}

// openIntents opens the store's intent log and settles what it holds (replay).
func (s *Store) openIntents(ctx context.Context, dir string, size int64) error {
	l, recs, err := intentlog.Open(filepath.Join(dir, "intent"), size)
	if err != nil {
		return err
	}
	in := &intents{log: l, live: map[fileKey][]intentlog.Record{}}
	for _, r := range recs {
		k := fileKey{r.Volume, Ino(r.Ino)}
		in.live[k] = append(in.live[k], r)
	}
	s.intents = in
	if len(recs) > 0 {
		s.log.Info("replaying the intent log", "records", len(recs))
	}
	// A log that lost its files would give out LSNs that marks already cover, and replay would
	// skip their records: start above the highest mark (the releases below make it durable).
	top, err := s.maxLogMark()
	if err != nil {
		l.Close()
		return fmt.Errorf("intent log: %w", err)
	}
	behind := top >= l.Next()
	if behind {
		s.log.Warn("intent log is behind the store's marks (replaced or lost?); skipping ahead", "mark", top, "next", l.Next())
		l.SkipTo(top + 1)
	}
	if len(recs) == 0 && !behind {
		// Both segments are empty already. The store is still synced once: a commit a killed
		// process left in the page cache must be durable before fsyncs skip the store's sync.
		if err := s.syncDB(); err != nil {
			l.Close()
			return err
		}
		return nil
	}
	if err := s.checkpoint(ctx, -1); err != nil {
		// A record that cannot be applied (a damaged chunk under it, say) stays in the log and
		// keeps its segment; the store opens and serves everything else, and fsyncs that find
		// the log full sync the store instead. The next Open tries again.
		s.log.Error("intent log: replay left records unapplied", "err", err)
	}
	return nil
}

// maxLogMark is the highest LSN any file's log mark holds.
func (s *Store) maxLogMark() (uint64, error) {
	var top uint64
	err := s.view(func(t *tx) error {
		return scanPrefix(t.txn, []byte{pLogMark}, true, func(k, v []byte) error {
			if len(v) == 8 {
				top = max(top, binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	return top, err
}

// checkpoint settles every live record, makes the store durable and releases segment seg (both
// when seg < 0).
func (s *Store) checkpoint(ctx context.Context, seg int) error {
	if err := s.settleAll(ctx); err != nil {
		return err
	}
	if err := s.syncDB(); err != nil {
		return err
	}
	for i := range 2 {
		if seg < 0 || i == seg {
			if err := s.intents.log.Release(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkpointLoop checkpoints each segment the log leaves, retrying failed ones now and then.
func (s *Store) checkpointLoop(ctx context.Context) {
	defer s.bg.Done()
	retry := time.NewTicker(checkpointRetry)
	defer retry.Stop()
	failed := -1
	for {
		seg := -1
		select {
		case <-ctx.Done():
			return
		case seg = <-s.intents.log.Full():
		case <-retry.C:
			seg = failed
		}
		if seg < 0 {
			continue
		}
		failed = -1
		start := time.Now()
		err := s.checkpoint(ctx, seg)
		// The bench harness's soak reads this line to tell which slow fsyncs met a checkpoint.
		s.log.Info("intent log checkpoint", "segment", seg, "took", time.Since(start).Round(time.Microsecond),
			"fsyncs_found_log_full", s.intents.full.Swap(0))
		if err != nil && ctx.Err() == nil {
			s.log.Error("intent log checkpoint failed; fsyncs sync the store until it succeeds", "segment", seg, "err", err)
			failed = seg
		}
	}
}

const checkpointRetry = 10 * time.Second

// settleAll settles every file with live records, each in its own transaction.
func (s *Store) settleAll(ctx context.Context) error {
	in := s.intents
	in.mu.Lock()
	keys := make([]fileKey, 0, len(in.live))
	for k := range in.live {
		keys = append(keys, k)
	}
	in.mu.Unlock()
	var errs []error
	for _, k := range keys {
		if err := s.settleFile(ctx, k); err != nil {
			errs = append(errs, fmt.Errorf("volume %s inode %d: %w", k.vol, k.ino, err))
		}
	}
	return errors.Join(errs...)
}

// settleFile settles one file's records at its volume's live node; records of a volume that no
// longer exists are dropped.
func (s *Store) settleFile(ctx context.Context, k fileKey) error {
	v := s.liveViewByID(k.vol)
	if v == nil {
		s.intents.drop(k, ^uint64(0))
		return nil
	}
	err := v.write(ctx, func(t *tx) error { return v.settleIn(t, k.ino) })
	if errors.Is(err, ErrNotFound) {
		s.intents.drop(k, ^uint64(0))
		return nil
	}
	return err
}

func (s *Store) liveViewByID(id string) *View {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, rec := range s.vols {
		if rec.ID == id {
			return &View{s: s, info: rec.info(), tree: rec.Tree}
		}
	}
	return nil
}

// settleVolume settles the records of every file of a volume (before a snapshot).
func (s *Store) settleVolume(ctx context.Context, id string) error {
	if s.intents == nil {
		return nil
	}
	for _, k := range s.intents.keys(id) {
		if err := s.settleFile(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// voidVolumeIn marks every live record of a volume as applied without applying it, in t (restore).
func (s *Store) voidVolumeIn(t *tx, id string) error {
	if s.intents == nil {
		return nil
	}
	for _, k := range s.intents.keys(id) {
		recs := s.intents.records(k)
		if len(recs) == 0 {
			continue
		}
		last := recs[len(recs)-1].LSN
		if err := t.set(logMarkKey(k), binary.BigEndian.AppendUint64(nil, last)); err != nil {
			return err
		}
		t.onCommit(func() { s.intents.drop(k, last) })
	}
	return nil
}

func (in *intents) keys(vol string) []fileKey {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []fileKey
	for k := range in.live {
		if k.vol == vol {
			out = append(out, k)
		}
	}
	return out
}

func (in *intents) records(k fileKey) []intentlog.Record {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.live[k])
}

// drop forgets the records of k up to LSN last.
func (in *intents) drop(k fileKey, last uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	rs := in.live[k]
	i := 0
	for i < len(rs) && rs[i].LSN <= last {
		i++
	}
	if i == len(rs) {
		delete(in.live, k)
	} else {
		in.live[k] = rs[i:]
	}
}

// logMark reads a file's log mark (0 when it has none).
func (t *tx) logMark(k fileKey) (uint64, error) {
	item, err := t.txn.Get(logMarkKey(k))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read log mark: %w", err)
	}
	var mark uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: log mark of %d bytes", ErrCorrupt, len(v))
		}
		mark = binary.BigEndian.Uint64(v)
		return nil
	})
	return mark, err
}

// settleIn applies the live records of ino to the view's live node inside t and raises the file's
// log mark. Their data was accepted (and reported durable) already, so the quota is not checked.
func (v *View) settleIn(t *tx, ino Ino) error {
	in := v.s.intents
	if in == nil {
		return nil
	}
	k := fileKey{v.info.ID, ino}
	recs := in.records(k)
	if len(recs) == 0 {
		return nil
	}
	mark, err := t.logMark(k)
	if err != nil {
		return err
	}
	last := recs[len(recs)-1].LSN
	for len(recs) > 0 && recs[0].LSN <= mark {
		recs = recs[1:]
	}
	t.onCommit(func() { in.drop(k, last) })
	if len(recs) == 0 {
		return nil
	}
	n, err := t.regular(ino)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrIsDir) {
		return nil // the file is gone: its records are moot
	}
	if err != nil {
		return err
	}
	if err := v.applyRecords(t, n, recs); err != nil {
		return err
	}
	return t.set(logMarkKey(k), binary.BigEndian.AppendUint64(nil, last))
}

// maxSettleExtentBytes bounds the extent bytes one settle adds to its transaction. Extents are
// stored in the LSM tree, and Badger refuses a transaction over 15% of a memtable (4.8 MiB), of
// which a commit's own chunks may take 4 MiB (fs batches up to 64 partial chunks of at most
// 64 KiB of extents): chunks beyond the bound are rewritten whole instead, their bodies going to
// the value log, so a file with thousands of live records still settles in one transaction.
const maxSettleExtentBytes = 256 << 10

// piece is the part of a record that falls into one chunk.
type piece struct {
	off  int
	data []byte
}

// applyRecords writes the records' data into n's chunks, in LSN order within each chunk so that
// later records win: as extents while they fit maxSettleExtentBytes (addExtent compacts a chunk
// whose extents pass their limits), else merged into the rewritten chunk. Rewriting every touched
// chunk whole made each settled 4 KiB record cost a 256 KiB body: 236 KB written to the store per
// random 4 KiB write+fsync against 22 KB with extents, and 2.8x the time per op
// (BenchmarkRandWriteFsync4K in fs).
func (v *View) applyRecords(t *tx, n *inode, recs []intentlog.Record) error {
	cs := uint64(v.ChunkSize())
	pieces := map[uint64][]piece{}
	size := n.Size
	for _, r := range recs {
		end := r.Off + uint64(len(r.Data))
		for pos := r.Off; pos < end; {
			idx, within := pos/cs, pos%cs
			k := min(cs-within, end-pos)
			pieces[idx] = append(pieces[idx], piece{int(within), r.Data[pos-r.Off : pos-r.Off+k]})
			pos += k
		}
		size = max(size, r.Size, end)
		n.Mtime, n.Ctime = r.Mtime, r.Mtime
	}
	budget := maxSettleExtentBytes
	var delta int64
	for _, idx := range slices.Sorted(maps.Keys(pieces)) {
		ps := pieces[idx]
		total := 0
		for _, p := range ps {
			total += len(p.data)
		}
		var d int64
		var err error
		if total <= budget {
			budget -= total
			d, err = v.settleExtents(t, n, idx, ps)
		} else {
			d, err = v.settleChunk(t, n, idx, ps)
		}
		if err != nil {
			return err
		}
		delta += d
	}
	n.Size = size
	return t.account(n, delta)
}

// settleExtents lays pieces over chunk idx as extents, in order.
func (v *View) settleExtents(t *tx, n *inode, idx uint64, ps []piece) (int64, error) {
	var delta int64
	for _, p := range ps {
		c := v.PrepareExtent(idx, p.off, p.data)
		d, err := v.addExtent(t, n, &c)
		if err != nil {
			return 0, err
		}
		delta += d
	}
	return delta, nil
}

// settleChunk merges pieces, in order, into chunk idx and commits it whole.
func (v *View) settleChunk(t *tx, n *inode, idx uint64, ps []piece) (int64, error) {
	buf := make([]byte, v.ChunkSize())
	got, err := v.readChunk(t, n, idx, buf)
	if err != nil {
		return 0, err
	}
	for _, p := range ps {
		got = max(got, p.off+copy(buf[p.off:], p.data))
	}
	c := v.PrepareChunk(idx, buf[:got])
	return t.setChunk(n, idx, &c)
}

// LogWrites makes writes to ino durable through the intent log; size and mtime are the file's
// after them. The store applies them later (or when anything else changes the file); until then
// the caller keeps serving them from its buffers. With no writes it only makes the file's
// committed state durable. logged is false when the writes cannot go to the log (there is none,
// it is full, or they are too big): the caller then commits the data and calls Sync.
func (v *View) LogWrites(ctx context.Context, ino Ino, size uint64, mtime int64, ws []Write) (logged bool, err error) {
	if v.ReadOnly() {
		return false, ErrReadOnly
	}
	s := v.s
	if s.closed.Load() {
		return false, ErrClosed
	}
	if len(ws) > 0 {
		// The records reach Badger's files when they settle: the disk guard admits them now.
		var n int64
		for _, w := range ws {
			n += int64(len(w.Data))
		}
		if err := v.admitData(n); err != nil {
			return false, err
		}
		err := s.appendIntents(v.info.ID, ino, size, mtime, ws)
		if errors.Is(err, errNotLogged) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	if s.touchedSinceSync(v.tree, ino) {
		return true, s.Sync(ctx)
	}
	return true, nil
}

func (s *Store) appendIntents(vol string, ino Ino, size uint64, mtime int64, ws []Write) error {
	in := s.intents
	if in == nil {
		return errNotLogged
	}
	total := 0
	recs := make([]intentlog.Record, len(ws))
	for i, w := range ws {
		total += len(w.Data)
		recs[i] = intentlog.Record{Volume: vol, Ino: uint64(ino), Off: w.Off, Size: size, Mtime: mtime,
			Data: slices.Clone(w.Data)}
	}
	if total > maxLoggedBytes {
		return errNotLogged
	}
	k := fileKey{vol, ino}
	in.mu.Lock()
	last, err := in.log.Append(recs)
	if err == nil {
		in.live[k] = append(in.live[k], recs...)
	}
	in.mu.Unlock()
	if err == nil {
		err = in.log.Sync(last)
	}
	if err != nil && !errors.Is(err, intentlog.ErrFull) {
		// A log that cannot be written is not a reason to fail the fsync: the store takes over.
		// (Records appended before the failure settle harmlessly under the commit that follows.)
		s.log.Error("intent log write failed; fsync syncs the store instead", "err", err)
	}
	if errors.Is(err, intentlog.ErrFull) {
		in.full.Add(1)
	}
	if err != nil {
		return errNotLogged
	}
	return nil
}

// touch records that t changed ino (made durable only by the next Sync).
func (t *tx) touch(ino Ino) { t.touched = append(t.touched, touchKey{t.tree, ino}) }

// untouch takes back t's changes of ino (the intent log holds them: CommitLoggedChunks). Changes
// of earlier, unsynced commits still count.
func (t *tx) untouch(ino Ino) {
	t.touched = slices.DeleteFunc(t.touched, func(k touchKey) bool { return k == touchKey{t.tree, ino} })
}

func (s *Store) noteCommit(t *tx) {
	seq := s.commitSeq.Add(1)
	if len(t.touched) == 0 {
		return
	}
	s.tmu.Lock()
	for _, k := range t.touched {
		s.touched[k] = seq
	}
	if len(s.touched) > maxTouched {
		// Without syncs the map would grow with every inode written: count them all as changed
		// until the next sync instead.
		s.touchedAll = seq
		clear(s.touched)
	}
	s.tmu.Unlock()
}

// maxTouched bounds the inodes Store.touched remembers between two syncs.
const maxTouched = 1 << 16

func (s *Store) touchedSinceSync(tree uint32, ino Ino) bool {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return s.touchedAll > s.syncedSeq || s.touched[touchKey{tree, ino}] > s.syncedSeq
}

// syncDB flushes Badger's files unless no commit happened since the last flush; concurrent
// callers share one.
func (s *Store) syncDB() error {
	target := s.commitSeq.Load()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.tmu.Lock()
	done := s.syncedSeq >= target && s.syncedOnce
	s.tmu.Unlock()
	if done {
		return nil
	}
	seq := s.commitSeq.Load()
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	s.syncedSeq, s.syncedOnce = seq, true
	for k, at := range s.touched {
		if at <= seq {
			delete(s.touched, k)
		}
	}
	return nil
}

func (s *Store) closeIntents() {
	if s.intents != nil {
		if err := s.intents.log.Close(); err != nil {
			s.log.Warn("close intent log", "err", err)
		}
	}
}

// volumeID is the ID of the named volume ("" when there is none).
func (s *Store) volumeID(name string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if rec, ok := s.vols[name]; ok {
		return rec.ID
	}
	return ""
}

// checkLogMarks is the fsck step for the intent log's marks: each names a volume ID and an
// inode and holds an LSN below the log's next one (else replay would skip new records).
func (s *Store) checkLogMarks(f *fsckState) func(*tx) error {
	return func(t *tx) error {
		var next uint64
		if s.intents != nil {
			next = s.intents.log.Next()
		}
		return scanPrefix(t.txn, []byte{pLogMark}, true, func(k, v []byte) error {
			vol, rest, ok := bytes.Cut(k[1:], []byte{0})
			switch {
			case !ok || len(vol) == 0 || len(rest) != 8:
				f.problem("intent log mark %q: malformed key", k)
			case len(v) != 8:
				f.problem("intent log mark of volume %s inode %d: %d-byte value", vol, beUint64(rest), len(v))
			case next != 0 && binary.BigEndian.Uint64(v) >= next:
				f.problem("intent log mark of volume %s inode %d is %d, not below the log's next LSN %d",
					vol, beUint64(rest), binary.BigEndian.Uint64(v), next)
			}
			return nil
		})
	}
}
