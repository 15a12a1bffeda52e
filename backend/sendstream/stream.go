package sendstream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"
)

// Magic opens every stream; Version follows it.
const (
	Magic   = "FVSTREAM"
	Version = 1
)

// Caps on every length a stream carries.
const (
	MaxName       = 255
	MaxIDLen      = 255
	MaxTarget     = 4095
	MaxXattrValue = 64 << 10
	MaxBody       = 4 << 20 // the largest chunk size
	// MaxRecord is the largest payload of any record (a Body of MaxBody bytes).
	MaxRecord = HashSize + MaxBody
)

// HashSize is the size of a chunk hash (BLAKE3-256).
const HashSize = 32

// Type is a record type.
type Type uint8

// Record types (see the package doc).
const (
	THeader      Type = 1
	TInode       Type = 2
	TDirent      Type = 3
	TXattr       Type = 4
	TBody        Type = 5
	TChunk       Type = 6
	THole        Type = 7
	TUnlink      Type = 8
	TRemoveXattr Type = 9
	TRemoveInode Type = 10
	TTrailer     Type = 255

	numTypes = 10
)

var typeNames = map[Type]string{THeader: "header", TInode: "inode", TDirent: "dirent", TXattr: "xattr",
	TBody: "body", TChunk: "chunk", THole: "hole", TUnlink: "unlink", TRemoveXattr: "remove-xattr",
	TRemoveInode: "remove-inode", TTrailer: "trailer"}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// ErrFormat is wrapped by every error about a stream's bytes: damage, truncation, a foreign
// or newer format, a length over its cap.
var ErrFormat = errors.New("bad send stream")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes the stream: what was sent and, for an incremental stream, its base.
type Header struct {
	Incremental bool
	ChunkSize   uint32
	NextIno     uint64 // the sender's next inode number: the receiver allocates above it
	Created     int64  // when the snapshot was taken, Unix ns
	Quota       uint64
	UID, GID    uint32
	Mode        uint32
	Volume      string
	Snapshot    string
	SnapshotID  string // stable identity of the snapshot, the base of later incremental streams
	BaseName    string
	BaseID      string // identity of the snapshot the receiver must hold (incremental)
	Compression string
}

// Inode is an inode's attributes.
type Inode struct {
	Ino                 uint64
	Mode, UID, GID      uint32
	Nlink, Rdev         uint32
	Size                uint64
	Atime, Mtime, Ctime int64
	Gen, Parent         uint64
	Target              string
}

// Record is one decoded record; which fields are set depends on Type. Data aliases the
// decoder's buffer and is valid until the next call of Next.
type Record struct {
	Type   Type
	Inode  Inode    // TInode
	Ino    uint64   // TDirent (the child), TXattr, TChunk, THole, TRemoveXattr, TRemoveInode
	Dir    uint64   // TDirent, TUnlink
	Name   string   // TDirent, TUnlink, TXattr, TRemoveXattr
	Kind   uint32   // TDirent: the child's type bits
	Index  uint64   // TChunk, THole
	Hash   [32]byte // TChunk, TBody
	Length uint32   // TChunk
	Data   []byte   // TXattr (value), TBody (plain bytes)
}

// Counts are the records of each type a stream holds (index: Type), and its bytes.
type Counts struct {
	Records [numTypes + 1]uint64
	Bytes   uint64
}

// Encoder writes a stream. Methods return the first error for ever after; Close writes the
// trailer and flushes.
type Encoder struct {
	w      *bufio.Writer
	crc    uint32
	counts Counts
	buf    []byte
	err    error
}

// NewEncoder writes the magic, the version and h to w.
func NewEncoder(w io.Writer, h Header) (*Encoder, error) {
	for _, s := range []string{h.Volume, h.Snapshot, h.SnapshotID, h.BaseName, h.BaseID, h.Compression} {
		if len(s) > MaxIDLen {
			return nil, fmt.Errorf("%w: header string of %d bytes", ErrFormat, len(s))
		}
	}
	e := &Encoder{w: bufio.NewWriterSize(w, 1<<20)}
	e.raw(binary.BigEndian.AppendUint32([]byte(Magic), Version))
	e.record(THeader, encodeHeader(h))
	return e, e.err
}

