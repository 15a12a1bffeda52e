package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestOnlyBodiesReachTheValueLog checks the rule the lock-free value-log rewrite rests on: t.set
// refuses a non-body value that Badger would put in the value log, and the largest metadata
// values that fusevol writes fit below the threshold.
func TestOnlyBodiesReachTheValueLog(t *testing.T) {
	s := openTestStore(t)
	cases := []struct {
		name string
		key  []byte
		n    int
		ok   bool
	}{
		{"largest xattr value", versionKey(metaKind(1, kXattr, 2), 1), 1 + maxXattrValue, true},
		{"largest extent", versionKey(extentLKey(1, 2, 0, 1), 1), extentHeader + maxExtentBytes, true},
		{"metadata at the threshold", versionKey(metaKind(1, kXattr, 2), 1), valueThreshold, false},
		{"volume record at the threshold", volumeKey("v"), valueThreshold, false},
		{"chunk body", bodyKey(Hash{1}), MaxChunkSize + 1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.update(context.Background(), func(w *tx) error {
				if err := w.set(c.key, make([]byte, c.n)); err != nil {
					return err
				}
				return errStopTx
			})
			if c.ok && !errors.Is(err, errStopTx) || !c.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("set of %d bytes: %v", c.n, err)
			}
		})
	}
	if err := s.update(context.Background(), func(w *tx) error { return w.delete(bodyKey(Hash{1})) }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("delete of a body outside sweepDead: %v", err)
	}
}

var errStopTx = errors.New("roll back")

