package fs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fusevol/fusevol/backend"
)

// TestSmallRandomWrites: small writes at random places of a file (several into one chunk, most of
// them committed as extents under a small dirty limit), random reads between them (of written and
// unwritten bytes of buffered chunks, and of chunks with commits in flight), fsyncs, reopens and a
// snapshot; the file, the store's copy and the snapshot match an in-memory model throughout.
func TestSmallRandomWrites(t *testing.T) {
	const cs = 64 << 10
	tv := newVolume(t, backendOpts(cs), Options{DirtyLimit: 8 * cs})
	ctx := context.Background()
	p := filepath.Join(tv.dir, "f")
	r := rand.New(rand.NewPCG(3, 4))
	size := 16 * cs
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(p, model, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { f.Close() }()
	var snap []byte
	for step := 0; step < 3000; step++ {
		switch k := r.IntN(100); {
		case k < 70:
			off := r.IntN(size + cs/2)
			if r.IntN(2) == 0 { // cluster writes into a few chunks
				off = r.IntN(3)*cs + r.IntN(cs)
			}
			b := make([]byte, 1+r.IntN(6000))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
			if end := off + len(b); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
				size = len(model)
			}
			copy(model[off:], b)
		case k < 92:
			off := r.IntN(len(model))
			got := make([]byte, min(1+r.IntN(3*cs/2), len(model)-off))
			if _, err := f.ReadAt(got, int64(off)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model[off:off+len(got)]) {
				t.Fatalf("step %d: read of %d bytes at %d differs", step, len(got), off)
			}
		case k < 95:
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		case k < 98:
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if f, err = os.OpenFile(p, os.O_RDWR, 0); err != nil {
				t.Fatal(err)
			}
		default:
			if snap != nil {
				continue
			}
			if err := f.Close(); err != nil { // close commits: the snapshot holds every closed file
				t.Fatal(err)
			}
			if _, err := tv.store.CreateSnapshot(ctx, "vol", "s"); err != nil {
				t.Fatal(err)
			}
			snap = bytes.Clone(model)
			if f, err = os.OpenFile(p, os.O_RDWR, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, model) {
		t.Fatalf("file after close: %d bytes (%v), want %d, equal %v", len(got), err, len(model), bytes.Equal(got, model))
	}
	read := func(v *backend.View, want []byte, what string) {
		t.Helper()
		a, err := v.Lookup(ctx, backend.RootIno, "f")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(want)+1)
		n, err := v.ReadAt(ctx, a.Ino, buf, 0)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("%s: %d bytes (%v), want %d, equal %v", what, n, err, len(want), bytes.Equal(buf[:n], want))
		}
	}
	read(tv.view, model, "store")
	if snap != nil {
		sv, err := tv.store.OpenSnapshot(ctx, "vol", "s")
		if err != nil {
			t.Fatal(err)
		}
		read(sv, snap, "snapshot")
	}
	rep, err := tv.store.Fsck(ctx, false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %v %v", rep, err)
	}
}

// gatedView holds every commit until gate is closed.
type gatedView struct {
	*backend.View
	gate chan struct{}
}

func (g *gatedView) CommitChunks(ctx context.Context, ino backend.Ino, chunks []backend.Chunk, minSize uint64) (backend.Attr, error) {
	<-g.gate
	return g.View.CommitChunks(ctx, ino, chunks, minSize)
}

type noInvalidate struct{}

func (noInvalidate) invalidateChunk(id, idx uint64) {}

// TestExtentsInFlight: while a chunk's extents are being committed, reads of the chunk (through
// the in-flight state, and through a new buffer that merges the stored contents) see them.
func TestExtentsInFlight(t *testing.T) {
	const cs = 64 << 10
	ctx := context.Background()
	_, v := openView(t, backendOpts(cs))
	a, err := v.Mknod(ctx, backend.RootIno, "f", backend.NewNode{Mode: 0o100644})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	model := make([]byte, cs)
	for i := range model {
		model[i] = byte(r.Uint32())
	}
	if _, err := v.CommitChunks(ctx, a.Ino, []backend.Chunk{v.PrepareChunk(0, model)}, 0); err != nil {
		t.Fatal(err)
	}
	g := &gatedView{View: v, gate: make(chan struct{})}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wb := newWriteback(wctx, testLogger(t), noInvalidate{}, v, cs, NewWriteBudget(64*cs))
	write := func(off int, n int) {
		t.Helper()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if _, err := wb.write(1, g, a.Ino, b, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], b)
	}
	check := func(off, n int, what string) {
		t.Helper()
		st := wb.get(1)
		p := make([]byte, n)
		ok, err := wb.readBuffered(st, 0, off, p)
		if err != nil || !ok || !bytes.Equal(p, model[off:off+n]) {
			t.Fatalf("%s: read of %d at %d: buffered %v, %v, equal %v", what, n, off, ok, err, bytes.Equal(p, model[off:off+n]))
		}
	}
	write(100, 4096)
	write(20000, 100) // two spans, two extents in one commit
	wb.kick()         // submits them; the commit waits at the gate
	check(0, cs, "in flight")
	write(9000, 50) // a new buffer of the same chunk
	check(0, cs, "new buffer over extents in flight")
	wb.kick()
	check(0, cs, "two commits in flight")
	close(g.gate)
	if err := wb.flush(ctx, 1); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, cs)
	if n, err := v.ReadAt(ctx, a.Ino, got, 0); err != nil || n != cs || !bytes.Equal(got, model) {
		t.Fatalf("stored: %d bytes, %v, equal %v", n, err, bytes.Equal(got, model))
	}
}

// TestUnloggedSpans: what fsync hands to the intent log is the written bytes of a buffered chunk,
// never the unwritten ones between its ranges.
func TestUnloggedSpans(t *testing.T) {
	const cs = 64 << 10
	ctx := context.Background()
	_, v := openView(t, backendOpts(cs))
	a, err := v.Mknod(ctx, backend.RootIno, "f", backend.NewNode{Mode: 0o100644})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wb := newWriteback(wctx, testLogger(t), noInvalidate{}, v, cs, NewWriteBudget(64*cs))
	for _, w := range []struct{ off, n int }{{100, 10}, {5000, 20}, {110, 5}} {
		if _, err := wb.write(1, v, a.Ino, bytes.Repeat([]byte{'x'}, w.n), int64(w.off)); err != nil {
			t.Fatal(err)
		}
	}
	st := wb.get(1)
	st.mu.Lock()
	ws := st.unlogged()
	st.mu.Unlock()
	var got []string
	for _, w := range ws {
		got = append(got, fmt.Sprintf("%d:%d:%t", w.Off, len(w.Data), bytes.Count(w.Data, []byte{'x'}) == len(w.Data)))
	}
	want := []string{"100:15:true", "5000:20:true"}
	if !slices.Equal(got, want) {
		t.Fatalf("unlogged: %q, want %q", got, want)
	}
	if err := wb.flush(ctx, 1); err != nil {
		t.Fatal(err)
	}
}
