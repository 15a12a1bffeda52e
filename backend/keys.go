package backend

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Key prefixes (see the package doc for the layout).
const (
	pVolume   = 'V'
	pSnapshot = 'S'
	pNode     = 'N'
	pTree     = 'T'
	pAlloc    = 'A'
	pUsage    = 'U'
	pMeta     = 'M'
	pRef      = 'R'
	pBody     = 'B'
	pLogMark  = 'L'
	pDead     = 'D'
	pSchedule = 'P'
	pSendID   = 'I'
)

// Metadata kinds.
const (
	kInode  = 'i'
	kDirent = 'd'
	kXattr  = 'x'
	kChunk  = 'c'
	kOrphan = 'o'
	kExtent = 'e'
)

// Value tags of metadata versions.
const (
	tagWhiteout = 0
	tagLive     = 1
)

// HashSize is the size of a chunk address (BLAKE3-256).
const HashSize = 32

// Hash is a chunk address.
type Hash [HashSize]byte

func volumeKey(name string) []byte { return append([]byte{pVolume}, name...) }

func snapshotPrefix(volume string) []byte {
	return append(append([]byte{pSnapshot}, volume...), 0)
}

func snapshotKey(volume, name string) []byte { return append(snapshotPrefix(volume), name...) }

func scheduleKey(volume string) []byte { return append([]byte{pSchedule}, volume...) }

func nodeKey(id uint32) []byte { return binary.BigEndian.AppendUint32([]byte{pNode}, id) }

func treeKey(tree uint32) []byte { return binary.BigEndian.AppendUint32([]byte{pTree}, tree) }

func usageKey(node uint32) []byte { return binary.BigEndian.AppendUint32([]byte{pUsage}, node) }

func sendIDKey(node uint32) []byte { return binary.BigEndian.AppendUint32([]byte{pSendID}, node) }

func refKey(h Hash) []byte  { return append([]byte{pRef}, h[:]...) }
func bodyKey(h Hash) []byte { return append([]byte{pBody}, h[:]...) }
func deadKey(h Hash) []byte { return append([]byte{pDead}, h[:]...) }

// valueThreshold is Badger's value threshold: values this long or longer go to the value log.
// Only chunk bodies may (t.set refuses any other key's value of that size), so that the value-log
// rewrite only ever moves bodies, whose deletion GC controls (see sweepDead). Every metadata value
// fits below it: the largest are a 64 KiB xattr value and an extent of at most maxExtentBytes.
const valueThreshold = 64<<10 + 1<<10

// legacyValueThreshold is the value threshold of stores of format 1, which also put metadata
// values (large xattrs, extents) in the value log.
const legacyValueThreshold = 1 << 10

// treePrefix is the prefix of every metadata key of a snapshot tree.
func treePrefix(tree uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{pMeta}, tree)
}

// metaKind is the prefix of every version of the metadata keys of one kind of one inode.
func metaKind(tree uint32, kind byte, ino Ino) []byte {
	k := append(treePrefix(tree), kind)
	return binary.BigEndian.AppendUint64(k, uint64(ino))
}

// Logical metadata keys: everything but the trailing node ID.
func inodeLKey(tree uint32, ino Ino) []byte  { return metaKind(tree, kInode, ino) }
func orphanLKey(tree uint32, ino Ino) []byte { return metaKind(tree, kOrphan, ino) }

func direntLKey(tree uint32, dir Ino, name string) []byte {
	return append(append(metaKind(tree, kDirent, dir), name...), 0)
}

func xattrLKey(tree uint32, ino Ino, name string) []byte {
	return append(append(metaKind(tree, kXattr, ino), name...), 0)
}

func chunkLKey(tree uint32, ino Ino, index uint64) []byte {
	return binary.BigEndian.AppendUint64(metaKind(tree, kChunk, ino), index)
}

// extentChunkPrefix is the prefix of every version of every extent of one chunk.
func extentChunkPrefix(tree uint32, ino Ino, index uint64) []byte {
	return binary.BigEndian.AppendUint64(metaKind(tree, kExtent, ino), index)
}

func extentLKey(tree uint32, ino Ino, index uint64, seq uint32) []byte {
	return binary.BigEndian.AppendUint32(extentChunkPrefix(tree, ino, index), seq)
}

// versionKey appends the node ID to a logical key.
func versionKey(lkey []byte, node uint32) []byte {
	k := make([]byte, len(lkey), len(lkey)+4)
	copy(k, lkey)
	return binary.BigEndian.AppendUint32(k, node)
}

// metaKey is a decoded versioned metadata key.
type metaKey struct {
	tree   uint32
	kind   byte
	ino    Ino
	name   string // dirent, xattr
	index  uint64 // chunk, extent
	seq    uint32 // extent
	node   uint32
	lkeyLn int // length of the logical key (the key without the node)
}

