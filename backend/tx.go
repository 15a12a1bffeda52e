package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// tx wraps a Badger transaction with the snapshot-visibility rule: reads of versioned metadata
// return the version that the view's node sees, writes go to the view's node.
type tx struct {
	txn   *badger.Txn
	s     *Store
	it    *badger.Iterator // lazily created; closed by every write (it would not see the write)
	hooks []func()
	// touched lists the inodes this transaction changed (see Store.touched).
	touched []touchKey
	// ext caches, in a write transaction, the visible extents of the chunks it looked at (see
	// chunkExtents); every change of extents in the transaction goes through it.
	ext map[extKey][]extent

	rw   bool // a write transaction
	tree uint32
	node uint32   // the node this transaction reads at and writes to
	anc  []uint32 // node and its ancestors, nearest first
}

// at binds the transaction to a node of a tree.
func (t *tx) at(tree, node uint32, anc []uint32) {
	t.tree, t.node, t.anc = tree, node, anc
}

func (t *tx) onCommit(f func()) { t.hooks = append(t.hooks, f) }

func (t *tx) closeIter() {
	if t.it != nil {
		t.it.Close()
		t.it = nil
	}
}

func (t *tx) iter() *badger.Iterator {
	if t.it == nil {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.AllVersions = true // see lookup
		o.Prefix = treePrefix(t.tree)
		t.it = t.txn.NewIterator(o)
	}
	return t.it
}

