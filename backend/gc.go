package backend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// gcBatch bounds the keys one background transaction touches, so that GC never holds the write
// lock for long and never exceeds Badger's transaction limits.
const gcBatch = 2000

// reclaim frees an orphan (an inode with nlink 0) at the view's live node: its own chunk-map
// and extent versions go batch by batch, then the inode, its xattrs, its entries (a removed
// directory's whiteouts) and its orphan marker in a final transaction. Anything else is left
// alone. Interrupted, it resumes at the next Open.
func (s *Store) reclaim(ctx context.Context, v *View, ino Ino) error {
	for {
		done := false
		err := v.write(ctx, func(t *tx) error {
			n, err := t.getInode(ino)
			if errors.Is(err, ErrNotFound) || err == nil && n.Nlink > 0 {
				done = true
				return nil
			}
			if err != nil {
				return err
			}
			if o, err := t.lookup(orphanLKey(t.tree, ino), 0); err != nil || !o.live() {
				done = true
				return err
			}
			more, err := t.dropOwnData(ino, kChunk, gcBatch)
			if err == nil && !more {
				more, err = t.dropOwnData(ino, kExtent, gcBatch)
			}
			if err != nil || more {
				return err
			}
			done = true
			for _, kind := range []byte{kDirent, kXattr} {
				if err := t.dropOwn(metaKind(t.tree, kind, ino)); err != nil {
					return err
				}
			}
			for _, lk := range [][]byte{inodeLKey(t.tree, ino), orphanLKey(t.tree, ino)} {
				if err := t.remove(lk); err != nil {
					return err
				}
			}
			return t.addUsage(t.node, -int64(n.alloc), -1)
		})
		if err != nil {
			return fmt.Errorf("reclaim inode %d of %q: %w", ino, v.info.Name, err)
		}
		if done {
			return nil
		}
	}
}