func encodeHeader(h Header) []byte {
	var flags uint32
	if h.Incremental {
		flags = 1
	}
	b := u32(nil, flags)
	b = u32(b, h.ChunkSize)
	b = u64(b, h.NextIno)
	b = u64(b, uint64(h.Created))
	b = u64(b, h.Quota)
	b = u32(u32(u32(b, h.UID), h.GID), h.Mode)
	for _, s := range []string{h.Volume, h.Snapshot, h.SnapshotID, h.BaseName, h.BaseID, h.Compression} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b
}

func u32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func u64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func (e *Encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(b)
	e.crc = crc32.Update(e.crc, castagnoli, b)
	e.counts.Bytes += uint64(len(b))
}

// record writes one record whose payload is p (p may alias e.buf).
func (e *Encoder) record(t Type, p []byte) {
	if e.err == nil && len(p) > MaxRecord {
		e.err = fmt.Errorf("%w: %s record of %d bytes", ErrFormat, t, len(p))
	}
	var hdr [5]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	sum := crc32.Update(crc32.Update(0, castagnoli, hdr[:]), castagnoli, p)
	e.raw(hdr[:])
	e.raw(p)
	e.raw(binary.BigEndian.AppendUint32(nil, sum))
	if t <= numTypes {
		e.counts.Records[t]++
	}
}

func (e *Encoder) payload() []byte { return e.buf[:0] }

// Inode writes an inode record.
func (e *Encoder) Inode(n Inode) error {
	if len(n.Target) > MaxTarget {
		return e.fail(fmt.Errorf("%w: symlink target of %d bytes", ErrFormat, len(n.Target)))
	}
	b := u64(e.payload(), n.Ino)
	for _, v := range []uint32{n.Mode, n.UID, n.GID, n.Nlink, n.Rdev} {
		b = u32(b, v)
	}
	for _, v := range []uint64{n.Size, uint64(n.Atime), uint64(n.Mtime), uint64(n.Ctime), n.Gen, n.Parent} {
		b = u64(b, v)
	}
	e.buf = append(b, n.Target...)
	e.record(TInode, e.buf)
	return e.err
}

// Dirent writes a directory entry: dir/name is ino, of type kind (S_IFMT bits).
func (e *Encoder) Dirent(dir uint64, name string, ino uint64, kind uint32) error {
	if err := checkName(name); err != nil {
		return e.fail(err)
	}
	e.buf = append(u32(u64(u64(e.payload(), dir), ino), kind), name...)
	e.record(TDirent, e.buf)
	return e.err
}

// Xattr writes an extended attribute of ino.
func (e *Encoder) Xattr(ino uint64, name string, value []byte) error {
	if err := checkName(name); err != nil {
		return e.fail(err)
	}
	if len(value) > MaxXattrValue {
		return e.fail(fmt.Errorf("%w: xattr value of %d bytes", ErrFormat, len(value)))
	}
	b := binary.BigEndian.AppendUint16(u64(e.payload(), ino), uint16(len(name)))
	e.buf = append(append(b, name...), value...)
	e.record(TXattr, e.buf)
	return e.err
}

// Body writes a chunk's plain bytes under their hash.
func (e *Encoder) Body(hash [32]byte, data []byte) error {
	if len(data) == 0 || len(data) > MaxBody {
		return e.fail(fmt.Errorf("%w: chunk body of %d bytes", ErrFormat, len(data)))
	}
	e.buf = append(append(e.payload(), hash[:]...), data...)
	e.record(TBody, e.buf)
	return e.err
}

// Chunk writes a chunk-map entry.
func (e *Encoder) Chunk(ino, index uint64, hash [32]byte, length uint32) error {
	e.buf = u32(append(u64(u64(e.payload(), ino), index), hash[:]...), length)
	e.record(TChunk, e.buf)
	return e.err
}

// Hole writes that chunk index of ino is a hole now.
func (e *Encoder) Hole(ino, index uint64) error {
	e.buf = u64(u64(e.payload(), ino), index)
	e.record(THole, e.buf)
	return e.err
}

// Unlink writes that dir/name is gone.
func (e *Encoder) Unlink(dir uint64, name string) error {
	if err := checkName(name); err != nil {
		return e.fail(err)
	}
	e.buf = append(u64(e.payload(), dir), name...)
	e.record(TUnlink, e.buf)
	return e.err
}

