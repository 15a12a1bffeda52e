// Package intentlog is fusevol's intent log: the records that make an fsync durable with one
// device flush, before the data reaches the content store.
//
// The log is two preallocated segment files of equal size. Records are appended to one segment
// until it is full; appends then move to the other, and the owner (backend.Store) checkpoints the
// full one: it applies its records to the store, makes the store durable, and calls Release. A
// released segment starts a new generation and is empty. Concurrent Sync calls share one write and
// one fdatasync (group commit).
//
// # Format
//
// A segment starts with two 512-byte header slots (generation, first LSN, CRC-32C); the valid slot
// with the higher generation is current, so a torn header write leaves the other one. Records
// follow from offset 4096:
//
//	crc32c(u32, over the rest)  length(u32, of the body)  body
//	body: gen u64 | lsn u64 | ino u64 | off u64 | size u64 | mtime i64 | vol (u16 len + bytes) | data (u32 len + bytes)
//
// # Invariants
//
//   - LSNs increase by one from record to record across both segments and across reopen: a new
//     generation starts at an LSN above every LSN the log ever gave out.
//   - A segment's records are read up to the first record whose CRC, generation or LSN does not
//     follow: a torn or stale tail ends the segment, never yields a wrong record.
//   - The segment files never change size after creation (zero-filled once), so fdatasync flushes
//     data only: one device flush per Sync.
//   - A write or flush error is sticky: every later Append and Sync returns it.
package intentlog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Record is one logged write: data written at Off of inode Ino of volume Volume (its ID), with
// the file's size and mtime after the write.
type Record struct {
	LSN    uint64
	Volume string
	Ino    uint64
	Off    uint64
	Size   uint64
	Mtime  int64
	Data   []byte
}

const (
	headerSlot  = 512
	dataStart   = 4096
	recHeader   = 8                // crc + length
	bodyFixed   = 6*8 + 2 + 4      // fixed-size body fields
	magic       = 0x46564c31       // "FVL1"
	MinFileSize = dataStart + 4096 // the smallest segment Open accepts
)

// ErrFull means the record cannot be appended now: both segments hold records that are not yet
// checkpointed, or the record is larger than a segment. The caller makes its data durable another way.
var ErrFull = errors.New("intent log full")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	f        *os.File
	gen      uint64
	startLSN uint64
	off      int64 // end of the appended records (written or pending)
	pend     []byte
	pendOff  int64 // file offset of pend[0]
	lastLSN  uint64
	busy     bool // holds records not yet released
}

// Log is an open intent log. Safe for concurrent use.
type Log struct {
	size int64

	mu      sync.Mutex
	segs    [2]*segment
	cur     int
	next    uint64 // next LSN
	durable uint64 // every LSN up to this one is on disk
	err     error
	full    chan int // segments that became full, for the owner to checkpoint

	smu     sync.Mutex // held by the goroutine writing and flushing pending records
	flushes uint64     // fdatasync calls made for records (guarded by mu)
}

// Flushes is the number of device flushes (fdatasync) made for records so far.
func (l *Log) Flushes() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushes
}

// Open opens (creating when needed) the log in dir with segments of size bytes, and returns the
// records it holds in LSN order.
func Open(dir string, size int64) (*Log, []Record, error) {
	if size < MinFileSize {
		return nil, nil, fmt.Errorf("intent log segment of %d bytes: at least %d needed", size, MinFileSize)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("intent log: %w", err)
	}
	l := &Log{size: size, next: 1, full: make(chan int, 2)}
	var recs []Record
	for i := range l.segs {
		seg, rs, err := openSegment(filepath.Join(dir, fmt.Sprintf("segment-%d", i)), size)
		if err != nil {
			l.closeFiles()
			return nil, nil, err
		}
		l.segs[i] = seg
		recs = append(recs, rs...)
		l.next = max(l.next, seg.startLSN, seg.lastLSN+1)
	}
	slices.SortFunc(recs, func(a, b Record) int { return cmp.Compare(a.LSN, b.LSN) })
	l.durable = l.next - 1
	if l.segs[1].busy && (!l.segs[0].busy || l.segs[1].lastLSN > l.segs[0].lastLSN) {
		l.cur = 1
	}
	return l, recs, nil
}

// Next is the LSN the next record gets.
func (l *Log) Next() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// SkipTo makes later records get LSNs of at least lsn (for an owner whose marks are ahead of a log
// that was lost or replaced). It is durable once both segments were released after it.
func (l *Log) SkipTo(lsn uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next = max(l.next, lsn)
}

// Full delivers the index of each segment that appends have left, to be checkpointed and released.
func (l *Log) Full() <-chan int { return l.full }

// Busy reports which segments hold records that were not released.
func (l *Log) Busy() [2]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return [2]bool{l.segs[0].busy, l.segs[1].busy}
}