// dropOwnData deletes up to limit chunk-map (kind kChunk) or extent (kExtent) versions of ino
// written at the transaction's node, releasing chunk references. It reports whether more remain.
func (t *tx) dropOwnData(ino Ino, kind byte, limit int) (bool, error) {
	type kv struct{ k, v []byte }
	var own []kv
	prefix := metaKind(t.tree, kind, ino)
	t.closeIter()
	err := scanPrefix(t.txn, prefix, true, func(k, v []byte) error {
		if beUint32(k[len(k)-4:]) == t.node {
			own = append(own, kv{k, v})
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	more := len(own) > limit
	if more {
		own = own[:limit]
	}
	for _, e := range own {
		if err := t.dropVersion(e.k, e.v); err != nil {
			return false, err
		}
	}
	return more, nil
}

// dropVersion deletes a metadata version, releasing its chunk reference if it is a live chunk-map entry.
func (t *tx) dropVersion(k, v []byte) error {
	if k[5] == kChunk && len(v) > 0 && v[0] == tagLive {
		ref, err := decodeChunkRef(v)
		if err != nil {
			return err
		}
		if err := t.decref(ref.hash); err != nil {
			return err
		}
	}
	return t.delete(k)
}

// reclaimAllOrphans frees the orphans of every volume but those keep names: at Open nothing
// can hold them open, unless a mount of the volume outlived the process that served it.
func (s *Store) reclaimAllOrphans(ctx context.Context, keep func(volume string) bool) error {
	s.mu.RLock()
	vols := s.sortedVolumesLocked()
	s.mu.RUnlock()
	for _, rec := range vols {
		if keep != nil && keep(rec.Name) {
			continue
		}
		if err := s.reclaimOrphans(ctx, rec.Name); err != nil {
			return err
		}
	}
	return nil
}

// ReclaimOrphans frees the orphans (inodes with no links) of a volume's live state. Only call
// it when nothing can hold them open: the daemon does once a resumed mount of the volume
// (Options.KeepOrphans) is unmounted.
func (s *Store) ReclaimOrphans(ctx context.Context, volume string) error {
	return s.reclaimOrphans(ctx, volume)
}

// reclaimOrphans frees the orphans a volume's live state shows. Only call it when nothing can
// hold them open: at Open, and for a clone or restore, which inherit a snapshot's orphans.
func (s *Store) reclaimOrphans(ctx context.Context, volume string) error {
	v, err := s.OpenVolume(ctx, volume)
	if err != nil {
		return err
	}
	var orphans []Ino
	prefix := append(treePrefix(v.tree), kOrphan)
	if err := v.read(func(t *tx) error {
		return t.scanVisible(prefix, func(lkey []byte, ver version) error {
			if ver.live() {
				orphans = append(orphans, Ino(beUint64(lkey[len(prefix):])))
			}
			return nil
		})
	}); err != nil {
		return err
	}
	for _, ino := range orphans {
		if err := s.reclaim(ctx, v, ino); err != nil {
			return err
		}
	}
	if len(orphans) > 0 {
		s.log.Info("reclaimed orphaned inodes", "volume", volume, "count", len(orphans))
	}
	return nil
}

// gcLoop runs GC periodically until ctx ends.
func (s *Store) gcLoop(ctx context.Context, every time.Duration) {
	defer s.bg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := s.commitSeq.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// Idle: nothing but GC itself committed since the last pass.
			mode := gcBusy
			if s.commitSeq.Load() == last {
				mode = gcIdle
			}
			if err := s.guarded("gc", func() error { return s.gc(ctx, mode) }); err != nil && ctx.Err() == nil {
				s.log.Warn("background gc", "err", err)
			}
			last = s.commitSeq.Load()
		}
	}
}

// GC drops the keys of deleted snapshots and volumes (merging nodes that still have one child),
// deletes the bodies of unreferenced chunks, then compacts and rewrites the value log until nothing
// is left to rewrite, so disk space comes back now.
func (s *Store) GC(ctx context.Context) error {
	return s.guarded("gc", func() error { return s.gc(ctx, gcExplicit) })
}

// gcMode says how much a GC pass may do.
type gcMode int

const (
	// gcBusy, a background pass while the store is being written: compactions never hold writers
	// off, so the last swept bodies may wait for a later pass.
	gcBusy gcMode = iota
	// gcIdle, a background pass of a store nobody wrote to since the last one: the memtable flush
	// that holds Badger's writes off for a moment holds off no one.
	gcIdle
	// gcExplicit, Store.GC: everything, now.
	gcExplicit
)

// Value-log files one GC pass rewrites at most: background passes stay short, an explicit GC runs
// until Badger finds nothing left. A busy pass rewrites one file, and only one that is at least half
// garbage: each rewrite writes up to a whole value-log file through Badger beside the writers, and
// the fsync soak saw most of its slowest fsyncs during the four rewrites busy passes used to make.
const (
	busyRewrites       = 1
	busyRewriteRatio   = 0.5
	backgroundRewrites = 4
	explicitRewrites   = 100
	rewriteRatio       = 0.3
)

// gc collects dead snapshot nodes, sweeps dead bodies and runs the value-log part (vlogGC).
func (s *Store) gc(ctx context.Context, mode gcMode) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	defer s.logPass(mode, time.Now(), s.rewrites.Load())
	for {
		n, ok, err := s.pickDeadNode()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := s.collectNode(ctx, n); err != nil {
			return err
		}
	}
	if err := s.sweepDead(ctx); err != nil {
		return err
	}
	return s.vlogGC(ctx, mode)
}

// logPass counts a GC pass and logs it if it took long enough to matter to a writer's latency
// (the benchmark's fsync soak reads these lines to tell GC's stalls from others).
func (s *Store) logPass(mode gcMode, start time.Time, rewrites int64) {
	took := time.Since(start)
	s.gcPasses.Add(1)
	s.gcNanos.Add(int64(took))
	if took >= 10*time.Millisecond {
		s.log.Info("gc pass", "mode", mode.String(), "rewrites", s.rewrites.Load()-rewrites, "took", took)
	}
}

