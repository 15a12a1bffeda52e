package repository

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/backend/sendstream"
)

func newStore(t testing.TB) *backend.Store {
	t.Helper()
	s, err := backend.Open(context.Background(), t.TempDir(), backend.Options{InMemory: true, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newRepo(t testing.TB, dir string) *Repository {
	t.Helper()
	d, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), d, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// volume is a volume of a test store, changed at random: files with holes, hard links,
// symlinks, xattrs, directories, a fifo, removals and truncations.
type volume struct {
	t     testing.TB
	s     *backend.Store
	name  string
	v     *backend.View
	rnd   *rand.Rand
	files []backend.Ino // regular files, for links and changes
	dirs  []backend.Ino
	n     int
}

func newVolume(t testing.TB, s *backend.Store, name string, seed uint64) *volume {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, name, backend.VolumeOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	v, err := s.OpenVolume(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return &volume{t: t, s: s, name: name, v: v, rnd: rand.New(rand.NewPCG(seed, 7)), dirs: []backend.Ino{backend.RootIno}}
}

func (vo *volume) must(err error) {
	vo.t.Helper()
	if err != nil {
		vo.t.Fatal(err)
	}
}

func (vo *volume) newName() string { vo.n++; return fmt.Sprintf("n%03d", vo.n) }

// data is n bytes that are partly repeated (so chunks dedup across files) and partly random.
func (vo *volume) data(n int) []byte {
	b := make([]byte, n)
	if vo.rnd.IntN(3) == 0 {
		for i := range b {
			b[i] = byte(i / 4096)
		}
		return b
	}
	for i := range b {
		b[i] = byte(vo.rnd.Uint32())
	}
	return b
}

// change makes n random changes.
func (vo *volume) change(n int) {
	ctx := context.Background()
	for range n {
		dir := vo.dirs[vo.rnd.IntN(len(vo.dirs))]
		switch op := vo.rnd.IntN(10); {
		case op < 4 || len(vo.files) == 0:
			a, err := vo.v.Mknod(ctx, dir, vo.newName(), backend.NewNode{Mode: syscall.S_IFREG | 0o644})
			vo.must(err)
			off := int64(vo.rnd.IntN(3)) * 200 << 10 // a hole before the data, sometimes
			_, err = vo.v.WriteAt(ctx, a.Ino, vo.data(1+vo.rnd.IntN(150<<10)), off)
			vo.must(err)
			vo.files = append(vo.files, a.Ino)
		case op == 4:
			a, err := vo.v.Mknod(ctx, dir, vo.newName(), backend.NewNode{Mode: syscall.S_IFDIR | 0o755})
			vo.must(err)
			vo.dirs = append(vo.dirs, a.Ino)
		case op == 5:
			_, err := vo.v.Mknod(ctx, dir, vo.newName(), backend.NewNode{Mode: syscall.S_IFLNK | 0o777, Target: "target/" + vo.newName()})
			vo.must(err)
			if vo.rnd.IntN(4) == 0 {
				_, err = vo.v.Mknod(ctx, dir, vo.newName(), backend.NewNode{Mode: syscall.S_IFIFO | 0o600})
				vo.must(err)
			}
		case op == 6:
			f := vo.files[vo.rnd.IntN(len(vo.files))]
			_, err := vo.v.Link(ctx, f, dir, vo.newName())
			vo.must(err)
		case op == 7:
			f := vo.files[vo.rnd.IntN(len(vo.files))]
			vo.must(vo.v.SetXattr(ctx, f, "user."+vo.newName(), vo.data(1+vo.rnd.IntN(100)), 0))
		case op == 8:
			f := vo.files[vo.rnd.IntN(len(vo.files))]
			_, err := vo.v.WriteAt(ctx, f, vo.data(1+vo.rnd.IntN(10<<10)), int64(vo.rnd.IntN(300<<10)))
			vo.must(err)
		default:
			f := vo.files[vo.rnd.IntN(len(vo.files))]
			_, err := vo.v.SetAttr(ctx, f, backend.SetAttr{Valid: backend.SetSize, Size: uint64(vo.rnd.IntN(100 << 10))})
			vo.must(err)
		}
	}
	// Removals: entries of the root, files and directories alike (empty ones).
	ents, err := vo.v.ReadDir(ctx, backend.RootIno)
	vo.must(err)
	for _, e := range ents {
		if vo.rnd.IntN(8) != 0 {
			continue
		}
		if e.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			if err := vo.v.Rmdir(ctx, backend.RootIno, e.Name); err == nil {
				vo.dirs = slices.DeleteFunc(vo.dirs, func(d backend.Ino) bool { return d == e.Ino })
			}
			continue
		}
		vo.must(vo.v.Unlink(ctx, backend.RootIno, e.Name))
		if a, err := vo.v.GetAttr(ctx, e.Ino); err != nil || a.Nlink == 0 {
			vo.files = slices.DeleteFunc(vo.files, func(f backend.Ino) bool { return f == e.Ino })
		}
	}
}

func (vo *volume) snapshot(name string) {
	vo.t.Helper()
	_, err := vo.s.CreateSnapshot(context.Background(), vo.name, name)
	vo.must(err)
}

// send is volume@snap as a stream (from "": full).
func send(t testing.TB, s *backend.Store, volume, snap, from string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := s.Send(context.Background(), &b, volume, snap, from); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// records is a stream as sorted lines, one per record but bodies (the chunk records name
// them), the header without the volume's name: two streams of the same snapshot give the same.
func records(t testing.TB, stream []byte) string {
	t.Helper()
	dec, err := sendstream.NewDecoder(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	h := dec.Header()
	h.Volume, h.NextIno = "", 0 // the sender's inode counter is its live volume's, not the snapshot's
	lines := []string{fmt.Sprintf("header %+v", h)}
	for {
		r, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.Type == sendstream.TBody {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %+v dir=%d ino=%d name=%q kind=%o index=%d hash=%x len=%d data=%x",
			r.Type, r.Inode, r.Dir, r.Ino, r.Name, r.Kind, r.Index, r.Hash[:6], r.Length, r.Data))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// restored restores volume@snap from r into a new store and sends it back: what came back.
func restored(t testing.TB, r *Repository, volume, snap string) []byte {
	t.Helper()
	ctx := context.Background()
	var b bytes.Buffer
	if _, err := r.Restore(ctx, volume, snap, &b); err != nil {
		t.Fatalf("restore %s@%s: %v", volume, snap, err)
	}
	s := newStore(t)
	if _, err := s.Receive(ctx, &b, "restored", backend.ReceiveOptions{}); err != nil {
		t.Fatalf("receive of the restored %s@%s: %v", volume, snap, err)
	}
	if rep, err := s.Fsck(ctx, false); err != nil || !rep.Clean() {
		t.Fatalf("fsck of the restored %s@%s: %v %v", volume, snap, err, rep)
	}
	return send(t, s, "restored", snap, "")
}

// checkRestores fails unless volume@snap restores to what the store holds.
func checkRestores(t testing.TB, r *Repository, s *backend.Store, volume, snap string) {
	t.Helper()
	want, got := records(t, send(t, s, volume, snap, "")), records(t, restored(t, r, volume, snap))
	if want != got {
		t.Fatalf("%s@%s restores differently:\n%s", volume, snap, firstDiff(want, got))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("line %d\nwant %s\ngot  %s", i, w[i], g[i])
		}
	}
	return fmt.Sprintf("want %d lines, got %d", len(w), len(g))
}

func backup(t testing.TB, r *Repository, stream []byte) BackupStats {
	t.Helper()
	st, err := r.Backup(context.Background(), bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func checkClean(t testing.TB, r *Repository) CheckReport {
	t.Helper()
	rep, err := r.Check(context.Background())
	if err != nil || !rep.Clean() {
		t.Fatalf("check: %v %+v", err, rep)
	}
	return rep
}

// retimed is a stream with its snapshot's creation time set to at (forget's retention reads it).
func retimed(t testing.TB, stream []byte, at time.Time) []byte {
	t.Helper()
	dec, err := sendstream.NewDecoder(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	h := dec.Header()
	h.Created = at.UnixNano()
	var out bytes.Buffer
	enc, err := sendstream.NewEncoder(&out, h)
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == sendstream.TBody {
			err = enc.Body(rec.Hash, rec.Data)
		} else {
			err = encode(enc, rec)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
