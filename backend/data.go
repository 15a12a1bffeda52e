package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// zeros is a read-only all-zero chunk used to detect holes.
var zeros = make([]byte, MaxChunkSize)

// Body codecs: the first byte of a stored chunk body (codecTree, blocks.go, is what new
// uncompressed bodies use; codecNone bodies are read, never written any more).
const (
	codecNone = 0
	codecS2   = 1
	codecZstd = 2
)

// codecs compresses and decompresses chunk bodies; one per store.
type codecs struct {
	zenc *zstd.Encoder
	zdec *zstd.Decoder
}

func newCodecs() (*codecs, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	return &codecs{zenc: enc, zdec: dec}, nil
}

// encode returns the stored form of a chunk and its hash: compressed only when that saves space,
// otherwise a tree body (hashed as it is built, so its outboard costs no second pass).
func (c *codecs) encode(compression string, plain []byte) ([]byte, Hash) {
	var body []byte
	switch compression {
	case "s2":
		body = append([]byte{codecS2}, s2.Encode(nil, plain)...)
	case "zstd":
		body = c.zenc.EncodeAll(plain, []byte{codecZstd})
	}
	if body != nil && len(body) < len(plain)+1 {
		return body, blake3.Sum256(plain)
	}
	return encodeTree(plain)
}

// decode writes the plain bytes of a stored body into dst and returns them.
func (c *codecs) decode(body, dst []byte) ([]byte, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty chunk body", ErrCorrupt)
	}
	switch body[0] {
	case codecNone:
		return dst[:copy(dst, body[1:])], nil
	case codecTree:
		b, err := parseTree(body)
		if err != nil {
			return nil, err
		}
		if len(b.plain) > len(dst) {
			return nil, fmt.Errorf("%w: chunk body of %d bytes", ErrCorrupt, len(b.plain))
		}
		return dst[:copy(dst, b.plain)], nil
	case codecS2:
		n, err := s2.DecodedLen(body[1:])
		if err != nil || n > len(dst) {
			return nil, fmt.Errorf("%w: chunk body does not decode", ErrCorrupt)
		}
		out, err := s2.Decode(dst[:n], body[1:])
		if err != nil {
			return nil, fmt.Errorf("%w: chunk body does not decode: %v", ErrCorrupt, err)
		}
		return out, nil
	case codecZstd:
		out, err := c.zdec.DecodeAll(body[1:], dst[:0])
		if err != nil || len(out) > len(dst) {
			return nil, fmt.Errorf("%w: chunk body does not decode", ErrCorrupt)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown chunk codec %d", ErrCorrupt, body[0])
}

// Chunk is the new content of one chunk, hashed (and compressed) by PrepareChunk outside any
// transaction so that the CPU work can run in parallel before CommitChunks.
type Chunk struct {
	Index uint64
	hash  Hash
	body  []byte // stored form (of an extent: its value)
	n     int    // plain length (of an extent: its data's)
	zero  bool   // all zeros: a hole
	ext   bool   // an extent (PrepareExtent) at off
	off   int
}

// Len is the plain length of the chunk (of an extent: of its data).
func (c *Chunk) Len() int { return c.n }

// PrepareChunk hashes (and compresses) data, which must be at most ChunkSize bytes. Pure CPU; the
// chunk does not keep data.
func (v *View) PrepareChunk(index uint64, data []byte) Chunk {
	c := Chunk{Index: index, n: len(data)}
	if bytes.Equal(data, zeros[:len(data)]) {
		c.zero = true
		return c
	}
	c.body, c.hash = v.s.codecs.encode(v.options().Compression, data)
	return c
}

// CommitChunks replaces whole chunks of ino in one transaction. The file grows to at least
// minSize (pass 0 to keep the size unless a chunk extends past it); mtime and ctime are set to now.
func (v *View) CommitChunks(ctx context.Context, ino Ino, chunks []Chunk, minSize uint64) (Attr, error) {
	return v.commitChunks(ctx, ino, chunks, minSize, false)
}

// CommitLoggedChunks is CommitChunks for chunks whose every byte is in the store already or in
// the intent log (an fsync logged it, LogWrites): a crash before the next store sync loses
// nothing the log does not replay, so the commit does not count as a change of ino that the
// file's next fsync would have to sync the store for. The caller vouches for that; claiming it
// for bytes no fsync logged would make a later fsync return before they are durable.
func (v *View) CommitLoggedChunks(ctx context.Context, ino Ino, chunks []Chunk, minSize uint64) (Attr, error) {
	return v.commitChunks(ctx, ino, chunks, minSize, true)
}

func (v *View) commitChunks(ctx context.Context, ino Ino, chunks []Chunk, minSize uint64, logged bool) (Attr, error) {
	cs := v.ChunkSize()
	for i := range chunks {
		if c := &chunks[i]; c.end() > cs || c.off < 0 {
			return Attr{}, fmt.Errorf("%w: chunk of %d bytes at %d exceeds the chunk size %d", ErrInvalid, c.n, c.off, cs)
		}
	}
	var n int64
	for i := range chunks {
		n += int64(chunks[i].Len())
	}
	if err := v.admitData(n); err != nil {
		return Attr{}, err
	}
	var a Attr
	err := v.write(ctx, func(t *tx) error {
		n, err := v.settled(t, ino)
		if err != nil {
			return err
		}
		if err := v.commit(t, n, chunks, minSize); err != nil {
			return err
		}
		if logged {
			t.untouch(ino)
		}
		a = n.Attr
		return nil
	})
	return a, err
}

// Settle applies the intent-log records of ino to the store now, in a transaction of its own, and
// returns the file's attributes. Their data was admitted when it was logged (quota and disk
// guard), so neither is checked again: the write-back calls it when a commit of logged data
// failed, so that what fsync made durable is what reads find, not just what a restart replays.
func (v *View) Settle(ctx context.Context, ino Ino) (Attr, error) {
	var a Attr
	err := v.write(ctx, func(t *tx) error {
		n, err := v.settled(t, ino)
		if err == nil {
			a = n.Attr
		}
		return err
	})
	return a, err
}

// settled applies the intent-log records of the regular file ino in t and returns its inode.
func (v *View) settled(t *tx, ino Ino) (*inode, error) {
	if err := v.settleIn(t, ino); err != nil {
		return nil, err
	}
	return t.regular(ino)
}

// regular returns a regular file's inode.
func (t *tx) regular(ino Ino) (*inode, error) {
	n, err := t.getInode(ino)
	if err != nil {
		return nil, err
	}
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return n, nil
	case syscall.S_IFDIR:
		return nil, fmt.Errorf("inode %d: %w", ino, ErrIsDir)
	}
	return nil, fmt.Errorf("inode %d is not a regular file: %w", ino, ErrInvalid)
}