// parseMetaKey decodes a versioned metadata key.
func parseMetaKey(k []byte) (metaKey, error) {
	var m metaKey
	if len(k) < 1+4+1+8+4 || k[0] != pMeta {
		return m, fmt.Errorf("short or foreign metadata key %x", k)
	}
	m.tree = binary.BigEndian.Uint32(k[1:])
	m.kind = k[5]
	m.ino = Ino(binary.BigEndian.Uint64(k[6:]))
	rest := k[14 : len(k)-4]
	m.node = binary.BigEndian.Uint32(k[len(k)-4:])
	m.lkeyLn = len(k) - 4
	switch m.kind {
	case kInode, kOrphan:
		if len(rest) != 0 {
			return m, fmt.Errorf("bad %c key %x", m.kind, k)
		}
	case kDirent, kXattr:
		if len(rest) < 2 || rest[len(rest)-1] != 0 {
			return m, fmt.Errorf("bad %c key %x", m.kind, k)
		}
		m.name = string(rest[:len(rest)-1])
		for i := 0; i < len(m.name); i++ {
			if m.name[i] == 0 {
				return m, fmt.Errorf("NUL in name of key %x", k)
			}
		}
	case kChunk:
		if len(rest) != 8 {
			return m, fmt.Errorf("bad chunk key %x", k)
		}
		m.index = binary.BigEndian.Uint64(rest)
	case kExtent:
		if len(rest) != 12 {
			return m, fmt.Errorf("bad extent key %x", k)
		}
		m.index = binary.BigEndian.Uint64(rest)
		m.seq = binary.BigEndian.Uint32(rest[8:])
	default:
		return m, fmt.Errorf("unknown metadata kind %q in key %x", m.kind, k)
	}
	return m, nil
}

// logicalKey re-encodes m without its node.
func (m metaKey) logicalKey() []byte {
	switch m.kind {
	case kDirent:
		return direntLKey(m.tree, m.ino, m.name)
	case kXattr:
		return xattrLKey(m.tree, m.ino, m.name)
	case kChunk:
		return chunkLKey(m.tree, m.ino, m.index)
	case kExtent:
		return extentLKey(m.tree, m.ino, m.index, m.seq)
	default:
		return metaKind(m.tree, m.kind, m.ino)
	}
}

// chunkRef is a chunk-map entry: which chunk, and how many plain bytes of it the file uses.
type chunkRef struct {
	hash Hash
	n    uint32
}

func encodeChunkRef(r chunkRef) []byte {
	v := make([]byte, 1, 1+HashSize+4)
	v[0] = tagLive
	v = append(v, r.hash[:]...)
	return binary.BigEndian.AppendUint32(v, r.n)
}

func decodeChunkRef(v []byte) (chunkRef, error) {
	var r chunkRef
	if len(v) != 1+HashSize+4 || v[0] != tagLive {
		return r, fmt.Errorf("%w: bad chunk-map value of %d bytes", ErrCorrupt, len(v))
	}
	copy(r.hash[:], v[1:])
	r.n = binary.BigEndian.Uint32(v[1+HashSize:])
	return r, nil
}

// refVal is a refcount record.
type refVal struct {
	count  uint64
	plain  uint32 // plain length of the chunk
	stored uint32 // length of the body as stored
}

func encodeRef(r refVal) []byte {
	v := binary.BigEndian.AppendUint64(nil, r.count)
	v = binary.BigEndian.AppendUint32(v, r.plain)
	return binary.BigEndian.AppendUint32(v, r.stored)
}

func decodeRef(v []byte) (refVal, error) {
	if len(v) != 16 {
		return refVal{}, fmt.Errorf("%w: bad refcount value of %d bytes", ErrCorrupt, len(v))
	}
	return refVal{binary.BigEndian.Uint64(v), binary.BigEndian.Uint32(v[8:]), binary.BigEndian.Uint32(v[12:])}, nil
}

// direntVal is a directory entry's value: the child and its type bits.
func encodeDirent(ino Ino, typ uint32) []byte {
	v := binary.BigEndian.AppendUint64([]byte{tagLive}, uint64(ino))
	return binary.BigEndian.AppendUint32(v, typ)
}

func decodeDirent(v []byte) (Ino, uint32, error) {
	if len(v) != 13 || v[0] != tagLive {
		return 0, 0, fmt.Errorf("%w: bad directory entry value of %d bytes", ErrCorrupt, len(v))
	}
	return Ino(binary.BigEndian.Uint64(v[1:])), binary.BigEndian.Uint32(v[9:]), nil
}