// TestDeadBodyRevivedAndSwept follows one chunk body through its last reference, a revival by
// new data with the same content, and the sweep after its final release.
func TestDeadBodyRevivedAndSwept(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", nil)
	data := randBytes(DefaultChunkSize)
	h := v.PrepareChunk(0, data).hash
	write := func(name string) Ino {
		ino := mustFile(t, v, RootIno, name)
		if _, err := v.WriteAt(ctx, ino, data, 0); err != nil {
			t.Fatal(err)
		}
		return ino
	}
	remove := func(name string, ino Ino) {
		if err := v.Unlink(ctx, RootIno, name); err != nil {
			t.Fatal(err)
		}
		if err := v.Forget(ctx, ino); err != nil {
			t.Fatal(err)
		}
	}
	state := func() (ref, body, dead bool) {
		err := s.view(func(w *tx) error {
			for _, c := range []struct {
				k []byte
				p *bool
			}{{refKey(h), &ref}, {bodyKey(h), &body}, {deadKey(h), &dead}} {
				_, err := w.txn.Get(c.k)
				*c.p = err == nil
				if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ref, body, dead
	}
	expect := func(step string, ref, body, dead bool) {
		t.Helper()
		r, b, d := state()
		if r != ref || b != body || d != dead {
			t.Fatalf("%s: refcount %v body %v dead marker %v, want %v %v %v", step, r, b, d, ref, body, dead)
		}
		fsckClean(t, s)
	}
	a := write("a")
	expect("written", true, true, false)
	remove("a", a)
	expect("last reference dropped", false, true, true)
	b := write("b")
	expect("revived", true, true, false)
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	expect("gc of a referenced chunk", true, true, false)
	if got := readAll(t, v, b); !bytes.Equal(got, data) {
		t.Fatal("revived body reads wrong")
	}
	remove("b", b)
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	expect("swept", false, false, false)
	if n, err := s.sweptBytes(); err != nil || n != 0 {
		t.Fatalf("swept counter after an explicit gc: %d %v", n, err)
	}
}

// TestFsckRepairsDeadMarkers damages the marker invariants (D only without R, always with B) and
// expects fsck to name the damage and repair to fix it.
func TestFsckRepairsDeadMarkers(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "v", nil)
	ino := mustFile(t, v, RootIno, "f")
	data := randBytes(DefaultChunkSize)
	if _, err := v.WriteAt(ctx, ino, data, 0); err != nil {
		t.Fatal(err)
	}
	h := v.PrepareChunk(0, data).hash
	stray := Hash{7}
	if err := s.update(ctx, func(w *tx) error {
		if err := w.markDead(h, 1); err != nil { // a referenced chunk marked dead
			return err
		}
		return w.set(bodyKey(stray), []byte{0, 1}) // a body with neither refcount nor marker
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 3 { // marker with refcount, stray body, stray body hash mismatch
		t.Fatalf("fsck problems: %q", rep.Problems)
	}
	if _, err := s.Fsck(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, s)
	if got := readAll(t, v, ino); !bytes.Equal(got, data) {
		t.Fatal("repair damaged a referenced chunk")
	}
}

// TestUpgradeFormat turns a store back into format 1 (metadata values of 1 KiB or more written to
// the value log, no format key) and expects Open to move them to the LSM tree and record format 2;
// a value too large to move keeps the store in legacy GC.
func TestUpgradeFormat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "v", nil)
	ino := mustFile(t, v, RootIno, "f")
	xv := randBytes(maxXattrValue)
	if err := v.SetXattr(ctx, ino, "user.big", xv, 0); err != nil {
		t.Fatal(err)
	}
	big := versionKey(xattrLKey(v.tree, ino, "user.huge"), s.vols["v"].Head)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	legacy := func(extra func(*badger.Txn) error) {
		db, err := badger.Open(badger.DefaultOptions(dir).WithValueThreshold(legacyValueThreshold).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(txn *badger.Txn) error {
			if err := txn.Delete(formatKey); err != nil {
				return err
			}
			return extra(txn)
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	reopen := func(wantLegacy bool) *Store {
		t.Helper()
		s, err := Open(ctx, dir, Options{GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if s.legacy.Load() != wantLegacy {
			t.Fatalf("legacy GC: %v, want %v", s.legacy.Load(), wantLegacy)
		}
		var format uint64
		if err := s.db.View(func(txn *badger.Txn) error { format, err = getUint64(txn, formatKey); return err }); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]uint64{false: storeFormat, true: 0}[wantLegacy]; format != want {
			t.Fatalf("format %d, want %d", format, want)
		}
		fsckClean(t, s)
		v, err := s.OpenVolume(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.GetXattr(ctx, ino, "user.big")
		if err != nil || !bytes.Equal(got, xv) {
			t.Fatalf("xattr after the upgrade: %d bytes, %v", len(got), err)
		}
		return s
	}
	huge := append([]byte{tagLive}, make([]byte, valueThreshold)...) // no longer possible to write
	legacy(func(txn *badger.Txn) error { return txn.Set(big, huge) })
	s = reopen(true)
	if err := s.GC(ctx); err != nil { // the legacy path
		t.Fatal(err)
	}
	s.Close()
	legacy(func(txn *badger.Txn) error { return txn.Delete(big) })
	s = reopen(false)
	s.Close()
	s = reopen(false) // format 2 already: nothing to do
	s.Close()
}

// TestRewriteRacesDeletes runs value-log rewrites (background passes every few milliseconds and
// explicit GCs) while writers keep dropping and reviving the same chunk bodies, then requires every
// file to read back as written and fsck to find no body without references, before and after a
// reopen with a full compaction: a deleted body that a rewrite brought back would show there.
func TestRewriteRacesDeletes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: 2 * time.Millisecond, ValueLogFileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	palette := make([][]byte, 6)
	for i := range palette {
		palette[i] = randBytes(DefaultChunkSize + i) // distinct lengths: distinct contents
		palette[i] = palette[i][:DefaultChunkSize]
	}
	const writers, files, ops = 2, 6, 400
	want := make([]map[string][]byte, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := range writers {
		v := mustVolume(t, s, fmt.Sprintf("v%d", w), nil)
		want[w] = map[string][]byte{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- churn(ctx, v, rand.New(rand.NewPCG(uint64(w), 1)), palette, files, ops, want[w])
		}()
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				errs <- nil
				return
			case <-time.After(20 * time.Millisecond):
				if err := s.GC(ctx); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	for range writers + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		if err := s.GC(ctx); err != nil {
			t.Fatal(err)
		}
		fsckClean(t, s)
		for w := range writers {
			v, err := s.OpenVolume(ctx, fmt.Sprintf("v%d", w))
			if err != nil {
				t.Fatal(err)
			}
			for name, data := range want[w] {
				a, err := v.Lookup(ctx, RootIno, name)
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, v, a.Ino); !bytes.Equal(got, data) {
					t.Fatalf("v%d/%s: %d bytes differ from the %d written", w, name, len(got), len(data))
				}
			}
		}
	}
	check(s)
	if s.rewrites.Load() == 0 {
		t.Fatal("no value-log file was rewritten: the test raced nothing")
	}
	t.Logf("%d value-log files rewritten", s.rewrites.Load())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, dir, Options{GCInterval: -1, ValueLogFileSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}

// churn rewrites, truncates and recreates files whose chunks come from a small palette, so bodies
// keep losing their last reference and coming back; want tracks what each file holds.
func churn(ctx context.Context, v *View, r *rand.Rand, palette [][]byte, files, ops int, want map[string][]byte) error {
	inos := map[string]Ino{}
	for i := range ops {
		name := fmt.Sprintf("f%d", r.IntN(files))
		ino, ok := inos[name]
		switch {
		case !ok:
			a, err := v.Mknod(ctx, RootIno, name, NewNode{Mode: 0o100644})
			if err != nil {
				return fmt.Errorf("op %d: create: %w", i, err)
			}
			inos[name], want[name] = a.Ino, nil
		case r.IntN(5) == 0:
			if err := v.Unlink(ctx, RootIno, name); err != nil {
				return fmt.Errorf("op %d: unlink: %w", i, err)
			}
			if err := v.Forget(ctx, ino); err != nil {
				return fmt.Errorf("op %d: forget: %w", i, err)
			}
			delete(inos, name)
			delete(want, name)
		default:
			data := bytes.Clone(palette[r.IntN(len(palette))])
			if _, err := v.SetAttr(ctx, ino, SetAttr{Valid: SetSize, Size: 0}); err != nil {
				return fmt.Errorf("op %d: truncate: %w", i, err)
			}
			if _, err := v.WriteAt(ctx, ino, data, 0); err != nil {
				return fmt.Errorf("op %d: write: %w", i, err)
			}
			want[name] = data
		}
	}
	return nil
}