// commit applies chunks to n inside t, enforcing the quota, and writes n.
func (v *View) commit(t *tx, n *inode, chunks []Chunk, minSize uint64) error {
	cs := uint64(v.ChunkSize())
	var delta int64
	size := n.Size
	for i := range chunks {
		c := &chunks[i]
		var d int64
		var err error
		if c.ext {
			d, err = v.addExtent(t, n, c)
		} else {
			d, err = t.setChunk(n, c.Index, c)
		}
		if err != nil {
			return err
		}
		delta += d
		if end := c.Index*cs + uint64(c.end()); end > size { // a hole chunk extends the file too
			size = end
		}
	}
	size = max(size, minSize)
	if err := v.checkQuota(t, delta); err != nil {
		return err
	}
	ts := now()
	n.Size, n.Mtime, n.Ctime = size, ts, ts
	return t.account(n, delta)
}

// checkQuota fails with ErrNoSpace when growing by delta allocated bytes would pass the quota.
func (v *View) checkQuota(t *tx, delta int64) error {
	limit := v.QuotaLimit()
	if limit <= 0 || delta <= 0 {
		return nil
	}
	u, err := t.getUsage(t.node)
	if err != nil {
		return err
	}
	if u.Bytes+delta > limit {
		return fmt.Errorf("volume %q: %d of %d bytes used: %w", v.info.Name, u.Bytes, limit, ErrNoSpace)
	}
	return nil
}

// account adds delta allocated bytes to n and its node's usage, and writes n.
func (t *tx) account(n *inode, delta int64) error {
	if delta < 0 && uint64(-delta) > n.alloc {
		delta = -int64(n.alloc)
	}
	n.alloc = uint64(int64(n.alloc) + delta)
	n.Blocks = (n.alloc + 511) / 512
	if delta != 0 {
		if err := t.addUsage(t.node, delta, 0); err != nil {
			return err
		}
	}
	return t.putInode(n)
}

