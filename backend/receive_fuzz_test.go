package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/fusevol/fusevol/backend/sendstream"
)

// fuzzStream turns prog into a well-framed full stream of arbitrary records over a few inode
// numbers and names: what a hostile or buggy sender could write once the framing checks out.
func fuzzStream(t *testing.T, prog []byte) []byte {
	var buf bytes.Buffer
	e, err := sendstream.NewEncoder(&buf, sendstream.Header{ChunkSize: 64 << 10, NextIno: 20, Snapshot: "s",
		SnapshotID: "id", Mode: 0o755, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	modes := []uint32{syscall.S_IFDIR | 0o755, syscall.S_IFREG | 0o644, syscall.S_IFLNK | 0o777, syscall.S_IFIFO | 0o600, 0o644, syscall.S_IFDIR}
	names := []string{"a", "b", "c"}
	next := func() byte {
		if len(prog) == 0 {
			return 0
		}
		b := prog[0]
		prog = prog[1:]
		return b
	}
	for len(prog) > 0 {
		op, x, y := next(), next(), next()
		ino := uint64(1 + x%6)
		switch op % 8 {
		case 0:
			m := modes[int(y)%len(modes)]
			n := sendstream.Inode{Ino: ino, Mode: m, Nlink: uint32(1 + y/8%3), Size: uint64(y) * 70000, Parent: uint64(1 + y%3), Gen: 1}
			if m&syscall.S_IFMT == syscall.S_IFLNK {
				n.Target = "t"
			}
			err = e.Inode(n)
		case 1:
			err = e.Dirent(uint64(1+y%3), names[int(y/3)%len(names)], ino, modes[int(x)%len(modes)]&syscall.S_IFMT)
		case 2:
			err = e.Xattr(ino, "user."+names[int(y)%len(names)], []byte{y})
		case 3, 4:
			data := bytes.Repeat([]byte{y | 1}, 1+int(x)*7)
			h := blake3.Sum256(data)
			if op%8 == 4 && y%4 == 0 {
				h[0] ^= 1 // a body that does not match its hash
			}
			if err = e.Body(h, data); err == nil {
				err = e.Chunk(ino, uint64(y%5), h, uint32(len(data)))
			}
		case 5:
			err = e.Chunk(ino, uint64(y%5), blake3.Sum256([]byte{y}), 1) // a body nobody sent
		case 6:
			err = e.Hole(ino, uint64(y%5))
		case 7:
			err = e.Unlink(uint64(1+y%3), names[int(y)%len(names)])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzReceive: a stream whose framing is sound but whose records are anything either builds a
// volume that fsck finds clean, or is refused and leaves no volume behind.
func FuzzReceive(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 1, 1, 1, 0, 3, 1, 1})                                  // a file of 70000 bytes named a, chunk 1 of 8 bytes: received
	f.Add([]byte{0, 1, 1, 1, 1, 3, 3, 1, 4})                                  // a file, its entry, a chunk
	f.Add([]byte{0, 0, 0, 0, 1, 6, 1, 1, 0, 0, 3, 0, 2, 1, 0, 5, 0, 1})       // directories, xattr, missing body
	f.Add([]byte{0, 1, 1, 1, 1, 3, 4, 1, 4, 6, 1, 4, 7, 1, 3, 0, 1, 1, 1, 1}) // hole, unlink
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 300 {
			return
		}
		ctx := context.Background()
		s, err := Open(ctx, "", Options{InMemory: true, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = s.Receive(ctx, bytes.NewReader(fuzzStream(t, prog)), "w", ReceiveOptions{})
		if err == nil {
			rep, err := s.Fsck(ctx, false)
			if err != nil || !rep.Clean() {
				t.Fatalf("a received volume fsck does not find clean: %v %v", err, rep.Problems)
			}
			dumpView(t, liveView(t, s, "w"))
			return
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("refused with %v, want ErrInvalid", err)
		}
		s.mu.RLock()
		left := fmt.Sprint(s.vols)
		s.mu.RUnlock()
		if left != "map[]" {
			t.Fatalf("refused (%v) but left %s", err, left)
		}
		if err := s.GC(ctx); err != nil {
			t.Fatal(err)
		}
		if st, err := s.Stats(ctx); err != nil || st.Chunks != 0 {
			t.Fatalf("refused (%v) but left %d chunks (%v)", err, st.Chunks, err)
		}
	})
}

// The fuzz seeds include a stream that is received: the fuzz target's success branch runs.
func TestFuzzStreamSeedIsReceived(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	if _, err := s.Receive(ctx, bytes.NewReader(fuzzStream(t, []byte{0, 1, 1, 1, 1, 0, 3, 1, 1})), "w", ReceiveOptions{}); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
	if got := dumpView(t, liveView(t, s, "w"))["/a"].Attr.Size; got != 70000 {
		t.Errorf("/a has %d bytes", got)
	}
}
