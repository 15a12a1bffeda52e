package backend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/zeebo/blake3"
	"lukechampine.com/blake3/bao"
)

// Tree bodies: a chunk stored uncompressed carries the Bao outboard of its BLAKE3 tree, so that a
// part of it can be verified against the chunk's address without hashing the rest.
//
// Layout (codec byte codecTree):
//
//	[codecTree] [group] [outboard: plain length (8 bytes LE), 32-byte chaining values in pre-order] [plain bytes]
//
// group is log2 of the BLAKE3 chunks (1 KiB) per Bao group; the outboard's root is the BLAKE3-256
// hash of the plain bytes, so the chunk's address, refcounts and dedup are those of any other
// body of the same bytes. Bodies written before tree bodies (codecNone) and compressed bodies are
// verified whole. The outboard is only trusted through the root: a damaged outboard fails a part
// read with ErrCorrupt (fsck recomputes it), it can never make wrong bytes pass.
const codecTree = 3

// treeGroup is the group exponent new bodies are written with: 16 KiB groups are one AVX-512 batch
// of BLAKE3 chunks (hashing a 4 KiB group costs as much), and their outboard is 0.4% of a chunk.
const treeGroup = 4

// GroupSize is the span ReadChunkPart verifies for new bodies: reads within one group verify
// GroupSize bytes, not the chunk.
const GroupSize = 1024 << treeGroup

// maxTreeGroup bounds the group byte of a body (4 MiB chunks are 2^12 BLAKE3 chunks).
const maxTreeGroup = 12

// encodeTree returns a tree body of plain and plain's BLAKE3-256 hash, computed in the same pass.
func encodeTree(plain []byte) ([]byte, Hash) {
	ob, root := bao.EncodeBuf(plain, treeGroup, true)
	body := make([]byte, 0, 2+len(ob)+len(plain))
	body = append(append(append(body, codecTree, treeGroup), ob...), plain...)
	return body, root
}

// treeBody is a parsed tree body; its slices alias the body.
type treeBody struct {
	group    int
	outboard []byte
	plain    []byte
}

// parseTree splits a tree body, checking only that its parts fit together.
func parseTree(body []byte) (treeBody, error) {
	if len(body) < 10 || body[0] != codecTree {
		return treeBody{}, fmt.Errorf("%w: short tree body", ErrCorrupt)
	}
	g := int(body[1])
	if g > maxTreeGroup {
		return treeBody{}, fmt.Errorf("%w: tree body group %d", ErrCorrupt, g)
	}
	n := binary.LittleEndian.Uint64(body[2:10])
	if n == 0 || n > MaxChunkSize {
		return treeBody{}, fmt.Errorf("%w: tree body of %d bytes", ErrCorrupt, n)
	}
	obLen := bao.EncodedSize(int(n), g, true)
	if len(body) != 2+obLen+int(n) {
		return treeBody{}, fmt.Errorf("%w: tree body of %d bytes holds %d", ErrCorrupt, n, len(body))
	}
	return treeBody{group: g, outboard: body[2 : 2+obLen], plain: body[2+obLen:]}, nil
}

// verifyPart checks plain[lo:hi) (hi clamped to the plain length), widened to whole groups,
// against root.
func (b treeBody) verifyPart(lo, hi int, root Hash) bool {
	gs := 1024 << b.group
	lo = lo / gs * gs
	hi = min((hi+gs-1)/gs*gs, len(b.plain))
	if lo >= hi {
		return true // nothing stored there: the caller reads zeros
	}
	return bao.VerifyChunk(b.plain[lo:hi], b.outboard, b.group, uint64(lo), root)
}

// checkTree verifies a whole tree body against h, outboard included (fsck).
func checkTree(body []byte, h Hash) bool {
	b, err := parseTree(body)
	if err != nil {
		return false
	}
	ob, root := bao.EncodeBuf(b.plain, b.group, true)
	return root == h && string(ob) == string(b.outboard)
}