// inode is the stored form of an inode. alloc is the file's allocated bytes (the sum of its chunks'
// lengths, each chunk's length merged with its extents; see chunkLen); parent is a directory's
// parent directory (0 otherwise); extents is the number of extents the inode's node sees for the
// file (kept in the 32-bit slot that used to be reserved and zero, so older inodes read as none):
// reads of a file with none never scan for them.
type inode struct {
	Attr
	alloc   uint64
	parent  Ino
	target  string
	extents uint32
}

const inodeFixed = 1 + 4*6 + 8*7

func encodeInode(n *inode) []byte {
	v := make([]byte, 1, inodeFixed+len(n.target))
	v[0] = tagLive
	for _, x := range []uint32{n.Mode, n.UID, n.GID, n.Nlink, n.Rdev, n.extents} {
		v = binary.BigEndian.AppendUint32(v, x)
	}
	for _, x := range []uint64{n.Size, uint64(n.Atime), uint64(n.Mtime), uint64(n.Ctime), n.Gen, n.alloc, uint64(n.parent)} {
		v = binary.BigEndian.AppendUint64(v, x)
	}
	return append(v, n.target...)
}

func decodeInode(ino Ino, v []byte) (*inode, error) {
	if len(v) < inodeFixed || v[0] != tagLive {
		return nil, fmt.Errorf("%w: bad inode value of %d bytes", ErrCorrupt, len(v))
	}
	n := &inode{}
	u32 := func(i int) uint32 { return binary.BigEndian.Uint32(v[1+4*i:]) }
	u64 := func(i int) uint64 { return binary.BigEndian.Uint64(v[1+4*6+8*i:]) }
	n.Ino = ino
	n.Mode, n.UID, n.GID, n.Nlink, n.Rdev = u32(0), u32(1), u32(2), u32(3), u32(4)
	n.Size, n.Atime, n.Mtime, n.Ctime = u64(0), int64(u64(1)), int64(u64(2)), int64(u64(3))
	n.extents = u32(5)
	n.Gen, n.alloc, n.parent = u64(4), u64(5), Ino(u64(6))
	n.target = string(v[inodeFixed:])
	n.Blocks = (n.alloc + 511) / 512
	return n, nil
}

// usage values.
func encodeUsage(u Usage) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(u.Bytes)), uint64(u.Files))
}

func decodeUsage(v []byte) (Usage, error) {
	if len(v) != 16 {
		return Usage{}, fmt.Errorf("%w: bad usage value", ErrCorrupt)
	}
	return Usage{int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

// node values: tree, parent.
func encodeNode(n nodeRec) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, n.tree), n.parent)
}

func decodeNode(v []byte) (nodeRec, error) {
	if len(v) != 8 {
		return nodeRec{}, fmt.Errorf("%w: bad node value", ErrCorrupt)
	}
	return nodeRec{tree: binary.BigEndian.Uint32(v), parent: binary.BigEndian.Uint32(v[4:])}, nil
}

// nodeRec is a snapshot-tree node. parent 0 means a root.
type nodeRec struct {
	tree   uint32
	parent uint32
}

func beUint32(b []byte) uint32             { return binary.BigEndian.Uint32(b) }
func beUint64(b []byte) uint64             { return binary.BigEndian.Uint64(b) }
func beAppend64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// An extent value: tag, offset within the chunk, CRC-32C (Castagnoli) of the offset's four bytes
// and the data, then the data.
const extentHeader = 1 + 4 + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeExtent(off uint32, data []byte) []byte {
	v := make([]byte, extentHeader, extentHeader+len(data))
	v[0] = tagLive
	binary.BigEndian.PutUint32(v[1:], off)
	v = append(v, data...)
	binary.BigEndian.PutUint32(v[5:], extentSum(v))
	return v
}

func extentSum(v []byte) uint32 {
	return crc32.Update(crc32.Checksum(v[1:5], castagnoli), castagnoli, v[extentHeader:])
}

// decodeExtent returns an extent's offset and data (aliasing v). With verify it checks the
// checksum; without, only the structure (accounting of extents being dropped).
func decodeExtent(v []byte, verify bool) (uint32, []byte, error) {
	if len(v) < extentHeader || v[0] != tagLive {
		return 0, nil, fmt.Errorf("%w: bad extent value of %d bytes", ErrCorrupt, len(v))
	}
	off := binary.BigEndian.Uint32(v[1:])
	if uint64(off)+uint64(len(v)-extentHeader) > MaxChunkSize {
		return 0, nil, fmt.Errorf("%w: extent at %d of %d bytes passes the largest chunk", ErrCorrupt, off, len(v)-extentHeader)
	}
	if verify && binary.BigEndian.Uint32(v[5:]) != extentSum(v) {
		return 0, nil, fmt.Errorf("%w: extent at %d of %d bytes does not match its checksum", ErrCorrupt, off, len(v)-extentHeader)
	}
	return off, v[extentHeader:], nil
}
