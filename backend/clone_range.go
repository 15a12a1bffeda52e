package backend

import (
	"context"
	"fmt"
)

// Reflink copies (copy_file_range(2)): a chunk of the destination that the copied range covers
// whole, at a source offset that is a chunk boundary too, gets the source chunk's chunk-map
// entry (one more reference on the same body) instead of a copy of its bytes; everything else
// (the partial chunks at the edges, and every chunk of a range whose offsets are not equally
// aligned) is copied as a write would copy it. Chunks are content-addressed and never changed in
// place, so the two files are independent at once: a later write of either one gives that file a
// new chunk and drops its reference on the shared one.
//
// A copy runs in batches, each one transaction that leaves a consistent file: a crash between
// them leaves the destination copied up to a batch boundary (its size grown only as far), as an
// interrupted write would.

// cloneShareBatch bounds the chunks a batch shares: each takes a few keys (chunk map, refcount,
// the extents it drops), and a transaction must stay within Badger's limits.
const cloneShareBatch = gcBatch / 2

// cloneCopyBytes bounds the bytes a batch copies (and holds in memory): bodies of small chunks
// stay in the LSM tree, and a transaction holds at most 15% of a memtable (32 MiB).
const cloneCopyBytes = 2 << 20

// clonePiece is the part of a copy that falls in one destination chunk.
type clonePiece struct {
	src, dst int64 // offsets in the source and destination files
	n        int64
	share    bool // a whole destination chunk at a chunk boundary of the source
}

// clonePieces cuts the first batch of a copy of n bytes from src to dst into pieces.
func clonePieces(cs, src, dst, n int64) []clonePiece {
	var out []clonePiece
	shared, copied := 0, int64(0)
	for done := int64(0); done < n; {
		s, d := src+done, dst+done
		k := min(cs-d%cs, n-done)
		p := clonePiece{src: s, dst: d, n: k, share: k == cs && d%cs == 0 && s%cs == 0}
		if p.share && shared == cloneShareBatch || !p.share && copied+k > cloneCopyBytes && len(out) > 0 {
			break
		}
		if p.share {
			shared++
		} else {
			copied += k
		}
		out = append(out, p)
		done += k
	}
	return out
}

// copiedBytes is what the pieces copy rather than share (what the disk guard must admit).
func copiedBytes(ps []clonePiece) int64 {
	var n int64
	for _, p := range ps {
		if !p.share {
			n += p.n
		}
	}
	return n
}

// CloneRange copies n bytes of the regular file src at srcOff to the regular file dst at dstOff,
// sharing the chunks it can (see above), and returns the bytes copied: fewer than n only when
// the source ends first (0 at or past its end) or when a later batch failed (the error says
// why; what the earlier batches copied stays). The destination grows to the end of the copy and
// its mtime and ctime are set; holes of the source stay holes. Ranges of one file that overlap
// are ErrInvalid, as copy_file_range(2) has it. Intent-log records of both files are settled
// first, so the copy sees every byte an fsync made durable. The quota is checked as for a
// write: shared chunks count as the destination's allocated bytes, though they take no space in
// the store.
func (v *View) CloneRange(ctx context.Context, src Ino, srcOff int64, dst Ino, dstOff int64, n int64) (int64, error) {
	return v.CloneRangeFrom(ctx, v, src, srcOff, dst, dstOff, n)
}

// CloneRangeFrom is CloneRange from a file of another view of the same store: a snapshot of
// the volume (to bring a file or part of one back without copying its bytes) or another
// volume. Views of other stores, or of another chunk size, are ErrNotSupp.
func (v *View) CloneRangeFrom(ctx context.Context, from *View, src Ino, srcOff int64, dst Ino, dstOff int64, n int64) (int64, error) {
	if srcOff < 0 || dstOff < 0 || n < 0 || srcOff > maxFileOffset-n || dstOff > maxFileOffset-n {
		return 0, fmt.Errorf("copy of %d bytes from %d to %d: %w", n, srcOff, dstOff, ErrInvalid)
	}
	if from.s != v.s || from.ChunkSize() != v.ChunkSize() {
		return 0, fmt.Errorf("copy from volume %q to %q: another store or chunk size: %w", from.info.Name, v.info.Name, ErrNotSupp)
	}
	var done int64
	for left := n; left > 0; {
		k, rest, err := v.cloneBatch(ctx, from, src, srcOff+done, dst, dstOff+done, left, done == 0)
		done += k
		if err != nil {
			return done, err
		}
		if k == 0 {
			break // the source ends here
		}
		left = rest
	}
	return done, nil
}

// maxFileOffset is the largest file offset (Linux's MAX_LFS_FILESIZE).
const maxFileOffset = 1<<63 - 1

// cloneSrc is the source of a copy inside the destination's transaction: its view, the
// transaction bound to that view's node (t itself when it is the destination's view), and its
// inode.
type cloneSrc struct {
	v *View
	t *tx
	n *inode
}

// sameView reports whether two views read and write the same node (one volume's live views).
func (v *View) sameView(o *View) bool {
	return o.s == v.s && o.info.ID == v.info.ID && o.snapNode == v.snapNode
}