// ReadChunkPart fills dst with bytes [off, off+len(dst)) of chunk index of ino (zeros past its
// stored end), reading and verifying only the groups of the chunk's tree that overlap them, with
// the chunk's extents laid over them as a whole read does. ok is false, with dst untouched, when
// the chunk cannot be verified in part (its body is compressed or older than tree bodies): the
// caller then reads it with ReadChunk.
func (v *View) ReadChunkPart(ctx context.Context, ino Ino, index uint64, off int, dst []byte) (ok bool, err error) {
	if off < 0 || off+len(dst) > v.ChunkSize() {
		return false, fmt.Errorf("%w: %d bytes at %d of a %d-byte chunk", ErrInvalid, len(dst), off, v.ChunkSize())
	}
	err = v.read(func(t *tx) error {
		in, err := t.getInode(ino)
		if errors.Is(err, ErrNotFound) {
			in, err = &inode{Attr: Attr{Ino: ino}}, nil
		}
		if err != nil {
			return err
		}
		ref, _, err := t.getChunk(ino, index)
		if err != nil {
			return err
		}
		ok = true
		if ref == nil {
			clear(dst)
		} else {
			ok, err = t.readBodyPart(ref, off, dst)
		}
		if err == nil && ok && in.extents != 0 {
			err = overlayPart(t, in, index, off, dst, v.ChunkSize())
		}
		if err != nil {
			v.s.log.Error("chunk integrity error", "volume", v.info.Name, "snapshot", v.snapName, "ino", ino, "chunk", index, "err", err)
			return fmt.Errorf("volume %q inode %d chunk %d: %w", v.info.Name, ino, index, err)
		}
		return nil
	})
	return ok, err
}

// overlayPart lays the chunk's extents (checksums verified, in seq order: later ones win) over
// dst, which holds bytes [off, off+len(dst)) of the chunk.
func overlayPart(t *tx, n *inode, index uint64, off int, dst []byte, cs int) error {
	exts, err := t.chunkExtents(n.Ino, index, true)
	if err != nil {
		return err
	}
	for i := range exts {
		e := &exts[i]
		if e.end() > uint64(cs) {
			return fmt.Errorf("%w: inode %d chunk %d extent %d at %d of %d bytes passes the chunk", ErrCorrupt, n.Ino, index, e.seq, e.off, len(e.data))
		}
		lo, hi := max(int(e.off), off), min(int(e.end()), off+len(dst))
		if lo < hi {
			copy(dst[lo-off:hi-off], e.data[lo-int(e.off):])
		}
	}
	return nil
}

// readBodyPart is readBody for [off, off+len(dst)) of a tree body; false for any other body.
// Only the pages of the value log under the groups read are touched: Badger hands out value-log
// values as slices of its memory map.
func (t *tx) readBodyPart(ref *chunkRef, off int, dst []byte) (bool, error) {
	item, err := t.txn.Get(bodyKey(ref.hash))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, fmt.Errorf("%w: chunk %x is missing", ErrCorrupt, ref.hash[:8])
	}
	if err != nil {
		return false, fmt.Errorf("%w: chunk %x: %v", ErrCorrupt, ref.hash[:8], err)
	}
	ok := false
	err = item.Value(func(body []byte) error {
		if len(body) == 0 || body[0] != codecTree {
			return nil
		}
		b, err := parseTree(body)
		if err != nil {
			return err
		}
		if len(b.plain) < int(ref.n) {
			return fmt.Errorf("%w: chunk %x is shorter than its reference", ErrCorrupt, ref.hash[:8])
		}
		stored := b.plain[:ref.n]
		if !b.verifyPart(off, off+len(dst), ref.hash) {
			return fmt.Errorf("%w: chunk %x does not match its hash", ErrCorrupt, ref.hash[:8])
		}
		ok = true
		n := 0
		if off < len(stored) {
			n = copy(dst, stored[off:])
		}
		clear(dst[n:])
		return nil
	})
	return ok, err
}

// verifyBody reports whether a stored body holds the bytes of h; for a tree body, with the
// outboard its part reads rely on (fsck). buf is scratch of MaxChunkSize bytes.
func (c *codecs) verifyBody(body []byte, h Hash, buf []byte) bool {
	if len(body) > 0 && body[0] == codecTree {
		return checkTree(body, h)
	}
	out, err := c.decode(body, buf)
	return err == nil && blake3.Sum256(out) == h
}