// ReadChunk fills dst (len >= ChunkSize) with chunk index of ino and returns the chunk's stored
// length (0 for a hole). The rest of dst, up to ChunkSize, is zeroed.
func (v *View) ReadChunk(ctx context.Context, ino Ino, index uint64, dst []byte) (int, error) {
	var n int
	err := v.read(func(t *tx) error {
		in, err := t.getInode(ino)
		if errors.Is(err, ErrNotFound) {
			in, err = &inode{Attr: Attr{Ino: ino}}, nil
		}
		if err != nil {
			return err
		}
		n, err = v.readChunk(t, in, index, dst)
		return err
	})
	return n, err
}

// readChunk fills dst with chunk index of n: its chunk-map content overlaid with its extents
// (looked for only when n has any). It returns the merged length.
func (v *View) readChunk(t *tx, n *inode, index uint64, dst []byte) (int, error) {
	cs := v.ChunkSize()
	if len(dst) < cs {
		return 0, fmt.Errorf("%w: buffer of %d bytes for a %d-byte chunk", ErrInvalid, len(dst), cs)
	}
	dst = dst[:cs]
	ino := n.Ino
	ref, _, err := t.getChunk(ino, index)
	if err != nil {
		clear(dst)
		return 0, err
	}
	length := 0
	if ref != nil {
		if err := t.readBody(ref, dst); err != nil {
			v.s.log.Error("chunk integrity error", "volume", v.info.Name, "snapshot", v.snapName, "ino", ino, "chunk", index, "err", err)
			return 0, fmt.Errorf("volume %q inode %d chunk %d: %w", v.info.Name, ino, index, err)
		}
		length = int(ref.n)
	}
	clear(dst[length:])
	if n.extents == 0 {
		return length, nil
	}
	length, err = v.overlayExtents(t, n, index, dst, length)
	if err != nil {
		v.s.log.Error("extent integrity error", "volume", v.info.Name, "snapshot", v.snapName, "ino", ino, "chunk", index, "err", err)
		return 0, fmt.Errorf("volume %q inode %d chunk %d: %w", v.info.Name, ino, index, err)
	}
	return length, nil
}

// readBody decodes a chunk body into dst and verifies its hash.
func (t *tx) readBody(ref *chunkRef, dst []byte) error {
	item, err := t.txn.Get(bodyKey(ref.hash))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%w: chunk %x is missing", ErrCorrupt, ref.hash[:8])
	}
	if err != nil {
		return fmt.Errorf("%w: chunk %x: %v", ErrCorrupt, ref.hash[:8], err)
	}
	return item.Value(func(body []byte) error {
		out, err := t.s.codecs.decode(body, dst)
		if err != nil {
			return err
		}
		if len(out) < int(ref.n) || blake3.Sum256(out) != ref.hash {
			return fmt.Errorf("%w: chunk %x does not match its hash", ErrCorrupt, ref.hash[:8])
		}
		return nil
	})
}

// ReadAt reads file data; holes and the region past the last chunk but below Size read as zeros.
// Returns the number of bytes read (short only at EOF).
func (v *View) ReadAt(ctx context.Context, ino Ino, dst []byte, off int64) (int, error) {
	if off < 0 {
		return 0, ErrInvalid
	}
	cs := int64(v.ChunkSize())
	var done int
	err := v.read(func(t *tx) error {
		n, err := t.regular(ino)
		if err != nil {
			return err
		}
		if off >= int64(n.Size) {
			return nil
		}
		want := min(int64(len(dst)), int64(n.Size)-off)
		buf := make([]byte, cs)
		for int64(done) < want {
			pos := off + int64(done)
			if _, err := v.readChunk(t, n, uint64(pos/cs), buf); err != nil {
				return err
			}
			done += copy(dst[done:want], buf[pos%cs:])
		}
		return nil
	})
	return done, err
}

