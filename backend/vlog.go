package backend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The value log holds chunk bodies and nothing else (see vlogGC for why). A chunk that loses its
// last reference gets a dead-body marker, D hash → stored length, in the same transaction; its
// body stays until sweepDead deletes body and marker together, and a new first reference before
// that revives the body (reviveOrStore). sweepDead adds what it deleted to sweptKey, which tells
// background GC when a compaction is worth it; being stored, the count survives restarts.

var (
	sweptKey  = []byte{pAlloc, 's', 'w', 'e', 'p', 't'}
	formatKey = []byte{pAlloc, 'f', 'o', 'r', 'm', 'a', 't'}
)

// storeFormat 2: every value but chunk bodies is below valueThreshold (format 1 had a 1 KiB
// threshold, so large xattrs and extents went to the value log).
const storeFormat = 2

// sweepBatch bounds the dead bodies one sweep transaction deletes, so that writers waiting for
// the write lock wait for little.
const sweepBatch = 256

func be64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// sweepDead deletes the bodies of chunks that lost their last reference. Only GC calls it, under
// gcMu, never while a value-log rewrite runs. The markers are found by a read transaction, batch by
// batch from where the last one ended: the prefix holds the tombstones of every marker swept since
// the last compaction, and scanning them under the write lock held writers off for seconds.
func (s *Store) sweepDead(ctx context.Context) error {
	from := []byte{pDead}
	for {
		var keys [][]byte
		if err := s.view(func(t *tx) error {
			var err error
			keys, from, err = deadMarkers(t.txn, from, sweepBatch)
			return err
		}); err != nil {
			return fmt.Errorf("sweep dead chunk bodies: %w", err)
		}
		if len(keys) > 0 {
			var swept uint64 // of the last attempt: a transaction that conflicted runs again
			if err := s.update(ctx, func(t *tx) (err error) { swept, err = t.sweep(keys); return err }); err != nil {
				return fmt.Errorf("sweep dead chunk bodies: %w", err)
			}
			s.gcSwept.Add(int64(swept))
		}
		if from == nil {
			return nil
		}
	}
}

// deadMarkers returns up to limit dead-body markers at or after from and the key to continue at
// (nil when done).
func deadMarkers(txn *badger.Txn, from []byte, limit int) ([][]byte, []byte, error) {
	o := badger.DefaultIteratorOptions
	o.Prefix, o.PrefetchValues = []byte{pDead}, false
	it := txn.NewIterator(o)
	defer it.Close()
	var keys [][]byte
	for it.Seek(from); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		if len(keys) == limit {
			return keys, k, nil
		}
		keys = append(keys, k)
	}
	return keys, nil, nil
}

// sweep deletes the bodies that the markers keys name, with the markers, and returns their bytes as
// stored. A marker gone since it was found (the body was revived) is skipped; one whose chunk has a
// refcount again (which reviveOrStore prevents) loses only the marker.
func (t *tx) sweep(keys [][]byte) (uint64, error) {
	var swept uint64
	for _, k := range keys {
		item, err := t.txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return 0, err
		}
		if len(k) != 1+HashSize || len(v) != 4 {
			return 0, fmt.Errorf("%w: dead-body marker %x", ErrCorrupt, k)
		}
		var h Hash
		copy(h[:], k[1:])
		if _, live, err := t.getRef(h); err != nil {
			return 0, err
		} else if !live {
			if err := t.deleteKey(bodyKey(h)); err != nil {
				return 0, err
			}
			swept += uint64(binary.BigEndian.Uint32(v))
		}
		if err := t.delete(k); err != nil {
			return 0, err
		}
	}
	if swept == 0 {
		return 0, nil
	}
	prev, err := getUint64(t.txn, sweptKey)
	if err != nil {
		return 0, err
	}
	return swept, t.set(sweptKey, be64(prev+swept))
}

// sweptBytes is how many body bytes were swept since the last full compaction.
func (s *Store) sweptBytes() (uint64, error) {
	var n uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		n, err = getUint64(txn, sweptKey)
		return err
	})
	return n, err
}

// getUint64 reads a 64-bit counter; a missing key is 0.
func getUint64(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %q: %w", key[1:], err)
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: counter %q has %d bytes", ErrCorrupt, key[1:], len(v))
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

// compact compacts every level so that swept bodies' tombstones meet the pointers they delete and
// Badger counts the garbage; with memtable it first flushes the memtable, holding writers off for
// the flush (idle and explicit passes only). Writers do not wait for the compaction itself.
func (s *Store) compact(memtable bool) error {
	if memtable {
		s.wmu.Lock()
		err := s.flushMemtableLocked()
		s.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	return s.flatten()
}

func (s *Store) flatten() error {
	if err := s.db.Flatten(2); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// flushPrefix is a key prefix nothing uses (see flushMemtableLocked).
const flushPrefix = "\xffflush"

// flushMemtableLocked writes Badger's memtable to a level-0 table. DropPrefix flushes the
// memtable, but only when some key has the prefix, hence the marker key. Badger refuses writes
// while it drops (ErrBlockedWrites), so the caller holds the write lock.
func (s *Store) flushMemtableLocked() error {
	if err := s.guard.ready(nil); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(flushPrefix), nil) })
	if err == nil {
		err = s.db.DropPrefix([]byte(flushPrefix))
	}
	if err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	return nil
}

