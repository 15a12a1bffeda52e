package backend

import (
	"fmt"
	"math"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Extents: small writes without a read-modify-write of the whole chunk (see the package doc).
//
// A partial-chunk commit (PrepareExtent) stores the written bytes as an extent of the chunk, a
// metadata version M tree 'e' ino index seq node; reads lay a chunk's visible extents over its
// chunk-map content in seq order. A settled intent-log record adds its pieces as extents the
// same way. Any other change of the chunk (a whole-chunk commit, truncation, punch or zero range)
// drops them in its transaction. An extent that would make
// the chunk hold more than maxExtents extents, or more than a quarter of a chunk of extent bytes,
// compacts instead: the chunk and its extents are merged and committed as one content-addressed
// chunk in the same transaction.

// maxExtents is the most extents one chunk holds before a commit compacts it.
const maxExtents = 16

// maxExtentBytes caps extentBytesLimit so that an extent's value stays below valueThreshold: the
// value log must hold nothing but chunk bodies.
const maxExtentBytes = 64 << 10

// extentBytesLimit is the most extent bytes one chunk of cs bytes holds before a commit compacts
// it: a quarter of the chunk, at most maxExtentBytes.
func extentBytesLimit(cs int) int { return min(cs/4, maxExtentBytes) }

// extent is a visible extent of a chunk.
type extent struct {
	seq  uint32
	off  uint32
	data []byte
	lkey []byte
	val  []byte // the stored value (data aliases it)
}

// extKey names a chunk's extents as one node of a tree sees them.
type extKey struct {
	tree, node uint32
	ino        Ino
	index      uint64
}

func (e *extent) end() uint64 { return uint64(e.off) + uint64(len(e.data)) }

// PrepareExtent makes a partial-chunk commit: data written at offset off of chunk index, to be
// laid over the chunk's content by CommitChunks. Pure CPU (a checksum and a copy).
func (v *View) PrepareExtent(index uint64, off int, data []byte) Chunk {
	c := Chunk{Index: index, ext: true, off: off, n: len(data)}
	if off < 0 || off > MaxChunkSize {
		c.off = -1 // refused by CommitChunks
		return c
	}
	c.body = encodeExtent(uint32(off), data)
	return c
}

// IsExtent reports whether the chunk is a partial-chunk commit made by PrepareExtent.
func (c *Chunk) IsExtent() bool { return c.ext }

// end is the offset within the chunk after the chunk's new content.
func (c *Chunk) end() int {
	if c.ext {
		return c.off + c.n
	}
	return c.n
}

// chunkExtents returns the extents of chunk index of ino that the transaction's node sees, in the
// order they apply (seq ascending). verify checks their checksums.
//
// A write transaction scans a chunk's extents once, in a read-only transaction of the same state
// (writers hold the store's write lock, so nothing commits in between): an iterator of the write
// transaction itself would sort all its pending writes each time, which makes settling many log
// records quadratic. It then keeps them in t.ext, which addExtent and dropExtents keep current.
func (t *tx) chunkExtents(ino Ino, index uint64, verify bool) ([]extent, error) {
	var exts []extent
	var err error
	k := extKey{t.tree, t.node, ino, index}
	if cached, ok := t.ext[k]; ok {
		exts = cached
	} else if !t.rw {
		exts, err = t.scanExtents(t.txn, ino, index)
	} else {
		ro := t.s.db.NewTransaction(false)
		exts, err = t.scanExtents(ro, ino, index)
		ro.Discard()
		if err == nil {
			if t.ext == nil {
				t.ext = map[extKey][]extent{}
			}
			t.ext[k] = exts
		}
	}
	if err != nil || !verify {
		return exts, err
	}
	for i := range exts {
		if _, _, err := decodeExtent(exts[i].val, true); err != nil {
			return nil, fmt.Errorf("inode %d chunk %d extent %d: %w", ino, index, exts[i].seq, err)
		}
	}
	return exts, nil
}

// setExtents records the chunk's extents after a change made in t.
func (t *tx) setExtents(ino Ino, index uint64, exts []extent) {
	if t.ext == nil {
		t.ext = map[extKey][]extent{}
	}
	t.ext[extKey{t.tree, t.node, ino, index}] = exts
}

func (t *tx) scanExtents(txn *badger.Txn, ino Ino, index uint64) ([]extent, error) {
	prefix := extentChunkPrefix(t.tree, ino, index)
	var out []extent
	err := t.scanVisibleIn(txn, prefix, func(lkey []byte, ver version) error {
		if !ver.live() {
			return nil
		}
		seq := beUint32(lkey[len(prefix):])
		off, data, err := decodeExtent(ver.val, false)
		if err != nil {
			return fmt.Errorf("inode %d chunk %d extent %d: %w", ino, index, seq, err)
		}
		out = append(out, extent{seq: seq, off: off, data: data, lkey: lkey, val: ver.val})
		return nil
	})
	return out, err
}

// extentChunks lists the indices of ino's chunks that have visible extents, ascending.
func (t *tx) extentChunks(ino Ino) ([]uint64, error) {
	var out []uint64
	prefix := metaKind(t.tree, kExtent, ino)
	err := t.scanVisible(prefix, func(lkey []byte, ver version) error {
		if ver.live() {
			if i := beUint64(lkey[len(prefix):]); len(out) == 0 || out[len(out)-1] != i {
				out = append(out, i)
			}
		}
		return nil
	})
	return out, err
}

// dataChunks lists the indices of n's chunks that hold data (a chunk-map entry or extents).
func (t *tx) dataChunks(n *inode) ([]uint64, error) {
	idxs, err := t.visibleChunks(n.Ino)
	if err != nil || n.extents == 0 {
		return idxs, err
	}
	more, err := t.extentChunks(n.Ino)
	if err != nil {
		return nil, err
	}
	idxs = append(idxs, more...)
	slices.Sort(idxs)
	return slices.Compact(idxs), nil
}

// dropExtents makes the extents of a chunk invisible (deleting own versions, whiting out an
// ancestor's) and returns the end of the highest one (0 when there are none).
func (t *tx) dropExtents(n *inode, index uint64) (uint64, error) {
	if n.extents == 0 {
		return 0, nil
	}
	exts, err := t.chunkExtents(n.Ino, index, false)
	if err != nil {
		return 0, err
	}
	var end uint64
	for i := range exts {
		end = max(end, exts[i].end())
		if err := t.remove(exts[i].lkey); err != nil {
			return 0, err
		}
		n.extents = max(n.extents, 1) - 1
	}
	if len(exts) > 0 || t.rw {
		t.setExtents(n.Ino, index, []extent{})
	}
	return end, nil
}

// addExtent lays extent c over its chunk, or compacts the chunk when the extent would pass the
// limits. It returns the change in allocated bytes; n is written by the caller.
func (v *View) addExtent(t *tx, n *inode, c *Chunk) (int64, error) {
	cs := v.ChunkSize()
	exts, err := t.chunkExtents(n.Ino, c.Index, false)
	if err != nil {
		return 0, err
	}
	ref, _, err := t.getChunk(n.Ino, c.Index)
	if err != nil {
		return 0, err
	}
	var oldEnd uint64
	if ref != nil {
		oldEnd = uint64(ref.n)
	}
	lo, hi := uint64(c.off), uint64(c.end())
	var covered []int
	kept, keptBytes, seq := 0, 0, uint32(0)
	for i := range exts {
		e := &exts[i]
		oldEnd = max(oldEnd, e.end())
		seq = max(seq, e.seq)
		if uint64(e.off) >= lo && e.end() <= hi {
			covered = append(covered, i)
			continue
		}
		kept++
		keptBytes += len(e.data)
	}
	if kept+1 > maxExtents || keptBytes+c.n > extentBytesLimit(cs) || seq == math.MaxUint32 {
		return v.compact(t, n, c)
	}
	after := make([]extent, 0, kept+1)
	for i := range exts {
		if len(covered) > 0 && covered[0] == i {
			covered = covered[1:]
			if err := t.remove(exts[i].lkey); err != nil {
				return 0, err
			}
			n.extents = max(n.extents, 1) - 1
			continue
		}
		after = append(after, exts[i])
	}
	lkey := extentLKey(t.tree, n.Ino, c.Index, seq+1)
	if err := t.put(lkey, c.body); err != nil {
		return 0, err
	}
	n.extents++
	t.setExtents(n.Ino, c.Index, append(after, extent{seq: seq + 1, off: uint32(c.off), data: c.body[extentHeader:], lkey: lkey, val: c.body}))
	return int64(max(oldEnd, hi)) - int64(oldEnd), nil
}

// compact merges chunk c.Index of n, its extents and extent c into one content-addressed chunk
// and commits it in place of them all. Returns the change in allocated bytes.
func (v *View) compact(t *tx, n *inode, c *Chunk) (int64, error) {
	buf := make([]byte, v.ChunkSize())
	got, err := v.readChunk(t, n, c.Index, buf)
	if err != nil {
		return 0, err
	}
	copy(buf[c.off:], c.body[extentHeader:])
	merged := v.PrepareChunk(c.Index, buf[:max(got, c.end())])
	return t.setChunk(n, c.Index, &merged)
}

// overlayExtents lays the visible extents of chunk index of n over dst (which holds the chunk's
// first length bytes) and returns the merged length.
func (v *View) overlayExtents(t *tx, n *inode, index uint64, dst []byte, length int) (int, error) {
	exts, err := t.chunkExtents(n.Ino, index, true)
	if err != nil {
		return 0, err
	}
	for i := range exts {
		e := &exts[i]
		if e.end() > uint64(len(dst)) {
			return 0, fmt.Errorf("%w: inode %d chunk %d extent %d at %d of %d bytes passes the chunk", ErrCorrupt, n.Ino, index, e.seq, e.off, len(e.data))
		}
		copy(dst[e.off:], e.data)
		length = max(length, int(e.end()))
	}
	return length, nil
}