// WriteAt writes data (whole chunks as chunks, partial ones as extents), extends Size and sets
// mtime/ctime, all in one transaction.
func (v *View) WriteAt(ctx context.Context, ino Ino, data []byte, off int64) (Attr, error) {
	if off < 0 {
		return Attr{}, ErrInvalid
	}
	if err := v.admitData(int64(len(data))); err != nil {
		return Attr{}, err
	}
	cs := int64(v.ChunkSize())
	var a Attr
	err := v.write(ctx, func(t *tx) error {
		if err := v.settleIn(t, ino); err != nil {
			return err
		}
		n, err := t.regular(ino)
		if err != nil {
			return err
		}
		if len(data) == 0 {
			a = n.Attr
			return nil
		}
		var chunks []Chunk
		for done := int64(0); done < int64(len(data)); {
			pos := off + done
			idx, in := pos/cs, pos%cs
			k := min(cs-in, int64(len(data))-done)
			if k == cs {
				chunks = append(chunks, v.PrepareChunk(uint64(idx), data[done:done+k]))
			} else {
				chunks = append(chunks, v.PrepareExtent(uint64(idx), int(in), data[done:done+k]))
			}
			done += k
		}
		end := uint64(off + int64(len(data)))
		if err := v.commit(t, n, chunks, end); err != nil {
			return err
		}
		a = n.Attr
		return nil
	})
	return a, err
}

// truncate sets n's size, dropping (or whiting out) chunk-map entries past the new end and trimming
// the last chunk, so that a later extension reads zeros. n is written by the caller.
func (t *tx) truncate(v *View, n *inode, size uint64) error {
	cs := uint64(v.ChunkSize())
	var delta int64
	if size < n.Size {
		if rem := size % cs; rem != 0 {
			buf := make([]byte, cs)
			got, err := v.readChunk(t, n, size/cs, buf)
			if err != nil {
				return err
			}
			if uint64(got) > rem {
				c := v.PrepareChunk(size/cs, buf[:rem])
				d, err := t.setChunk(n, size/cs, &c)
				if err != nil {
					return err
				}
				delta += d
			}
		}
		d, err := t.dropChunksFrom(n, (size+cs-1)/cs)
		if err != nil {
			return err
		}
		delta += d
	}
	n.Size = size
	n.alloc = uint64(max(0, int64(n.alloc)+delta))
	n.Blocks = (n.alloc + 511) / 512
	if delta != 0 {
		return t.addUsage(t.node, delta, 0)
	}
	return nil
}

// shrinkInBatches drops the chunks of a big truncation from the end, gcBatch chunks per
// transaction, so that no transaction outgrows Badger's limits. Each batch leaves a consistent
// file whose size has come down to the first chunk it dropped; the final step (SetAttr's own
// transaction) finishes the truncation. A crash in between leaves a file part-way truncated, never
// one that reads wrong data.
func (v *View) shrinkInBatches(ctx context.Context, ino Ino, size uint64) error {
	cs := uint64(v.ChunkSize())
	for {
		more := false
		err := v.write(ctx, func(t *tx) error {
			n, err := t.getInode(ino)
			if err != nil || n.Mode&syscall.S_IFMT != syscall.S_IFREG || size >= n.Size {
				return nil // SetAttr's own transaction reports any error
			}
			idxs, err := t.dataChunks(n)
			if err != nil {
				return err
			}
			from := (size + cs - 1) / cs
			for len(idxs) > 0 && idxs[0] < from {
				idxs = idxs[1:]
			}
			if len(idxs) <= gcBatch {
				return nil
			}
			more = true
			idxs = idxs[len(idxs)-gcBatch:]
			var delta int64
			for _, i := range idxs {
				d, err := t.setChunk(n, i, nil)
				if err != nil {
					return err
				}
				delta += d
			}
			n.Size = min(n.Size, idxs[0]*cs)
			n.Mtime, n.Ctime = now(), now()
			return t.account(n, delta)
		})
		if err != nil || !more {
			return err
		}
	}
}

// visibleChunks lists the indices of ino's chunk-map entries, ascending (see dataChunks for the
// chunks with data, which include those with only extents).
func (t *tx) visibleChunks(ino Ino) ([]uint64, error) {
	var out []uint64
	prefix := metaKind(t.tree, kChunk, ino)
	err := t.scanVisible(prefix, func(lkey []byte, ver version) error {
		if ver.live() {
			out = append(out, beUint64(lkey[len(prefix):]))
		}
		return nil
	})
	return out, err
}

// dropChunksFrom makes every chunk at index >= from a hole; returns the allocated-bytes change.
func (t *tx) dropChunksFrom(n *inode, from uint64) (int64, error) {
	idxs, err := t.dataChunks(n)
	if err != nil {
		return 0, err
	}
	var delta int64
	for _, i := range idxs {
		if i < from {
			continue
		}
		d, err := t.setChunk(n, i, nil)
		if err != nil {
			return 0, err
		}
		delta += d
	}
	return delta, nil
}