// rewriteValueLog lets Badger rewrite up to max value-log files, each at least ratio garbage
// (a rewrite moves the rest of the file: the higher the ratio, the less it writes per byte freed).
func (s *Store) rewriteValueLog(ctx context.Context, max int, ratio float64) error {
	for i := 0; i < max && ctx.Err() == nil; i++ {
		// Badger writes the rewrite's entries outside our commits: the guard allocates its
		// files first, as it does before a commit (diskspace.go).
		if err := s.guard.ready(nil); err != nil {
			return err
		}
		err := s.db.RunValueLogGC(ratio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("value-log gc: %w", err)
		}
		s.rewrites.Add(1)
	}
	return ctx.Err()
}

// legacyRewrite is how many bytes of chunk bodies must have been swept before a background pass
// of the legacy GC runs: about one value-log file's worth, below which stopping writers for the
// rewrite costs more than it returns.
const legacyRewrite = 64 << 20

// legacyVlogGC is the value-log GC of a store that still holds metadata in its value log: a delete
// of such a key during a rewrite could resurrect it, so writers are held off throughout, after a
// full compaction that makes every tombstone meet the value it deletes. Background passes run it
// once 64 MiB were swept.
func (s *Store) legacyVlogGC(ctx context.Context, mode gcMode) error {
	swept, err := s.sweptBytes()
	if err != nil || mode != gcExplicit && swept < legacyRewrite {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.updateLocked(ctx, func(t *tx) error { return t.set(sweptKey, be64(0)) }); err != nil {
		return err
	}
	if err := s.flushMemtableLocked(); err != nil {
		return err
	}
	if err := s.flatten(); err != nil {
		return err
	}
	return s.rewriteValueLog(ctx, explicitRewrites, rewriteRatio)
}

// upgradeFormat moves a format-1 store's metadata values out of the value log by writing each
// again (below valueThreshold it now goes to the LSM tree; its old value-log copy is garbage). A
// value too large for that (an extent of a chunk bigger than 256 KiB, written by format 1) keeps the
// store in legacy GC until a later Open finds none. Runs at Open, before anything else writes.
func (s *Store) upgradeFormat(ctx context.Context) error {
	var format uint64
	if err := s.db.View(func(txn *badger.Txn) error {
		var err error
		format, err = getUint64(txn, formatKey)
		return err
	}); err != nil {
		return err
	}
	if format >= storeFormat {
		return nil
	}
	moved, oversized, err := s.moveMetadataToLSM(ctx)
	if err != nil {
		return fmt.Errorf("upgrade store format: %w", err)
	}
	if oversized > 0 {
		s.legacy.Store(true)
		s.log.Warn("store keeps metadata in its value log: value-log GC holds writers off while it runs",
			"values", oversized)
		return nil
	}
	if moved > 0 {
		s.log.Info("moved metadata values out of the value log", "values", moved)
	}
	return s.update(ctx, func(t *tx) error { return t.set(formatKey, be64(storeFormat)) })
}

// moveMetadataToLSM rewrites every non-body value of legacyValueThreshold bytes or more, batch by
// batch, and counts those too large to leave the value log.
func (s *Store) moveMetadataToLSM(ctx context.Context) (moved, oversized int, err error) {
	var from []byte
	for {
		var keys [][]byte
		if err := s.db.View(func(txn *badger.Txn) error {
			var err error
			keys, from, err = largeValueKeys(txn, from, sweepBatch)
			return err
		}); err != nil {
			return moved, oversized, err
		}
		if err := s.update(ctx, func(t *tx) error {
			for _, k := range keys {
				item, err := t.txn.Get(k)
				if err != nil {
					return err
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if len(v) >= valueThreshold {
					oversized++
					continue
				}
				if err := t.set(k, v); err != nil {
					return err
				}
				moved++
			}
			return nil
		}); err != nil {
			return moved, oversized, err
		}
		if from == nil {
			return moved, oversized, nil
		}
	}
}

// largeValueKeys returns up to limit keys at or after from whose values are large enough to be
// in the value log, skipping chunk bodies, and the key to continue at (nil when done).
func largeValueKeys(txn *badger.Txn, from []byte, limit int) ([][]byte, []byte, error) {
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	it := txn.NewIterator(o)
	defer it.Close()
	var keys [][]byte
	for it.Seek(from); it.Valid(); it.Next() {
		item := it.Item()
		if item.Key()[0] == pBody {
			if it.Seek([]byte{pBody + 1}); !it.Valid() {
				break
			}
			item = it.Item()
		}
		if item.ValueSize() < legacyValueThreshold {
			continue
		}
		if len(keys) == limit {
			return keys, item.KeyCopy(nil), nil
		}
		keys = append(keys, item.KeyCopy(nil))
	}
	return keys, nil, nil
}