func (t *tx) set(k, v []byte) error {
	t.closeIter()
	if len(v) >= valueThreshold && k[0] != pBody {
		return fmt.Errorf("%w: a %d-byte value for key %q would go to the value log", ErrInvalid, len(v), k[:min(len(k), 6)])
	}
	if err := t.txn.Set(k, v); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// delete removes a key. Chunk bodies are never deleted this way (see sweepDead).
func (t *tx) delete(k []byte) error {
	if k[0] == pBody {
		return fmt.Errorf("%w: chunk body deleted outside sweepDead", ErrInvalid)
	}
	return t.deleteKey(k)
}

func (t *tx) deleteKey(k []byte) error {
	t.closeIter()
	if err := t.txn.Delete(k); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// isAncestor reports whether versions written at node n are visible from t.node.
func (t *tx) isAncestor(n uint32) bool {
	for _, a := range t.anc {
		if a == n {
			return true
		}
	}
	return false
}

// version is a metadata version found by lookup.
type version struct {
	val     []byte // nil when none is visible
	node    uint32
	skipped int // versions probe passed over (see probe)
}

func (v version) live() bool { return v.val != nil && v.val[0] == tagLive }

// lookup returns the visible version of a logical key; skip > 0 skips that many visible versions
// (skip=1 gives what the parent chain alone would show).
//
// The own node is probed with a point read: hot keys live there. Ancestors are then found by
// seeking: each seek lands on the key's first version at or above a candidate ancestor, and the next
// seek jumps straight to the next ancestor above that version. The iterator returns all MVCC
// versions, so no step ever walks over the old versions of a busy key that Badger still holds;
// the cost is one seek per version of this key on the way up, however deep the snapshot chain is.
func (t *tx) lookup(lkey []byte, skip int) (version, error) {
	if len(t.anc) == 0 {
		return version{}, nil
	}
	item, err := t.txn.Get(versionKey(lkey, t.anc[0]))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return version{}, fmt.Errorf("read: %w", err)
	case skip == 0:
		return itemVersion(item, t.anc[0])
	default:
		skip--
	}
	from := 1
	if t.rw {
		// A new iterator in a write transaction sorts all its pending writes, and every write
		// closes the iterator: probing near ancestors with point reads keeps big transactions
		// linear.
		v, n, err := t.probe(lkey, skip)
		if err != nil || v.val != nil || n == len(t.anc) {
			return v, err
		}
		from, skip = n, skip-v.skipped
	}
	it := t.iter()
	seek := versionKey(lkey, 0)
	for i := from; i < len(t.anc); {
		binary.BigEndian.PutUint32(seek[len(lkey):], t.anc[i])
		it.Seek(seek)
		if !it.Valid() {
			break
		}
		item := it.Item()
		k := item.Key()
		if len(k) != len(seek) || !bytes.HasPrefix(k, lkey) {
			break
		}
		n := binary.BigEndian.Uint32(k[len(lkey):])
		for i < len(t.anc) && t.anc[i] < n {
			i++
		}
		if i == len(t.anc) || t.anc[i] != n {
			continue // a version of another branch: seek on to the next ancestor above it
		}
		i++
		if item.IsDeletedOrExpired() {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		return itemVersion(item, n)
	}
	return version{}, nil
}

// writeProbes is how many ancestors a write transaction probes with point reads.
const writeProbes = 16

// probe looks for lkey at t.anc[1:writeProbes] with point reads. It returns the version found (if
// any) and the index of the first ancestor it did not probe; v.skipped counts versions it skipped.
func (t *tx) probe(lkey []byte, skip int) (version, int, error) {
	key := versionKey(lkey, 0)
	skipped := 0
	end := min(len(t.anc), writeProbes)
	for i := 1; i < end; i++ {
		binary.BigEndian.PutUint32(key[len(lkey):], t.anc[i])
		item, err := t.txn.Get(key)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			continue
		case err != nil:
			return version{}, 0, fmt.Errorf("read: %w", err)
		case skipped < skip:
			skipped++
			continue
		}
		v, err := itemVersion(item, t.anc[i])
		return v, i + 1, err
	}
	return version{skipped: skipped}, end, nil
}

func itemVersion(item *badger.Item, n uint32) (version, error) {
	v, err := item.ValueCopy(nil)
	if err != nil {
		return version{}, fmt.Errorf("read: %w", err)
	}
	if len(v) == 0 {
		return version{}, fmt.Errorf("%w: empty metadata value", ErrCorrupt)
	}
	return version{val: v, node: n}, nil
}

// put writes a live version of lkey at the transaction's node.
func (t *tx) put(lkey, val []byte) error { return t.set(versionKey(lkey, t.node), val) }

// remove makes lkey invisible from the transaction's node: the own version (if any) goes, and a
// whiteout is written if an ancestor still shows a live version.
func (t *tx) remove(lkey []byte) error {
	cur, err := t.lookup(lkey, 0)
	if err != nil || cur.val == nil {
		return err
	}
	below := cur
	if cur.node == t.node {
		if below, err = t.lookup(lkey, 1); err != nil {
			return err
		}
	}
	if below.live() {
		return t.put(lkey, []byte{tagWhiteout})
	}
	if cur.node == t.node {
		return t.delete(versionKey(lkey, t.node))
	}
	return nil
}

// scanVisible calls fn for each logical key under prefix (with its visible version), in key order.
// Logical keys are the versioned keys without their last 4 bytes. Whiteouts are passed too.
func (t *tx) scanVisible(prefix []byte, fn func(lkey []byte, v version) error) error {
	t.closeIter()
	return t.scanVisibleIn(t.txn, prefix, fn)
}

// scanVisibleIn is scanVisible in txn (which may be another transaction than t's).
func (t *tx) scanVisibleIn(txn *badger.Txn, prefix []byte, fn func(lkey []byte, v version) error) error {
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	o.Prefix = prefix
	it := txn.NewIterator(o)
	defer it.Close()
	var last []byte
	found := false
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) < len(prefix)+4 {
			continue
		}
		lk := k[:len(k)-4]
		if !bytes.Equal(lk, last) {
			last, found = append(last[:0], lk...), false
		}
		if found {
			continue
		}
		n := binary.BigEndian.Uint32(k[len(k)-4:])
		if !t.isAncestor(n) {
			continue
		}
		found = true
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if len(v) == 0 {
			return fmt.Errorf("%w: empty metadata value", ErrCorrupt)
		}
		if err := fn(append([]byte(nil), lk...), version{val: v, node: n}); err != nil {
			return err
		}
	}
	return nil
}

// getInode returns the visible inode; ErrNotFound when there is none.
func (t *tx) getInode(ino Ino) (*inode, error) {
	v, err := t.lookup(inodeLKey(t.tree, ino), 0)
	if err != nil {
		return nil, err
	}
	if !v.live() {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
	}
	return decodeInode(ino, v.val)
}

func (t *tx) putInode(n *inode) error {
	t.touch(n.Ino)
	return t.put(inodeLKey(t.tree, n.Ino), encodeInode(n))
}

// getDirent returns the child a name points at; ErrNotFound when absent.
func (t *tx) getDirent(dir Ino, name string) (Ino, uint32, error) {
	v, err := t.lookup(direntLKey(t.tree, dir, name), 0)
	if err != nil {
		return 0, 0, err
	}
	if !v.live() {
		return 0, 0, fmt.Errorf("%q: %w", name, ErrNotFound)
	}
	return decodeDirent(v.val)
}

