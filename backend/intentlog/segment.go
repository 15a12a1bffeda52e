package intentlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// openSegment opens a segment file, creating it zero-filled at its full size when absent, and
// reads the records of its current generation.
func openSegment(path string, size int64) (*segment, []Record, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = createSegment(path, size)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("intent log: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != size {
		err = fmt.Errorf("intent log %s is %d bytes, want %d (the segment size cannot change while it holds records)", path, fi.Size(), size)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	seg := &segment{f: f}
	var hdr [dataStart]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("intent log %s: %w", path, err)
	}
	found := false
	for slot := range 2 {
		if gen, start, ok := decodeHeader(hdr[slot*headerSlot : (slot+1)*headerSlot]); ok && (!found || gen > seg.gen) {
			seg.gen, seg.startLSN, found = gen, start, true
		}
	}
	if !found {
		f.Close()
		return nil, nil, fmt.Errorf("intent log %s: no valid header (damaged log: move it away to open the store without the records it held)", path)
	}
	recs, end, err := scan(f, seg.gen, seg.startLSN, size)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("intent log %s: %w", path, err)
	}
	seg.off = end
	if len(recs) > 0 {
		seg.busy, seg.lastLSN = true, recs[len(recs)-1].LSN
	}
	return seg, recs, nil
}

// createSegment writes a zero-filled segment under a temporary name, flushes it and renames it
// into place, so a crash never leaves a short or headerless segment.
func createSegment(path string, size int64) (*os.File, error) {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < size && err == nil; off += int64(len(zero)) {
		_, err = f.WriteAt(zero[:min(int64(len(zero)), size-off)], off)
	}
	if err == nil {
		err = writeHeader(f, 1, 1)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	return f, nil
}

func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// scan reads the records of generation gen from dataStart, stopping at the first one that does
// not decode or does not follow. It returns them and the offset where the next record goes.
func scan(f *os.File, gen, startLSN uint64, size int64) ([]Record, int64, error) {
	var recs []Record
	off := int64(dataStart)
	want := startLSN
	for {
		b, err := readRecordAt(f, off, size)
		if err != nil {
			return nil, 0, err
		}
		r, g, n, ok := decodeRecord(b)
		if !ok || g != gen || (len(recs) > 0 && r.LSN != want) || r.LSN < startLSN {
			return recs, off, nil
		}
		recs = append(recs, r)
		want = r.LSN + 1
		off += int64(n)
	}
}

// readRecordAt returns the bytes of the record that would start at off (as many as its length
// field claims, within the segment): an empty or short result simply fails to decode.
func readRecordAt(f *os.File, off, size int64) ([]byte, error) {
	var hdr [recHeader]byte
	if off+recHeader > size {
		return nil, nil
	}
	if _, err := f.ReadAt(hdr[:], off); err != nil && err != io.EOF {
		return nil, err
	}
	n := min(int64(recHeader)+int64(binary.BigEndian.Uint32(hdr[4:])), size-off)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

func encodeHeader(gen, start uint64) []byte {
	b := make([]byte, headerSlot)
	binary.BigEndian.PutUint32(b, magic)
	binary.BigEndian.PutUint64(b[4:], gen)
	binary.BigEndian.PutUint64(b[12:], start)
	binary.BigEndian.PutUint32(b[20:], crc32.Checksum(b[:20], castagnoli))
	return b
}

func decodeHeader(b []byte) (gen, start uint64, ok bool) {
	if len(b) < 24 || binary.BigEndian.Uint32(b) != magic ||
		crc32.Checksum(b[:20], castagnoli) != binary.BigEndian.Uint32(b[20:]) {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint64(b[12:]), true
}

// writeHeader writes generation gen into the slot the previous generation did not use and
// flushes it, so the older header survives a torn write.
func writeHeader(f *os.File, gen, start uint64) error {
	if _, err := f.WriteAt(encodeHeader(gen, start), int64(gen%2)*headerSlot); err != nil {
		return fmt.Errorf("intent log header: %w", err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("intent log header: %w", err)
	}
	return nil
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