// cloneBatch copies the first batch of the n bytes left of a copy in one transaction and returns
// the bytes it copied and the bytes left after it. The first batch shortens the copy to the
// source's end and then checks for overlap, in the kernel's order; a copy within one file that
// grows it must not copy what it copied.
func (v *View) cloneBatch(ctx context.Context, from *View, src Ino, srcOff int64, dst Ino, dstOff int64, n int64, first bool) (done, left int64, err error) {
	cs := int64(v.ChunkSize())
	if err := v.admitData(copiedBytes(clonePieces(cs, srcOff, dstOff, n))); err != nil {
		return 0, 0, err
	}
	same := v.sameView(from)
	err = v.write(ctx, func(t *tx) error {
		done, left = 0, n
		sc, dn, err := v.clonePair(t, from, src, dst)
		if err != nil {
			return err
		}
		defer sc.t.closeIter()
		size := int64(sc.n.Size)
		if srcOff >= size {
			return nil
		}
		m := min(n, size-srcOff)
		if first && same && src == dst && srcOff < dstOff+m && dstOff < srcOff+m {
			return fmt.Errorf("copy within inode %d: ranges overlap: %w", src, ErrInvalid)
		}
		if first {
			left = m
		}
		pieces := clonePieces(cs, srcOff, dstOff, m)
		chunks := make([]Chunk, 0, len(pieces))
		for _, p := range pieces {
			c, err := v.clonePiece(sc, p)
			if err != nil {
				return err
			}
			chunks = append(chunks, c)
			done += p.n
		}
		left -= done
		return v.commit(t, dn, chunks, uint64(dstOff+done))
	})
	if err != nil {
		return 0, 0, err
	}
	return done, left, nil
}

// clonePair settles and returns a copy's source and destination inode (one inode when they are
// the same file, so that the commit writes what the reads saw). The source of another view is
// read through a second transaction value on the same Badger transaction, bound to that view's
// node: the destination's writes go to its live node, which no other view sees. A snapshot has
// no intent-log records of its own (its volume's are the live node's), so only a live source
// is settled.
func (v *View) clonePair(t *tx, from *View, src, dst Ino) (cloneSrc, *inode, error) {
	dn, err := v.settled(t, dst)
	if err != nil {
		return cloneSrc{}, nil, err
	}
	if v.sameView(from) {
		if src == dst {
			return cloneSrc{v, t, dn}, dn, nil
		}
		sn, err := v.settled(t, src)
		return cloneSrc{v, t, sn}, dn, err
	}
	node, anc, err := from.target()
	if err != nil {
		return cloneSrc{}, nil, err
	}
	st := &tx{txn: t.txn, s: t.s}
	st.at(from.tree, node, anc)
	sc := cloneSrc{from, st, nil}
	if !from.ReadOnly() {
		if err := from.settleIn(st, src); err != nil {
			return sc, nil, err
		}
		t.hooks, t.touched = append(t.hooks, st.hooks...), append(t.touched, st.touched...) // t commits for st
	}
	sc.n, err = st.regular(src)
	return sc, dn, err
}

// clonePiece returns the destination's new content for one piece: the source chunk's own
// reference (or a hole) when the piece can share it, otherwise the source's bytes as a chunk or
// an extent. A source chunk with extents is merged and committed whole: a content-addressed chunk
// like any other, deduplicated against what the store holds.
func (v *View) clonePiece(sc cloneSrc, p clonePiece) (Chunk, error) {
	cs := int64(v.ChunkSize())
	idx := uint64(p.dst / cs)
	if p.share {
		c, ok, err := sharedChunk(sc, uint64(p.src/cs), idx)
		if err != nil || ok {
			return c, err
		}
	}
	buf := make([]byte, p.n)
	if err := sc.v.readRange(sc.t, sc.n, buf, p.src); err != nil {
		return Chunk{}, err
	}
	if p.n == cs {
		return v.PrepareChunk(idx, buf), nil
	}
	return v.PrepareExtent(idx, int(p.dst%cs), buf), nil
}

// sharedChunk returns chunk index of the source as destination chunk dst: a second reference on
// the same body, or a hole. ok is false when the chunk has extents (the caller copies its merged
// bytes).
func sharedChunk(sc cloneSrc, index, dst uint64) (Chunk, bool, error) {
	t, sn := sc.t, sc.n
	if sn.extents > 0 {
		exts, err := t.chunkExtents(sn.Ino, index, false)
		if err != nil || len(exts) > 0 {
			return Chunk{}, false, err
		}
	}
	ref, _, err := t.getChunk(sn.Ino, index)
	if err != nil {
		return Chunk{}, false, err
	}
	if ref == nil {
		return Chunk{Index: dst, n: sc.v.ChunkSize(), zero: true}, true, nil
	}
	// incref would store a missing body from the chunk's (empty) body: refuse instead.
	if _, ok, err := t.getRef(ref.hash); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("%w: inode %d chunk %d: chunk %x has no refcount", ErrCorrupt, sn.Ino, index, ref.hash[:8])
		}
		return Chunk{}, false, err
	}
	return Chunk{Index: dst, hash: ref.hash, n: int(ref.n)}, true, nil
}

// readRange fills dst with n's bytes at off, which the caller has bounded by n's size.
func (v *View) readRange(t *tx, n *inode, dst []byte, off int64) error {
	cs := int64(v.ChunkSize())
	buf := make([]byte, cs)
	for done := 0; done < len(dst); {
		pos := off + int64(done)
		if _, err := v.readChunk(t, n, uint64(pos/cs), buf); err != nil {
			return err
		}
		done += copy(dst[done:], buf[pos%cs:])
	}
	return nil
}