// chunk-map helpers

func (t *tx) getChunk(ino Ino, index uint64) (*chunkRef, version, error) {
	v, err := t.lookup(chunkLKey(t.tree, ino, index), 0)
	if err != nil || !v.live() {
		return nil, v, err
	}
	r, err := decodeChunkRef(v.val)
	return &r, v, err
}

// setChunk points chunk index of n at c (nil makes it a hole), keeping refcounts exact, and drops
// the chunk's extents (n.extents counts them down; n is written by the caller). It returns the
// change in allocated bytes: the chunk's old length merged with its extents' goes.
func (t *tx) setChunk(n *inode, index uint64, c *Chunk) (int64, error) {
	ino := n.Ino
	lkey := chunkLKey(t.tree, ino, index)
	extEnd, err := t.dropExtents(n, index)
	if err != nil {
		return 0, err
	}
	old, v, err := t.getChunk(ino, index)
	if err != nil {
		return 0, err
	}
	delta := -int64(extEnd)
	if old != nil {
		delta = -int64(max(uint64(old.n), extEnd))
		if v.node == t.node {
			if err := t.decref(old.hash); err != nil {
				return 0, err
			}
		}
	}
	if c == nil || c.zero {
		if old != nil {
			return delta, t.remove(lkey)
		}
		return delta, nil
	}
	if err := t.incref(c); err != nil {
		return 0, err
	}
	return delta + int64(c.n), t.put(lkey, encodeChunkRef(chunkRef{c.hash, uint32(c.n)}))
}

func (t *tx) getRef(h Hash) (refVal, bool, error) {
	item, err := t.txn.Get(refKey(h))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return refVal{}, false, nil
	}
	if err != nil {
		return refVal{}, false, fmt.Errorf("read refcount: %w", err)
	}
	var r refVal
	err = item.Value(func(v []byte) error { r, err = decodeRef(v); return err })
	return r, err == nil, err
}

// incref takes a reference on c's chunk, storing its body with the first reference.
func (t *tx) incref(c *Chunk) error {
	r, ok, err := t.getRef(c.hash)
	if err != nil {
		return err
	}
	if !ok {
		stored, err := t.reviveOrStore(c)
		if err != nil {
			return err
		}
		r = refVal{plain: uint32(c.n), stored: stored}
	}
	r.count++
	return t.set(refKey(c.hash), encodeRef(r))
}

// decref drops a reference, deleting the body with the last one.
func (t *tx) decref(h Hash) error {
	r, ok, err := t.getRef(h)
	if err != nil {
		return err
	}
	if !ok || r.count == 0 {
		// Never block a deletion on accounting damage; fsck reports and repairs it.
		t.s.log.Warn("refcount underflow", "chunk", fmt.Sprintf("%x", h[:8]))
		return nil
	}
	r.count--
	if r.count == 0 {
		if err := t.delete(refKey(h)); err != nil {
			return err
		}
		return t.markDead(h, r.stored)
	}
	return t.set(refKey(h), encodeRef(r))
}

// markDead queues the body of a chunk that lost its last reference for sweepDead, which deletes it
// outside any value-log rewrite. Until then the body stays, and a new first reference revives it.
func (t *tx) markDead(h Hash, stored uint32) error {
	return t.set(deadKey(h), binary.BigEndian.AppendUint32(nil, stored))
}

// reviveOrStore gives a chunk without references its body and returns the body's stored length:
// a body queued for deletion (the same plain bytes, by its hash, though perhaps encoded by another
// codec) is taken back; otherwise c's body is written.
func (t *tx) reviveOrStore(c *Chunk) (uint32, error) {
	item, err := t.txn.Get(deadKey(c.hash))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return uint32(len(c.body)), t.set(bodyKey(c.hash), c.body)
	case err != nil:
		return 0, fmt.Errorf("read dead-body marker: %w", err)
	}
	var stored uint32
	if err := item.Value(func(v []byte) error {
		if len(v) != 4 {
			return fmt.Errorf("%w: dead-body marker of chunk %x", ErrCorrupt, c.hash[:8])
		}
		stored = binary.BigEndian.Uint32(v)
		return nil
	}); err != nil {
		return 0, err
	}
	return stored, t.delete(deadKey(c.hash))
}