// RemoveXattr writes that ino's xattr name is gone.
func (e *Encoder) RemoveXattr(ino uint64, name string) error {
	if err := checkName(name); err != nil {
		return e.fail(err)
	}
	e.buf = append(u64(e.payload(), ino), name...)
	e.record(TRemoveXattr, e.buf)
	return e.err
}

// RemoveInode writes that ino is gone.
func (e *Encoder) RemoveInode(ino uint64) error {
	e.buf = u64(e.payload(), ino)
	e.record(TRemoveInode, e.buf)
	return e.err
}

// Counts are the records and bytes written so far.
func (e *Encoder) Counts() Counts { return e.counts }

// Close writes the trailer and flushes. The underlying writer is not closed.
func (e *Encoder) Close() error {
	if e.err != nil {
		return e.err
	}
	c, crc := e.counts, e.crc
	b := e.payload()
	for t := 1; t <= numTypes; t++ {
		b = u64(b, c.Records[t])
	}
	e.buf = u32(u64(b, c.Bytes), crc)
	e.record(TTrailer, e.buf)
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err == nil {
		e.err = errClosed
		return nil
	}
	return e.err
}

var errClosed = errors.New("send stream encoder closed")

func (e *Encoder) fail(err error) error {
	if e.err == nil {
		e.err = err
	}
	return e.err
}

func checkName(name string) error {
	if name == "" || len(name) > MaxName {
		return fmt.Errorf("%w: name of %d bytes", ErrFormat, len(name))
	}
	return nil
}

// Decoder reads a stream.
type Decoder struct {
	r      *bufio.Reader
	crc    uint32
	counts Counts
	buf    []byte
	hdr    Header
	err    error
}

// NewDecoder reads and checks the magic, the version and the header.
func NewDecoder(r io.Reader) (*Decoder, error) {
	d := &Decoder{r: bufio.NewReaderSize(r, 1<<20)}
	var start [len(Magic) + 4]byte
	if err := d.read(start[:]); err != nil {
		return nil, err
	}
	if string(start[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: not a fusevol send stream (magic %q)", ErrFormat, start[:len(Magic)])
	}
	if v := binary.BigEndian.Uint32(start[len(Magic):]); v != Version {
		return nil, fmt.Errorf("%w: stream version %d, this volctl reads version %d", ErrFormat, v, Version)
	}
	t, p, err := d.next()
	if err != nil {
		return nil, err
	}
	if t != THeader {
		return nil, fmt.Errorf("%w: first record is a %s, not the header", ErrFormat, t)
	}
	if d.hdr, err = decodeHeader(p); err != nil {
		return nil, err
	}
	return d, nil
}

// Header is the stream's header.
func (d *Decoder) Header() Header { return d.hdr }

// Counts are the records and bytes read so far.
func (d *Decoder) Counts() Counts { return d.counts }

// read fills b from the stream, counting and summing it; a short read is a truncated stream.
func (d *Decoder) read(b []byte) error {
	if _, err := io.ReadFull(d.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated after %d bytes (no trailer)", ErrFormat, d.counts.Bytes)
		}
		return fmt.Errorf("read send stream: %w", err)
	}
	d.crc = crc32.Update(d.crc, castagnoli, b)
	d.counts.Bytes += uint64(len(b))
	return nil
}