// Fallocate modes (Linux values).
const (
	FallocKeepSize  = 0x01
	FallocPunchHole = 0x02
	FallocZeroRange = 0x10
)

// Fallocate: mode 0 extends Size to off+length (space is not reserved: chunks are written lazily,
// but the quota is checked); FallocKeepSize alone changes nothing; FallocPunchHole|FallocKeepSize and
// FallocZeroRange zero the range (whole chunks become holes). Other modes: ErrNotSupp.
func (v *View) Fallocate(ctx context.Context, ino Ino, off, length int64, mode uint32) error {
	if off < 0 || length <= 0 {
		return ErrInvalid
	}
	switch mode {
	case 0, FallocKeepSize, FallocPunchHole | FallocKeepSize, FallocZeroRange, FallocZeroRange | FallocKeepSize:
	default:
		return fmt.Errorf("fallocate mode %#x: %w", mode, ErrNotSupp)
	}
	if mode&FallocPunchHole == 0 {
		if err := v.admitData(length); err != nil {
			return err
		}
	}
	return v.write(ctx, func(t *tx) error {
		if err := v.settleIn(t, ino); err != nil {
			return err
		}
		n, err := t.regular(ino)
		if err != nil {
			return err
		}
		end := uint64(off + length)
		if mode&(FallocPunchHole|FallocZeroRange) != 0 {
			if err := v.zeroRange(t, n, uint64(off), min(end, n.Size)); err != nil {
				return err
			}
		}
		if mode&FallocKeepSize == 0 && end > n.Size {
			if limit := v.QuotaLimit(); limit > 0 {
				u, err := t.getUsage(t.node)
				if err != nil {
					return err
				}
				if u.Bytes+int64(end-n.Size) > limit {
					return fmt.Errorf("volume %q: %w", v.info.Name, ErrNoSpace)
				}
			}
			n.Size = end
		}
		if mode != FallocKeepSize {
			ts := now()
			n.Mtime, n.Ctime = ts, ts
		}
		return t.putInode(n)
	})
}

// zeroRange zeroes [from, to) of n: whole chunks become holes, partial ones are rewritten.
func (v *View) zeroRange(t *tx, n *inode, from, to uint64) error {
	cs := uint64(v.ChunkSize())
	var delta int64
	for pos := from; pos < to; {
		idx, in := pos/cs, pos%cs
		k := min(cs-in, to-pos)
		var c *Chunk
		if in != 0 || k != cs {
			buf := make([]byte, cs)
			got, err := v.readChunk(t, n, idx, buf)
			if err != nil {
				return err
			}
			clear(buf[in : in+k])
			prepared := v.PrepareChunk(idx, buf[:got])
			c = &prepared
		}
		d, err := t.setChunk(n, idx, c)
		if err != nil {
			return err
		}
		delta += d
		pos += k
	}
	n.alloc = uint64(max(0, int64(n.alloc)+delta))
	n.Blocks = (n.alloc + 511) / 512
	if delta != 0 {
		return t.addUsage(t.node, delta, 0)
	}
	return nil
}

// Seek whence values for SeekData.
const (
	SeekData = 3
	SeekHole = 4
)

// SeekData returns the offset of the first data (SeekData) or hole (SeekHole) at or after off,
// with chunk granularity. ErrNotFound (ENXIO) at or past EOF, or when no data follows.
func (v *View) SeekData(ctx context.Context, ino Ino, off int64, whence int) (int64, error) {
	cs := int64(v.ChunkSize())
	var res int64
	err := v.read(func(t *tx) error {
		n, err := t.regular(ino)
		if err != nil {
			return err
		}
		size := int64(n.Size)
		if off < 0 || off >= size {
			return fmt.Errorf("offset %d past end: %w", off, ErrNotFound)
		}
		idxs, err := t.dataChunks(n)
		if err != nil {
			return err
		}
		data := map[int64]bool{}
		for _, i := range idxs {
			data[int64(i)] = true
		}
		switch whence {
		case SeekData:
			for _, i := range idxs {
				if (int64(i)+1)*cs > off && int64(i)*cs < size {
					res = max(off, int64(i)*cs)
					return nil
				}
			}
			return fmt.Errorf("no data after %d: %w", off, ErrNotFound)
		case SeekHole:
			cur := off / cs
			for data[cur] {
				cur++
			}
			res = min(max(off, cur*cs), size)
			return nil
		}
		return ErrInvalid
	})
	return res, err
}