// Append assigns LSNs to recs (in order), queues them for the next Sync and returns the last LSN.
// Nothing is durable before Sync(last) returns.
func (l *Log) Append(recs []Record) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	var total int64
	for i := range recs {
		total += encodedLen(&recs[i])
	}
	if total > l.size-dataStart {
		return 0, fmt.Errorf("%d bytes of records: %w", total, ErrFull)
	}
	seg := l.segs[l.cur]
	if seg.off+total > l.size {
		other := l.segs[1-l.cur]
		if other.busy {
			return 0, ErrFull
		}
		l.full <- l.cur // never blocks: a segment is sent once per fill, and only two exist
		l.cur = 1 - l.cur
		seg = other
	}
	if len(seg.pend) == 0 {
		seg.pendOff = seg.off
	}
	for i := range recs {
		recs[i].LSN = l.next
		l.next++
		seg.pend = appendRecord(seg.pend, seg.gen, &recs[i])
		seg.lastLSN = recs[i].LSN
	}
	seg.off += total
	seg.busy = true
	return l.next - 1, nil
}

// Sync returns once every record up to lsn is on disk. Concurrent callers share one flush.
func (l *Log) Sync(lsn uint64) error {
	l.smu.Lock()
	defer l.smu.Unlock()
	l.mu.Lock()
	if l.err != nil || l.durable >= lsn {
		err := l.err
		l.mu.Unlock()
		return err
	}
	return l.flushLocked()
}

// flushLocked writes and flushes every pending record. Called with smu and mu held; returns with
// mu released.
func (l *Log) flushLocked() error {
	type write struct {
		f   *os.File
		b   []byte
		off int64
	}
	var ws []write
	for _, s := range l.segs {
		if len(s.pend) > 0 {
			ws = append(ws, write{s.f, s.pend, s.pendOff})
			s.pend = nil
		}
	}
	last := l.next - 1
	l.mu.Unlock()
	var err error
	for _, w := range ws {
		if _, err = w.f.WriteAt(w.b, w.off); err != nil {
			break
		}
		if err = fdatasync(w.f); err != nil {
			break
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushes += uint64(len(ws))
	if err != nil {
		l.err = fmt.Errorf("intent log: %w", err)
		return l.err
	}
	l.durable = max(l.durable, last)
	return nil
}

// Release empties segment i once its records are durable elsewhere: it gets a new generation
// whose first LSN is above every LSN given out so far.
func (l *Log) Release(i int) error {
	l.smu.Lock()
	defer l.smu.Unlock()
	l.mu.Lock()
	if l.err != nil {
		defer l.mu.Unlock()
		return l.err
	}
	if i == l.cur {
		// The owner releases the current segment only when it has checkpointed everything (at
		// open and close): later appends go to the other one.
		l.cur = 1 - i
		if err := l.flushLocked(); err != nil {
			return err
		}
		l.mu.Lock()
	}
	seg := l.segs[i]
	gen, start := seg.gen+1, l.next
	l.mu.Unlock()
	err := writeHeader(seg.f, gen, start)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.err = err
		return err
	}
	seg.gen, seg.startLSN, seg.off, seg.pend, seg.busy = gen, start, dataStart, nil, false
	return nil
}

// Close closes the segment files. Pending records that were never synced are dropped.
func (l *Log) Close() error {
	l.smu.Lock()
	defer l.smu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	var errs []error
	for _, s := range l.segs {
		if s != nil {
			errs = append(errs, s.f.Close())
		}
	}
	return errors.Join(errs...)
}

func encodedLen(r *Record) int64 {
	return int64(recHeader + bodyFixed + len(r.Volume) + len(r.Data))
}

func appendRecord(b []byte, gen uint64, r *Record) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, 0) // crc, filled in below
	b = binary.BigEndian.AppendUint32(b, uint32(bodyFixed+len(r.Volume)+len(r.Data)))
	for _, v := range []uint64{gen, r.LSN, r.Ino, r.Off, r.Size, uint64(r.Mtime)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Volume)))
	b = append(b, r.Volume...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
	b = append(b, r.Data...)
	binary.BigEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castagnoli))
	return b
}

// decodeRecord parses the record at the start of b (which must hold its whole body), returning the
// record, its generation and its encoded length. ok is false for anything but a well-formed record.
func decodeRecord(b []byte) (r Record, gen uint64, n int, ok bool) {
	if len(b) < recHeader {
		return r, 0, 0, false
	}
	length := int(binary.BigEndian.Uint32(b[4:]))
	if length < bodyFixed || length > len(b)-recHeader {
		return r, 0, 0, false
	}
	if crc32.Checksum(b[4:recHeader+length], castagnoli) != binary.BigEndian.Uint32(b) {
		return r, 0, 0, false
	}
	body := b[recHeader : recHeader+length]
	u := func(i int) uint64 { return binary.BigEndian.Uint64(body[8*i:]) }
	gen = u(0)
	r = Record{LSN: u(1), Ino: u(2), Off: u(3), Size: u(4), Mtime: int64(u(5))}
	p := 48
	vl := int(binary.BigEndian.Uint16(body[p:]))
	p += 2
	if p+vl+4 > len(body) {
		return r, 0, 0, false
	}
	r.Volume = string(body[p : p+vl])
	p += vl
	dl := int(binary.BigEndian.Uint32(body[p:]))
	p += 4
	if p+dl != len(body) {
		return r, 0, 0, false
	}
	r.Data = append([]byte(nil), body[p:]...)
	return r, gen, recHeader + length, true
}