// next reads one record and checks its CRC; the payload aliases d.buf.
func (d *Decoder) next() (Type, []byte, error) {
	crcBefore, bytesBefore := d.crc, d.counts.Bytes
	var hdr [5]byte
	if err := d.read(hdr[:]); err != nil {
		return 0, nil, err
	}
	t, n := Type(hdr[0]), binary.BigEndian.Uint32(hdr[1:])
	if n > MaxRecord {
		return 0, nil, fmt.Errorf("%w: %s record of %d bytes at byte %d (the limit is %d)", ErrFormat, t, n, bytesBefore, MaxRecord)
	}
	if cap(d.buf) < int(n) {
		d.buf = make([]byte, n)
	}
	p := d.buf[:n]
	if err := d.read(p); err != nil {
		return 0, nil, err
	}
	var sum [4]byte
	if err := d.read(sum[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint32(sum[:]) != crc32.Update(crc32.Update(0, castagnoli, hdr[:]), castagnoli, p) {
		return 0, nil, fmt.Errorf("%w: %s record at byte %d does not match its checksum", ErrFormat, t, bytesBefore)
	}
	if t == TTrailer {
		return t, p, d.checkTrailer(p, crcBefore, bytesBefore)
	}
	if t == 0 || t > numTypes {
		return 0, nil, fmt.Errorf("%w: unknown record type %d at byte %d", ErrFormat, t, bytesBefore)
	}
	d.counts.Records[t]++
	return t, p, nil
}

func (d *Decoder) checkTrailer(p []byte, crc uint32, bytes uint64) error {
	if len(p) != numTypes*8+8+4 {
		return fmt.Errorf("%w: trailer of %d bytes", ErrFormat, len(p))
	}
	for t := 1; t <= numTypes; t++ {
		if got, want := d.counts.Records[t], binary.BigEndian.Uint64(p[(t-1)*8:]); got != want {
			return fmt.Errorf("%w: %d %s records, the trailer counts %d", ErrFormat, got, Type(t), want)
		}
	}
	if want := binary.BigEndian.Uint64(p[numTypes*8:]); want != bytes {
		return fmt.Errorf("%w: %d bytes before the trailer, it counts %d", ErrFormat, bytes, want)
	}
	if binary.BigEndian.Uint32(p[numTypes*8+8:]) != crc {
		return fmt.Errorf("%w: the stream does not match the trailer's checksum", ErrFormat)
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("read send stream: %w", err)
		}
		return fmt.Errorf("%w: bytes after the trailer", ErrFormat)
	}
	return nil
}

// Next returns the next record; io.EOF once the trailer checked out and the stream ended.
func (d *Decoder) Next() (Record, error) {
	if d.err != nil {
		return Record{}, d.err
	}
	rec, err := d.decode()
	if err != nil {
		d.err = err
	}
	return rec, err
}

func (d *Decoder) decode() (Record, error) {
	t, p, err := d.next()
	if err != nil {
		return Record{}, err
	}
	rec := Record{Type: t}
	short := func(fixed int) error {
		if len(p) < fixed {
			return fmt.Errorf("%w: %s record of %d bytes", ErrFormat, t, len(p))
		}
		return nil
	}
	exact := func(n int) error {
		if len(p) != n {
			return fmt.Errorf("%w: %s record of %d bytes", ErrFormat, t, len(p))
		}
		return nil
	}
	be64 := func(i int) uint64 { return binary.BigEndian.Uint64(p[i:]) }
	be32 := func(i int) uint32 { return binary.BigEndian.Uint32(p[i:]) }
	name := func(b []byte) (string, error) {
		s := string(b)
		return s, checkName(s)
	}
	switch t {
	case TTrailer:
		return Record{}, io.EOF
	case THeader:
		return Record{}, fmt.Errorf("%w: a second header", ErrFormat)
	case TInode:
		const fixed = 8 + 5*4 + 6*8
		if err := short(fixed); err != nil {
			return rec, err
		}
		if len(p)-fixed > MaxTarget {
			return rec, fmt.Errorf("%w: symlink target of %d bytes", ErrFormat, len(p)-fixed)
		}
		n := Inode{Ino: be64(0), Mode: be32(8), UID: be32(12), GID: be32(16), Nlink: be32(20), Rdev: be32(24),
			Size: be64(28), Atime: int64(be64(36)), Mtime: int64(be64(44)), Ctime: int64(be64(52)),
			Gen: be64(60), Parent: be64(68), Target: string(p[fixed:])}
		rec.Inode = n
	case TDirent:
		if err := short(20); err != nil {
			return rec, err
		}
		rec.Dir, rec.Ino, rec.Kind = be64(0), be64(8), be32(16)
		rec.Name, err = name(p[20:])
	case TXattr:
		if err := short(10); err != nil {
			return rec, err
		}
		rec.Ino = be64(0)
		n := int(binary.BigEndian.Uint16(p[8:]))
		if len(p) < 10+n {
			return rec, fmt.Errorf("%w: xattr name of %d bytes in a record of %d", ErrFormat, n, len(p))
		}
		if rec.Name, err = name(p[10 : 10+n]); err != nil {
			return rec, err
		}
		rec.Data = p[10+n:]
		if len(rec.Data) > MaxXattrValue {
			return rec, fmt.Errorf("%w: xattr value of %d bytes", ErrFormat, len(rec.Data))
		}
	case TBody:
		if err := short(HashSize + 1); err != nil {
			return rec, err
		}
		copy(rec.Hash[:], p)
		rec.Data = p[HashSize:]
	case TChunk:
		if err := exact(8 + 8 + HashSize + 4); err != nil {
			return rec, err
		}
		rec.Ino, rec.Index = be64(0), be64(8)
		copy(rec.Hash[:], p[16:])
		rec.Length = be32(16 + HashSize)
	case THole:
		if err := exact(16); err != nil {
			return rec, err
		}
		rec.Ino, rec.Index = be64(0), be64(8)
	case TUnlink:
		if err := short(8); err != nil {
			return rec, err
		}
		rec.Dir = be64(0)
		rec.Name, err = name(p[8:])
	case TRemoveXattr:
		if err := short(8); err != nil {
			return rec, err
		}
		rec.Ino = be64(0)
		rec.Name, err = name(p[8:])
	case TRemoveInode:
		if err := exact(8); err != nil {
			return rec, err
		}
		rec.Ino = be64(0)
	}
	return rec, err
}

func decodeHeader(p []byte) (Header, error) {
	const fixed = 4 + 4 + 8 + 8 + 8 + 3*4
	var h Header
	if len(p) < fixed {
		return h, fmt.Errorf("%w: header of %d bytes", ErrFormat, len(p))
	}
	flags := binary.BigEndian.Uint32(p)
	if flags&^1 != 0 {
		return h, fmt.Errorf("%w: unknown header flags %#x", ErrFormat, flags)
	}
	h.Incremental = flags&1 != 0
	h.ChunkSize = binary.BigEndian.Uint32(p[4:])
	h.NextIno = binary.BigEndian.Uint64(p[8:])
	h.Created = int64(binary.BigEndian.Uint64(p[16:]))
	h.Quota = binary.BigEndian.Uint64(p[24:])
	h.UID, h.GID, h.Mode = binary.BigEndian.Uint32(p[32:]), binary.BigEndian.Uint32(p[36:]), binary.BigEndian.Uint32(p[40:])
	rest := p[fixed:]
	for _, s := range []*string{&h.Volume, &h.Snapshot, &h.SnapshotID, &h.BaseName, &h.BaseID, &h.Compression} {
		if len(rest) < 2 {
			return h, fmt.Errorf("%w: header cut short", ErrFormat)
		}
		n := int(binary.BigEndian.Uint16(rest))
		if n > MaxIDLen || len(rest) < 2+n {
			return h, fmt.Errorf("%w: header string of %d bytes", ErrFormat, n)
		}
		*s, rest = string(rest[2:2+n]), rest[2+n:]
	}
	if len(rest) != 0 {
		return h, fmt.Errorf("%w: %d bytes after the header's fields", ErrFormat, len(rest))
	}
	if h.ChunkSize == 0 || h.ChunkSize > MaxBody || h.ChunkSize&(h.ChunkSize-1) != 0 {
		return h, fmt.Errorf("%w: chunk size %d", ErrFormat, h.ChunkSize)
	}
	if h.Incremental != (h.BaseID != "") {
		return h, fmt.Errorf("%w: incremental flag and base id disagree", ErrFormat)
	}
	return h, nil
}

// Counter counts the records of a stream written through it, by type, without checking
// anything (progress meters tee the stream into one). Safe for one writer; Chunks may be
// read concurrently.
type Counter struct {
	skip   int64 // bytes left of the current payload and CRC (or of the magic and version)
	hdr    [5]byte
	have   int // bytes of hdr read
	chunks atomic.Int64
	bodies atomic.Int64
}

// NewCounter returns a Counter for a stream from its first byte.
func NewCounter() *Counter { return &Counter{skip: int64(len(Magic) + 4)} }

func (c *Counter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.skip > 0 {
			k := min(c.skip, int64(len(p)))
			c.skip -= k
			p = p[k:]
			continue
		}
		k := copy(c.hdr[c.have:], p)
		c.have += k
		p = p[k:]
		if c.have < len(c.hdr) {
			break
		}
		c.have = 0
		switch Type(c.hdr[0]) {
		case TChunk:
			c.chunks.Add(1)
		case TBody:
			c.bodies.Add(1)
		}
		c.skip = int64(binary.BigEndian.Uint32(c.hdr[1:])) + 4
	}
	return n, nil
}

// Chunks and Bodies are the chunk and body records seen so far.
func (c *Counter) Chunks() int64 { return c.chunks.Load() }
func (c *Counter) Bodies() int64 { return c.bodies.Load() }
