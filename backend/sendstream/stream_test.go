package sendstream

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// sample writes one record of every type and returns the stream and the records as decoded.
func sample(t testing.TB) ([]byte, Header, []Record) {
	t.Helper()
	h := Header{Incremental: true, ChunkSize: 64 << 10, NextIno: 42, Created: 1e18, Quota: 1 << 30,
		UID: 1, GID: 2, Mode: 0o755, Volume: "db", Snapshot: "s2", SnapshotID: "id-2", BaseName: "s1",
		BaseID: "id-1", Compression: "zstd"}
	hash := [32]byte{1, 2, 3}
	want := []Record{
		{Type: TInode, Inode: Inode{Ino: 7, Mode: 0o100644, UID: 3, GID: 4, Nlink: 2, Rdev: 5, Size: 1 << 40,
			Atime: -1, Mtime: 2, Ctime: 3, Gen: 1, Parent: 0, Target: ""}},
		{Type: TInode, Inode: Inode{Ino: 8, Mode: 0o120777, Nlink: 1, Size: 6, Target: "target"}},
		{Type: TDirent, Dir: 1, Name: "a file", Ino: 7, Kind: 0o100000},
		{Type: TXattr, Ino: 7, Name: "user.x", Data: []byte("value")},
		{Type: TXattr, Ino: 7, Name: "user.empty", Data: []byte{}},
		{Type: TBody, Hash: hash, Data: bytes.Repeat([]byte{9}, 1000)},
		{Type: TChunk, Ino: 7, Index: 1 << 30, Hash: hash, Length: 1000},
		{Type: THole, Ino: 7, Index: 3},
		{Type: TUnlink, Dir: 1, Name: "gone"},
		{Type: TRemoveXattr, Ino: 7, Name: "user.y"},
		{Type: TRemoveInode, Ino: 9},
	}
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range want {
		switch r.Type {
		case TInode:
			err = e.Inode(r.Inode)
		case TDirent:
			err = e.Dirent(r.Dir, r.Name, r.Ino, r.Kind)
		case TXattr:
			err = e.Xattr(r.Ino, r.Name, r.Data)
		case TBody:
			err = e.Body(r.Hash, r.Data)
		case TChunk:
			err = e.Chunk(r.Ino, r.Index, r.Hash, r.Length)
		case THole:
			err = e.Hole(r.Ino, r.Index)
		case TUnlink:
			err = e.Unlink(r.Dir, r.Name)
		case TRemoveXattr:
			err = e.RemoveXattr(r.Ino, r.Name)
		case TRemoveInode:
			err = e.RemoveInode(r.Ino)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), h, want
}

// decodeAll reads a whole stream, copying what aliases the decoder's buffer.
func decodeAll(b []byte) (Header, []Record, error) {
	d, err := NewDecoder(bytes.NewReader(b))
	if err != nil {
		return Header{}, nil, err
	}
	var out []Record
	for {
		r, err := d.Next()
		if err == io.EOF {
			return d.Header(), out, nil
		}
		if err != nil {
			return d.Header(), out, err
		}
		if r.Data != nil {
			r.Data = append([]byte{}, r.Data...)
		}
		out = append(out, r)
	}
}

func TestRoundTrip(t *testing.T) {
	b, h, want := sample(t)
	gh, got, err := decodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if gh != h {
		t.Errorf("header %+v, want %+v", gh, h)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records\n%+v\nwant\n%+v", got, want)
	}
}

// Every flipped byte and every truncation is refused with ErrFormat, never a clean end.
func TestDamageAndTruncationRefused(t *testing.T) {
	b, _, _ := sample(t)
	for i := range b {
		d := append([]byte{}, b...)
		d[i] ^= 0x40
		if _, _, err := decodeAll(d); !errors.Is(err, ErrFormat) {
			t.Fatalf("byte %d flipped: err %v", i, err)
		}
	}
	for n := 0; n < len(b); n++ {
		if _, _, err := decodeAll(b[:n]); !errors.Is(err, ErrFormat) {
			t.Fatalf("truncated to %d bytes: err %v", n, err)
		}
	}
	if _, _, err := decodeAll(append(append([]byte{}, b...), 0)); !errors.Is(err, ErrFormat) {
		t.Fatalf("a byte after the trailer: err %v", err)
	}
}

func TestEncoderRefusesOverCaps(t *testing.T) {
	for name, write := range map[string]func(e *Encoder) error{
		"body":   func(e *Encoder) error { return e.Body([32]byte{}, make([]byte, MaxBody+1)) },
		"empty":  func(e *Encoder) error { return e.Body([32]byte{}, nil) },
		"xattr":  func(e *Encoder) error { return e.Xattr(1, "user.x", make([]byte, MaxXattrValue+1)) },
		"name":   func(e *Encoder) error { return e.Dirent(1, string(make([]byte, MaxName+1)), 2, 0) },
		"target": func(e *Encoder) error { return e.Inode(Inode{Target: string(make([]byte, MaxTarget+1))}) },
	} {
		e, err := NewEncoder(io.Discard, Header{ChunkSize: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		if err := write(e); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err %v", name, err)
		}
		if err := e.Close(); err == nil {
			t.Errorf("%s: Close after a failed write succeeded", name)
		}
	}
}

// FuzzDecode: any input gives records or an error, never a panic or a clean end without a
// valid trailer, and allocates at most one record's worth.
func FuzzDecode(f *testing.F) {
	b, _, _ := sample(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, recs, err := decodeAll(in)
		if err == nil {
			// A stream that decodes cleanly holds no body outside the caps.
			for _, r := range recs {
				if r.Type == TBody && (len(r.Data) == 0 || len(r.Data) > MaxBody) {
					t.Fatalf("body of %d bytes accepted", len(r.Data))
				}
			}
		} else if !errors.Is(err, ErrFormat) {
			t.Fatalf("error %v does not wrap ErrFormat", err)
		}
	})
}

// A Counter fed the stream in pieces of any size counts its chunk and body records.
func TestCounter(t *testing.T) {
	b, _, _ := sample(t)
	for _, step := range []int{1, 3, 7, 1000} {
		c := NewCounter()
		for i := 0; i < len(b); i += step {
			c.Write(b[i:min(len(b), i+step)])
		}
		if c.Chunks() != 1 || c.Bodies() != 1 {
			t.Errorf("pieces of %d: %d chunks, %d bodies, want 1 and 1", step, c.Chunks(), c.Bodies())
		}
	}
}