// GCStats counts the GC passes since Open, background and explicit (for metrics).
type GCStats struct {
	Passes   int64
	Rewrites int64         // value-log files rewritten
	Swept    int64         // bytes of chunk bodies deleted, as stored (the disk gets them back as rewrites go)
	Time     time.Duration // spent in passes (writers do not wait for them)
}

// GCStats returns the GC counters.
func (s *Store) GCStats() GCStats {
	return GCStats{Passes: s.gcPasses.Load(), Rewrites: s.rewrites.Load(), Swept: s.gcSwept.Load(),
		Time: time.Duration(s.gcNanos.Load())}
}

func (m gcMode) String() string { return [...]string{"busy", "idle", "explicit"}[m] }

// vlogGC returns swept bodies' space to the disk: Badger learns that a value is garbage only when
// compaction drops the key pointing at it, and frees a value-log file only by rewriting its live
// values elsewhere. Writers never wait for any of it.
//
// Badger v4.9's rewrite writes a still-present value back under its old version, above the
// levels. A delete of that key made while the rewrite runs would lose to it: the tombstone can
// reach the bottom level first, where compaction drops it, and the deleted key comes back
// (badger#2286; Badger's own fix only holds the tombstone while the rewrite runs). Here nothing
// but chunk bodies ever reaches the value log (t.set enforces valueThreshold), and a body is
// deleted only by sweepDead, which runs under gcMu like this rewrite: no delete can meet a
// rewrite. A set may (a body revived, a new one), and Badger's reads and compactions order
// versions correctly whatever level holds them.
func (s *Store) vlogGC(ctx context.Context, mode gcMode) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.inMemory {
		return nil
	}
	if s.legacy.Load() {
		return s.legacyVlogGC(ctx, mode)
	}
	swept, err := s.sweptBytes()
	if err != nil {
		return err
	}
	// A busy pass does not compact: a full compaction takes seconds of both cores and of the disk,
	// and the fsync soak (bench) measured writers' tail latencies three times as often over 100 ms
	// during one. Badger's own compactions still move the tombstones down while the store is
	// written, so a busy pass only rewrites what they have found to be garbage; the first idle
	// pass (a minute without writes) or an explicit GC compacts and reclaims the rest.
	if mode == gcExplicit || mode == gcIdle && swept > 0 {
		if err := s.compact(true); err != nil {
			return err
		}
		if err := s.update(ctx, func(t *tx) error { return t.set(sweptKey, be64(0)) }); err != nil {
			return err
		}
	}
	switch mode {
	case gcExplicit:
		return s.rewriteValueLog(ctx, explicitRewrites, rewriteRatio)
	case gcIdle:
		return s.rewriteValueLog(ctx, backgroundRewrites, rewriteRatio)
	}
	return s.rewriteValueLog(ctx, busyRewrites, busyRewriteRatio)
}

// referencedNodes returns the nodes that volumes and snapshots point at.
func (s *Store) referencedNodes() (map[uint32]bool, error) {
	var refs map[uint32]bool
	err := s.view(func(t *tx) error {
		var err error
		refs, err = referencedIn(t)
		return err
	})
	return refs, err
}

// referencedIn returns the nodes that volumes and snapshots point at, as t sees them.
func referencedIn(t *tx) (map[uint32]bool, error) {
	refs := map[uint32]bool{}
	err := func() error {
		if err := scanPrefix(t.txn, []byte{pVolume}, true, func(k, v []byte) error {
			var r volRec
			if err := jsonDecode(v, &r); err != nil {
				return err
			}
			refs[r.Head] = true
			return nil
		}); err != nil {
			return err
		}
		return scanPrefix(t.txn, []byte{pSnapshot}, true, func(k, v []byte) error {
			var r snapRec
			if err := jsonDecode(v, &r); err != nil {
				return err
			}
			refs[r.Node] = true
			return nil
		})
	}()
	return refs, err
}

