package backend

// Damage in Badger's files (issue 12 §1): TestDamage builds a store once, then for each seed copies
// it, flips 1-10 bytes of one *.sst, *.vlog or MANIFEST file, reopens it and reads every file. Every read
// must give the file's exact bytes or ErrCorrupt, never other bytes, an error of another kind, a
// panic or a hang; fsck must finish and name exactly the files whose reads failed. Open may refuse
// a damaged store, but only with ErrCorrupt.
//
// Reproduce one seed: go test ./backend -run 'TestDamage/seed=17$' -v

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"
)

// dmgSeeds is how many damaged copies TestDamage checks; dmgHang is how long one operation may
// take before it counts as hung.
const (
	dmgSeeds = 60
	dmgHang  = 5 * time.Second
)

type dmgFile struct {
	vol, path string // volume or "volume@snapshot"; path from its root, "/d1/f3"
	data      []byte
}

func (f dmgFile) label() string { return f.vol + ":" + f.path }

// buildDamageStore fills a store in dir: volume "small" (64 KiB chunks, files of a few shared
// contents with extents of their own: mostly metadata in SST blocks) and volume "big" (128 KiB chunks of random
// bytes: bodies in 1 MiB value-log files, zstd-compressed text back in the LSM tree).
func buildDamageStore(t *testing.T, dir string) []dmgFile {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	var files []dmgFile
	pool := make([][]byte, 6)
	for i := range pool {
		pool[i] = dmgContent(r, r.IntN(150<<10))
	}
	// Three sessions, each closed (so flushed to its own SST file).
	for session := range 3 {
		s, err := Open(ctx, dir, Options{GCInterval: -1, ValueLogFileSize: 1 << 20, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		for _, vs := range []struct {
			name  string
			opts  map[string]string
			files int
			min   int
			max   int
		}{
			{"small", map[string]string{"chunk-size": "65536"}, 200, 0, 0},
			{"big", map[string]string{"chunk-size": "131072", "compression": "zstd"}, 10, 100 << 10, 700 << 10},
		} {
			var v *View
			if session == 0 {
				v = mustVolume(t, s, vs.name, vs.opts)
			} else if v, err = s.OpenVolume(ctx, vs.name); err != nil {
				t.Fatal(err)
			}
			dirs := map[string]Ino{}
			for i := range 3 {
				d := fmt.Sprintf("s%dd%d", session, i)
				a, err := v.Mknod(ctx, RootIno, d, NewNode{Mode: syscall.S_IFDIR | 0o755})
				if err != nil {
					t.Fatal(err)
				}
				dirs["/"+d] = a.Ino
			}
			for i := range vs.files {
				d := fmt.Sprintf("/s%dd%d", session, i%3)
				name := fmt.Sprintf("f%d", i)
				ino := mustFile(t, v, dirs[d], name)
				var data []byte
				if vs.name == "small" {
					// Contents from a small pool: few distinct bodies, so the tables are
					// mostly metadata (inodes, entries, chunk maps, extents).
					data = bytes.Clone(pool[r.IntN(len(pool))])
				} else {
					data = dmgContent(r, vs.min+r.IntN(vs.max-vs.min))
				}
				if len(data) > 0 {
					if _, err := v.WriteAt(ctx, ino, data, 0); err != nil {
						t.Fatal(err)
					}
				}
				// Small writes inside the file leave extents.
				for range r.IntN(3) {
					if len(data) < 100 {
						break
					}
					off := r.IntN(len(data) - 50)
					patch := dmgContent(r, 1+r.IntN(50))
					if _, err := v.WriteAt(ctx, ino, patch, int64(off)); err != nil {
						t.Fatal(err)
					}
					copy(data[off:], patch)
				}
				files = append(files, dmgFile{vs.name, d + "/" + name, data})
			}
		}
		if session == 1 {
			files = append(files, snapshotAndRewrite(t, s, r, files)...)
		}
		fsckClean(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// snapshotAndRewrite snapshots volume "big" as "s1" and rewrites the first chunk of every other
// file of it written so far; it returns the snapshot's files (volume "big@s1").
func snapshotAndRewrite(t *testing.T, s *Store, r *rand.Rand, files []dmgFile) []dmgFile {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateSnapshot(ctx, "big", "s1"); err != nil {
		t.Fatal(err)
	}
	v, err := s.OpenVolume(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	var snap []dmgFile
	for i := range files {
		f := &files[i]
		if f.vol != "big" {
			continue
		}
		snap = append(snap, dmgFile{"big@s1", f.path, bytes.Clone(f.data)})
		if len(snap)%2 == 0 {
			continue
		}
		ino := RootIno
		for _, name := range strings.Split(strings.TrimPrefix(f.path, "/"), "/") {
			a, err := v.Lookup(ctx, ino, name)
			if err != nil {
				t.Fatal(err)
			}
			ino = a.Ino
		}
		patch := dmgContent(r, v.ChunkSize())
		if _, err := v.WriteAt(ctx, ino, patch, 0); err != nil {
			t.Fatal(err)
		}
		copy(f.data, patch)
		f.data = append(f.data, patch[min(len(patch), len(f.data)):]...)
	}
	return snap
}

// quietLog drops the store's logs: damaged stores log every error they meet.
var quietLog = slog.New(slog.DiscardHandler)

// dmgContent is random bytes, or (one time in three) compressible text.
func dmgContent(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	if r.IntN(3) == 0 {
		for i := range b {
			b[i] = "abcdefgh \n"[r.IntN(10)]
		}
		return b
	}
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestDamage(t *testing.T) {
	pristine := t.TempDir()
	files := buildDamageStore(t, pristine)
	var refused, flipped, checked, failed int
	for seed := range uint64(dmgSeeds) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, pristine, dir)
			n := damageFile(t, dir, rand.New(rand.NewPCG(seed, 12)))
			flipped += n
			ok, bad := checkDamaged(t, dir, files)
			if ok+bad == 0 {
				refused++
			}
			checked += ok + bad
			failed += bad
		})
	}
	t.Logf("%d seeds: %d bytes flipped, %d refused to open, %d file reads checked, %d gave ErrCorrupt", dmgSeeds, flipped, refused, checked, failed)
}

// damageFile flips 1-10 bytes of one *.sst, *.vlog or MANIFEST file of dir (picked by r) and returns how many.
func damageFile(t *testing.T, dir string, r *rand.Rand) int {
	t.Helper()
	var cands []string
	for _, pat := range []string{"*.sst", "*.vlog", "MANIFEST"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		cands = append(cands, m...)
	}
	slices.Sort(cands)
	var name string
	var b []byte
	for range 100 {
		name = cands[r.IntN(len(cands))]
		var err error
		if b, err = os.ReadFile(name); err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 {
			break
		}
	}
	if len(b) == 0 {
		t.Fatalf("no non-empty file among %v", cands)
	}
	n := 1 + r.IntN(10)
	var offs []int
	for range n {
		off := r.IntN(len(b))
		b[off] ^= byte(1 + r.IntN(255))
		offs = append(offs, off)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped %d bytes of %s (%d bytes) at %v", n, filepath.Base(name), len(b), offs)
	return n
}

// checkDamaged opens the damaged store in dir and checks every file against its original
// content; it returns how many read right and how many gave ErrCorrupt (0, 0 if Open refused).
func checkDamaged(t *testing.T, dir string, files []dmgFile) (ok, bad int) {
	t.Helper()
	ctx := context.Background()
	s, err := within(t, "Open", func() (*Store, error) {
		return Open(ctx, dir, Options{GCInterval: -1, ValueLogFileSize: 1 << 20, Logger: quietLog})
	})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open refused the damaged store with an error that is not ErrCorrupt: %v", err)
		}
		t.Logf("Open refused: %v", err)
		return 0, 0
	}
	defer func() {
		if _, err := within(t, "Close", func() (struct{}, error) { return struct{}{}, s.Close() }); err != nil {
			t.Logf("Close: %v", err)
		}
	}()
	views := map[string]*View{}
	var failed []string
	for _, f := range files {
		v := views[f.vol]
		if v == nil {
			if vol, snap, ok := strings.Cut(f.vol, "@"); ok {
				v, err = s.OpenSnapshot(ctx, vol, snap)
			} else {
				v, err = s.OpenVolume(ctx, f.vol)
			}
			if err != nil {
				t.Fatalf("open %s: %v", f.vol, err)
			}
			views[f.vol] = v
		}
		got, err := within(t, "read "+f.label(), func() ([]byte, error) { return readPath(ctx, v, f.path) })
		switch {
		case errors.Is(err, ErrCorrupt):
			failed = append(failed, f.label())
		case err != nil:
			t.Errorf("%s: error that is not ErrCorrupt: %v", f.label(), err)
		case !bytes.Equal(got, f.data):
			t.Errorf("%s: wrong bytes: read %d bytes, want %d (first difference at %d)", f.label(), len(got), len(f.data), firstDiff(got, f.data))
		default:
			ok++
		}
	}
	rep, err := within(t, "Fsck", func() (*FsckReport, error) { return s.Fsck(ctx, false) })
	if err != nil {
		t.Fatalf("fsck: %v", err)
	}
	slices.Sort(failed)
	if !slices.Equal(rep.Damaged, failed) {
		t.Errorf("fsck names damaged files %q, reads failed for %q; problems: %q", rep.Damaged, failed, rep.Problems)
	}
	if len(failed) > 0 && rep.Clean() {
		t.Errorf("fsck is clean, reads failed for %q", failed)
	}
	return ok, len(failed)
}

// readPath looks path up from the root and reads the whole file.
func readPath(ctx context.Context, v *View, path string) ([]byte, error) {
	ino := RootIno
	for _, name := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		a, err := v.Lookup(ctx, ino, name)
		if err != nil {
			return nil, err
		}
		ino = a.Ino
	}
	a, err := v.GetAttr(ctx, ino)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, a.Size)
	n, err := v.ReadAt(ctx, ino, buf, 0)
	return buf[:n], err
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// within runs f, failing the test if it takes longer than dmgHang (f's goroutine is left
// behind) or panics.
func within[T any](t *testing.T, what string, f func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
		pan any
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.pan = p
			}
			done <- r
		}()
		r.v, r.err = f()
	}()
	select {
	case r := <-done:
		if r.pan != nil {
			t.Fatalf("%s panicked: %v", what, r.pan)
		}
		return r.v, r.err
	case <-time.After(dmgHang):
		t.Fatalf("%s hung for %v", what, dmgHang)
		panic("unreachable")
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := os.Mkdir(filepath.Join(to, e.Name()), 0o755); err != nil {
				t.Fatal(err)
			}
			copyDir(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
			continue
		}
		if !e.Type().IsRegular() {
			t.Fatalf("%s: not a regular file", e.Name())
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestEnginePanicIsErrCorrupt: a panic inside a transaction (what Badger does on some damaged
// blocks) is ErrCorrupt, leaves the write lock free and commits nothing of the transaction.
func TestEnginePanicIsErrCorrupt(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	s.log = quietLog
	key := []byte("Atest-panic")
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"view", func() error { return s.view(func(t *tx) error { panic("table.(*blockIterator).setIdx") }) }},
		{"update before a write", func() error { return s.update(ctx, func(t *tx) error { panic("boom") }) }},
		{"update after a write", func() error {
			return s.update(ctx, func(t *tx) error {
				if err := t.set(key, []byte("half")); err != nil {
					return err
				}
				panic("boom")
			})
		}},
		{"guarded", func() error { return s.guarded("gc", func() error { panic("boom") }) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			// The write lock is free and the panicked transaction left nothing behind.
			_, err := within(t, "update after the panic", func() (struct{}, error) {
				return struct{}{}, s.update(ctx, func(t *tx) error {
					if _, err := t.txn.Get(key); err == nil {
						return fmt.Errorf("the panicked transaction's write was committed")
					}
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if n := s.panics.Load(); n != 4 {
		t.Errorf("%d panics counted, want 4", n)
	}
}

// TestFsckNamesDamagedMetadata: damage that Badger's checksums cannot see (a metadata value that
// no longer decodes, written as Badger would return it) fails the reads of that one file with
// ErrCorrupt, leaves its siblings readable, and fsck finishes and names exactly that file.
func TestFsckNamesDamagedMetadata(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		key  func(tree uint32, dir, ino Ino) []byte
	}{
		{"inode", func(tree uint32, dir, ino Ino) []byte { return inodeLKey(tree, ino) }},
		{"directory entry", func(tree uint32, dir, ino Ino) []byte { return direntLKey(tree, dir, "victim") }},
		{"chunk map", func(tree uint32, dir, ino Ino) []byte { return chunkLKey(tree, ino, 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			s.log = quietLog
			v := mustVolume(t, s, "v", map[string]string{"chunk-size": "65536"})
			d, err := v.Mknod(ctx, RootIno, "d", NewNode{Mode: syscall.S_IFDIR | 0o755})
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(3, 4))
			want := map[string][]byte{}
			var victim Ino
			for _, name := range []string{"a", "victim", "z"} {
				ino := mustFile(t, v, d.Ino, name)
				data := dmgContent(r, 200<<10)
				if _, err := v.WriteAt(ctx, ino, data, 0); err != nil {
					t.Fatal(err)
				}
				want["/d/"+name] = data
				if name == "victim" {
					victim = ino
				}
			}
			node, _, err := v.target()
			if err != nil {
				t.Fatal(err)
			}
			key := versionKey(tc.key(v.tree, d.Ino, victim), node)
			if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, []byte{tagLive, 0xde, 0xad}) }); err != nil {
				t.Fatal(err)
			}
			for p, data := range want {
				got, err := readPath(ctx, v, p)
				switch {
				case p == "/d/victim" && !errors.Is(err, ErrCorrupt):
					t.Errorf("%s: got %v, want ErrCorrupt", p, err)
				case p != "/d/victim" && (err != nil || !bytes.Equal(got, data)):
					t.Errorf("%s: a sibling of the damaged file: %v", p, err)
				}
			}
			rep, err := s.Fsck(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rep.Damaged, []string{"v:/d/victim"}) {
				t.Errorf("fsck names %q, want v:/d/victim; problems %q", rep.Damaged, rep.Problems)
			}
		})
	}
}

// BenchmarkVerifyTables is what Open's check of every table costs (MB/s of tables, in the page
// cache), against opening the same store without it (open-ms, Badger's own open and ours).
func BenchmarkVerifyTables(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	v := mustVolume(b, s, "v", map[string]string{"chunk-size": "65536"})
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 1000 { // 1000 bodies of 60 KiB stay in the LSM tree: about 60 MB of tables
		ino := mustFile(b, v, RootIno, fmt.Sprintf("f%d", i))
		if _, err := v.WriteAt(ctx, ino, dmgContent(r, 60<<10), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	var size int64
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range ssts {
		fi, err := os.Stat(f)
		if err != nil {
			b.Fatal(err)
		}
		size += fi.Size()
	}
	bo := badger.DefaultOptions(dir)
	b.SetBytes(size)
	for b.Loop() {
		if err := verifyTables(dir, bo, quietLog); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	s, err = Open(ctx, dir, Options{GCInterval: -1, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "open-ms")
	s.Close()
}

// TestDamagedValueLogHeader: an entry header in the value log whose key length was damaged made
// Badger's read fail without releasing the file's read lock (when value checksums are off), so
// Close then hung for ever (SIGTERM did not stop the daemon). Now the read is ErrCorrupt and
// Close returns.
func TestDamagedValueLogHeader(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1, ValueLogFileSize: 1 << 20, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "v", map[string]string{"chunk-size": "131072"})
	r := rand.New(rand.NewPCG(9, 9))
	want := map[Ino][]byte{}
	for i := range 8 { // 2.4 MB of bodies: 000001.vlog is not the newest file
		ino := mustFile(t, v, RootIno, fmt.Sprintf("f%d", i))
		data := dmgContent(r, 300<<10)
		for data[0] == 'a' || data[0] == 'b' { // random bytes: its bodies go to the value log
			data = dmgContent(r, 300<<10)
		}
		if _, err := v.WriteAt(ctx, ino, data, 0); err != nil {
			t.Fatal(err)
		}
		want[ino] = data
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The first entry starts after the file's 20-byte header: meta, user meta, then the key
	// length (a one-byte varint: 41, a body key and its version).
	name := filepath.Join(dir, "000001.vlog")
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0x7f}, 22); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err = Open(ctx, dir, Options{GCInterval: -1, ValueLogFileSize: 1 << 20, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	v, err = s.OpenVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for ino, data := range want {
		got, err := within(t, "read", func() ([]byte, error) {
			buf := make([]byte, len(data))
			n, err := v.ReadAt(ctx, ino, buf, 0)
			return buf[:n], err
		})
		switch {
		case errors.Is(err, ErrCorrupt):
			bad++
		case err != nil || !bytes.Equal(got, data):
			t.Errorf("inode %d: %v, want its bytes or ErrCorrupt", ino, err)
		}
	}
	if bad != 1 {
		t.Errorf("%d files gave ErrCorrupt, want the one whose chunk is the damaged entry", bad)
	}
	if _, err := within(t, "Close", func() (struct{}, error) { return struct{}{}, s.Close() }); err != nil {
		t.Fatal(err)
	}
}

// TestOpenErrClass: badger.Open's refusals of damaged content are ErrCorrupt; the system's
// refusals (a store in use, no access) are not, even though Badger keeps only their text.
func TestOpenErrClass(t *testing.T) {
	for _, tc := range []struct {
		err     error
		corrupt bool
	}{
		{y.Wrapf(y.ErrChecksumMismatch, "failed to verify checksum for table: 000003.sst"), true},
		{errors.New("While opening vlog file 12 err: Error for the KEY ID 81 err: Invalid datakey id"), true},
		{errors.New("manifest has bad checksum"), true},
		{y.Wrapf(syscall.EAGAIN, "Cannot acquire directory lock on %q. Another process is using this Badger database.", "/s"), false},
		{y.Wrapf(&fs.PathError{Op: "open", Path: "/s/MANIFEST", Err: syscall.EACCES}, "Opening file"), false},
		{&fs.PathError{Op: "open", Path: "/s/MANIFEST", Err: syscall.ENOSPC}, false},
	} {
		if got := errors.Is(openErr(tc.err), ErrCorrupt); got != tc.corrupt {
			t.Errorf("openErr(%q) is ErrCorrupt: %v, want %v", tc.err, got, tc.corrupt)
		}
	}
	if err := engineErr(y.Wrapf(y.ErrChecksumMismatch, "value corrupted")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("engineErr of a wrapped checksum mismatch: %v", err)
	}
	// A second Open of a store in use is refused, but not as damage.
	dir := t.TempDir()
	s, err := Open(context.Background(), dir, Options{GCInterval: -1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(context.Background(), dir, Options{GCInterval: -1, Logger: quietLog}); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("second Open of a store in use: %v, want an error that is not ErrCorrupt", err)
	}
}

// TestFsckFindsTableDamagedWhileOpen: a table damaged while the store is open (which Badger's
// reads take for missing keys) is a problem fsck names.
func TestFsckFindsTableDamagedWhileOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "v", nil)
	for i := range 50 {
		mustFile(t, v, RootIno, fmt.Sprintf("f%d", i))
	}
	if err := s.Close(); err != nil { // flushes the memtable to a table
		t.Fatal(err)
	}
	if s, err = Open(ctx, dir, Options{GCInterval: -1, Logger: quietLog}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fsckClean(t, s)
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) == 0 {
		t.Fatalf("no table (%v)", err)
	}
	f, err := os.OpenFile(ssts[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0x00, 0xff}, 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rep, err := s.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Problems {
		found = found || strings.Contains(p, "damaged table file "+filepath.Base(ssts[0]))
	}
	if !found {
		t.Errorf("fsck does not name the damaged table %s: %q", filepath.Base(ssts[0]), rep.Problems)
	}
	// Repair would count references in scans that may have missed the table's keys: refused.
	if rep, err = s.Fsck(ctx, true); err != nil {
		t.Fatal(err)
	}
	if len(rep.Repaired) > 0 || !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.HasPrefix(p, "not repaired") }) {
		t.Errorf("fsck --repair on a damaged table repaired %q; problems %q", rep.Repaired, rep.Problems)
	}
}

// BenchmarkChecksumCost: ReadChunk of 256 KiB chunks whose bodies are in the value log, with
// Badger's checksum checks (block checksums, value-log CRCs) and without, interleaved in one run
// so that both see the same machine. Reports each one's ns per read and their ratio.
func BenchmarkChecksumCost(b *testing.B) {
	ctx := context.Background()
	const chunks = 64
	type side struct {
		v   *View
		ino Ino
		d   time.Duration
	}
	var sides [2]*side
	for i, off := range []bool{false, true} {
		s, err := Open(ctx, b.TempDir(), Options{GCInterval: -1, Logger: quietLog, noChecksums: off})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		v := mustVolume(b, s, "v", nil)
		ino := mustFile(b, v, RootIno, "f")
		if _, err := v.WriteAt(ctx, ino, dmgContent(rand.New(rand.NewPCG(1, 1)), chunks*v.ChunkSize()), 0); err != nil {
			b.Fatal(err)
		}
		sides[i] = &side{v: v, ino: ino}
	}
	buf := make([]byte, sides[0].v.ChunkSize())
	b.SetBytes(int64(2 * len(buf)))
	i := uint64(0)
	for b.Loop() {
		for _, sd := range sides {
			start := time.Now()
			if _, err := sd.v.ReadChunk(ctx, sd.ino, i%chunks, buf); err != nil {
				b.Fatal(err)
			}
			sd.d += time.Since(start)
		}
		i++
	}
	on, off := float64(sides[0].d.Nanoseconds())/float64(i), float64(sides[1].d.Nanoseconds())/float64(i)
	b.ReportMetric(on, "checked-ns/read")
	b.ReportMetric(off, "unchecked-ns/read")
	b.ReportMetric(on/off, "ratio")
}

// FuzzVerifyTable: verifyTable on any bytes (a real table, damaged) returns, never panics; and
// a table it passes opens in Badger and reads without a panic.
func FuzzVerifyTable(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(context.Background(), dir, Options{GCInterval: -1, Logger: quietLog})
	if err != nil {
		f.Fatal(err)
	}
	v := mustVolume(f, s, "v", nil)
	for i := range 30 {
		mustFile(f, v, RootIno, fmt.Sprintf("f%d", i))
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) == 0 {
		f.Fatalf("no table (%v)", err)
	}
	seed, err := os.ReadFile(ssts[0])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{})
	bo := badger.DefaultOptions(dir)
	f.Fuzz(func(t *testing.T, b []byte) {
		name := filepath.Join(t.TempDir(), "000001.sst")
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := verifyTable(name, bo, badger.TableManifest{Compression: bo.Compression}); err != nil {
			return
		}
		if len(b) == 0 {
			t.Fatal("an empty file passed")
		}
	})
}

// TestVerifyTableRefusesHugeBlock: a block whose (damaged) Snappy header claims gigabytes is
// refused before anything allocates them (Badger's decompression would).
func TestVerifyTableRefusesHugeBlock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), dir, Options{GCInterval: -1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	v := mustVolume(t, s, "v", nil)
	mustFile(t, v, RootIno, "f")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(ssts) == 0 {
		t.Fatalf("no table (%v)", err)
	}
	b, err := os.ReadFile(ssts[0])
	if err != nil {
		t.Fatal(err)
	}
	copy(b, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}) // the first block's decoded length: 4 GiB - 1
	if err := os.WriteFile(ssts[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	bo := badger.DefaultOptions(dir)
	err = verifyTable(ssts[0], bo, badger.TableManifest{Compression: bo.Compression})
	if err == nil || !strings.Contains(err.Error(), "claims to decompress") {
		t.Errorf("verifyTable: %v, want the block's claimed size refused", err)
	}
}