// pickDeadNode finds a node nothing references that has at most one child.
func (s *Store) pickDeadNode() (uint32, bool, error) {
	refs, err := s.referencedNodes()
	if err != nil {
		return 0, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	children := map[uint32]int{}
	for _, n := range s.nodes {
		children[n.parent]++
	}
	for id := range s.nodes {
		if !refs[id] && children[id] <= 1 {
			return id, true, nil
		}
	}
	return 0, false, nil
}

// collectNode drops a dead node's keys (no child) or merges them into its only child, batch by
// batch, then unlinks the node. Until the unlink, the child still reads through the node, so every
// intermediate state is consistent.
func (s *Store) collectNode(ctx context.Context, id uint32) error {
	for {
		more := false
		err := s.update(ctx, func(t *tx) error {
			s.mu.RLock()
			rec, ok := s.nodes[id]
			child, nchild := uint32(0), 0
			for cid, n := range s.nodes {
				if n.parent == id {
					child, nchild = cid, nchild+1
				}
			}
			s.mu.RUnlock()
			if !ok || nchild > 1 {
				return nil
			}
			// pickDeadNode looked without the write lock: a snapshot, clone or restore may have
			// made this node a volume's head or a snapshot since.
			if refs, err := referencedIn(t); err != nil || refs[id] {
				return err
			}
			t.tree = rec.tree
			var err error
			more, err = t.moveNodeKeys(id, child, gcBatch)
			if err != nil || more {
				return err
			}
			return t.unlinkNode(id, rec, child)
		})
		if err != nil {
			return fmt.Errorf("collect snapshot node %d: %w", id, err)
		}
		if !more {
			return nil
		}
	}
}

// moveNodeKeys moves up to limit metadata keys of node into child (dropping those the child
// overrides); with child == 0 it drops them. Dropped chunk-map versions release their references.
func (t *tx) moveNodeKeys(node, child uint32, limit int) (bool, error) {
	type kv struct{ k, v []byte }
	var keys []kv
	t.closeIter()
	err := scanPrefix(t.txn, treePrefix(t.tree), false, func(k, _ []byte) error {
		if len(keys) <= limit && beUint32(k[len(k)-4:]) == node {
			keys = append(keys, kv{k: k})
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	for _, e := range keys {
		item, err := t.txn.Get(e.k)
		if err != nil {
			return false, err
		}
		if e.v, err = item.ValueCopy(nil); err != nil {
			return false, err
		}
		keep := false
		if child != 0 {
			_, err := t.txn.Get(versionKey(e.k[:len(e.k)-4], child))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				keep = true
			case err != nil:
				return false, err
			}
		}
		if keep {
			if err := t.set(versionKey(e.k[:len(e.k)-4], child), e.v); err != nil {
				return false, err
			}
			if err := t.delete(e.k); err != nil {
				return false, err
			}
		} else if err := t.dropVersion(e.k, e.v); err != nil {
			return false, err
		}
	}
	return more, nil
}

// unlinkNode removes a node whose keys are gone, reparenting its only child.
func (t *tx) unlinkNode(id uint32, rec nodeRec, child uint32) error {
	s := t.s
	if child != 0 {
		s.mu.RLock()
		c := s.nodes[child]
		s.mu.RUnlock()
		c.parent = rec.parent
		if err := t.set(nodeKey(child), encodeNode(c)); err != nil {
			return err
		}
		t.onCommit(func() { s.nodes[child] = c })
	}
	for _, k := range [][]byte{nodeKey(id), usageKey(id)} {
		if err := t.delete(k); err != nil {
			return err
		}
	}
	t.onCommit(func() {
		delete(s.nodes, id)
		clear(s.anc)
	})
	return nil
}
