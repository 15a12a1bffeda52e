package repository

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/backend/sendstream"
)

// Full and incremental backups of random trees restore to what the store holds, each on its
// own; a second volume holding the same data adds no chunk.
func TestRoundTrip(t *testing.T) {
	for seed := range uint64(4) {
		t.Run("", func(t *testing.T) {
			s := newStore(t)
			r := newRepo(t, t.TempDir())
			vo := newVolume(t, s, "v", seed)
			vo.change(40)
			vo.snapshot("s1")
			first := backup(t, r, send(t, s, "v", "s1", ""))
			if first.Added == 0 || first.Added != first.Chunks || first.Verified != 0 {
				t.Fatalf("first backup: %+v", first)
			}
			for i, snap := range []string{"s2", "s3", "s4"} {
				vo.change(15)
				vo.snapshot(snap)
				from := []string{"s1", "s2", "s3"}[i]
				inc := send(t, s, "v", snap, from)
				st := backup(t, r, inc)
				var bodies int64
				countBodies(t, inc, &bodies)
				if st.Added+st.Verified != bodies {
					t.Errorf("%s: added %d + verified %d, the stream held %d bodies", snap, st.Added, st.Verified, bodies)
				}
			}
			// Forgetting the older ones leaves each later one whole.
			if _, err := r.Forget(context.Background(), "", Policy{Last: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Prune(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkRestores(t, r, s, "v", "s4")
			rep := checkClean(t, r)
			if rep.Backups != 1 || rep.Unreferenced != 0 {
				t.Errorf("after forget and prune: %+v", rep)
			}
		})
	}
}

func countBodies(t testing.TB, stream []byte, n *int64) {
	t.Helper()
	dec, err := sendstream.NewDecoder(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == sendstream.TBody {
			*n++
		}
	}
}

// Every backup of a chain restores, and a second volume with the same data costs no chunk.
func TestEveryBackupRestores(t *testing.T) {
	s := newStore(t)
	r := newRepo(t, t.TempDir())
	vo := newVolume(t, s, "v", 9)
	snaps := []string{"a", "b", "c"}
	for i, snap := range snaps {
		vo.change(30)
		vo.snapshot(snap)
		from := ""
		if i > 0 {
			from = snaps[i-1]
		}
		backup(t, r, send(t, s, "v", snap, from))
	}
	for _, snap := range snaps {
		checkRestores(t, r, s, "v", snap)
	}
	// The same tree under another volume: every chunk is there already.
	var b bytes.Buffer
	if _, err := r.Restore(context.Background(), "v", "c", &b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Receive(context.Background(), &b, "copy", backend.ReceiveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(context.Background(), "copy", "c2"); err != nil {
		t.Fatal(err)
	}
	st := backup(t, r, send(t, s, "copy", "c2", "c"))
	if st.Added != 0 {
		t.Errorf("a copy's incremental backup added %d chunks", st.Added)
	}
	list, err := r.List(context.Background(), "")
	if err != nil || len(list) != 4 || list[0].Volume != "copy" || list[1].Snapshot != "a" {
		t.Fatalf("list: %v %+v", err, list)
	}
	// Each chunk once: as many chunk files as distinct chunks the backups use.
	rep := checkClean(t, r)
	files, _ := r.st.List(context.Background(), "chunks/")
	if rep.Unreferenced != 0 || int64(len(files)) != rep.Chunks {
		t.Errorf("%d chunk files for %d distinct chunks (%+v)", len(files), rep.Chunks, rep)
	}
}

// The exclusive lock (prune) keeps backups out until it goes, and the other way round.
func TestLock(t *testing.T) {
	ctx := context.Background()
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := d.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := d.Lock(short, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a shared lock under an exclusive one: %v", err)
	}
	unlock()
	u1, err := d.Lock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := d.Lock(ctx, false)
	if err != nil {
		t.Fatalf("two shared locks: %v", err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	if _, err := d.Lock(short2, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an exclusive lock under shared ones: %v", err)
	}
	u1()
	u2()
	u3, err := d.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	u3()
}

// Refusals: a backup that exists, an incremental one without its base, a damaged stream, a
// directory that is no repository.
func TestBackupRefusals(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := t.TempDir()
	r := newRepo(t, dir)
	vo := newVolume(t, s, "v", 1)
	vo.change(20)
	vo.snapshot("s1")
	vo.change(5)
	vo.snapshot("s2")
	if _, err := r.Backup(ctx, bytes.NewReader(send(t, s, "v", "s2", "s1"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("incremental without its base: %v", err)
	}
	full := send(t, s, "v", "s1", "")
	bad := append([]byte{}, full...)
	bad[len(bad)/2] ^= 1
	if _, err := r.Backup(ctx, bytes.NewReader(bad)); !errors.Is(err, sendstream.ErrFormat) {
		t.Errorf("damaged stream: %v", err)
	}
	if _, err := r.Backup(ctx, bytes.NewReader(full[:len(full)-10])); !errors.Is(err, sendstream.ErrFormat) {
		t.Errorf("cut stream: %v", err)
	}
	if l, err := r.List(ctx, ""); err != nil || len(l) != 0 {
		t.Fatalf("after refused backups: %v %v", err, l)
	}
	backup(t, r, full)
	if _, err := r.Backup(ctx, bytes.NewReader(full)); !errors.Is(err, ErrExists) {
		t.Errorf("again: %v", err)
	}
	if _, err := r.Restore(ctx, "v", "nosuch", io.Discard); !errors.Is(err, ErrNotFound) {
		t.Errorf("restore of a missing backup: %v", err)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "x"), nil, 0o600)
	d, _ := NewDir(other)
	if _, err := Open(ctx, d, true, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("a directory holding other files: %v", err)
	}
	d, _ = NewDir(t.TempDir())
	if _, err := Open(ctx, d, false, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("an empty directory without create: %v", err)
	}
	checkClean(t, r)
}

// A damaged or missing chunk: restore fails naming it, and a receive of what it wrote builds
// nothing; check reports it; the next backup holding the chunk writes it again.
func TestDamagedChunk(t *testing.T) {
	ctx := context.Background()
	for _, damage := range []string{"flip", "truncate", "remove", "zstd"} {
		t.Run(damage, func(t *testing.T) {
			s := newStore(t)
			dir := t.TempDir()
			r := newRepo(t, dir)
			vo := newVolume(t, s, "v", 3)
			vo.change(20)
			vo.snapshot("s1")
			full := send(t, s, "v", "s1", "")
			backup(t, r, full)
			names, err := r.st.List(ctx, "chunks/")
			if err != nil || len(names) == 0 {
				t.Fatal(err)
			}
			victim := names[len(names)/2]
			if damage == "zstd" {
				victim = ""
				for _, n := range names {
					b, _ := os.ReadFile(filepath.Join(dir, n))
					if b[0] == codecZstd {
						victim = n
					}
				}
				if victim == "" {
					t.Fatal("no compressed chunk")
				}
			}
			p := filepath.Join(dir, victim)
			b, _ := os.ReadFile(p)
			switch damage {
			case "flip", "zstd":
				b[len(b)-1] ^= 0x40
				os.WriteFile(p, b, 0o600)
			case "truncate":
				os.WriteFile(p, b[:len(b)/2], 0o600)
			case "remove":
				os.Remove(p)
			}
			var out bytes.Buffer
			_, err = r.Restore(ctx, "v", "s1", &out)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("restore over a damaged chunk: %v", err)
			}
			t.Logf("restore: %v", err)
			s2 := newStore(t)
			if _, err := s2.Receive(ctx, &out, "w", backend.ReceiveOptions{}); err == nil {
				t.Fatal("the partial restore stream was received")
			}
			if vols, _ := s2.ListVolumes(ctx); len(vols) != 0 {
				t.Fatalf("a refused restore left %v", vols)
			}
			rep, err := r.Check(ctx)
			if err != nil || rep.Clean() {
				t.Fatalf("check over a damaged chunk: %v %+v", err, rep)
			}
			// The same data backed up again (as another snapshot) repairs the chunk.
			vo.snapshot("s2")
			st := backup(t, r, send(t, s, "v", "s2", ""))
			if want := map[bool]int64{true: 0, false: 1}[damage == "remove"]; st.Repaired != want || st.Added != 1 {
				t.Errorf("backup over the damaged chunk: %+v", st)
			}
			checkClean(t, r)
			checkRestores(t, r, s, "v", "s1")
		})
	}
}

// Forget keeps what restic's rules keep, per volume, and prune deletes exactly the chunks
// only the forgotten backups used.
func TestForgetPrune(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := newRepo(t, t.TempDir())
	vo := newVolume(t, s, "v", 5)
	day := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	streams := map[string][]byte{}
	for i := range 12 {
		vo.change(6)
		name := "d" + string(rune('a'+i))
		vo.snapshot(name)
		streams[name] = retimed(t, send(t, s, "v", name, ""), day.AddDate(0, 0, i))
		backup(t, r, streams[name])
	}
	if _, err := r.Forget(ctx, "", Policy{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("forget without a rule: %v", err)
	}
	gone, err := r.Forget(ctx, "v", Policy{Daily: 3, Weekly: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Days 9, 10, 11 by the daily rule; ISO weeks: day 11 (Thu Nov 12, week 46) and the newest of
	// week 45 (Sun Nov 8, day 7).
	var left []string
	list, _ := r.List(ctx, "v")
	for _, b := range list {
		left = append(left, b.Snapshot)
	}
	if want := []string{"dh", "dj", "dk", "dl"}; !equal(left, want) || len(gone) != 8 {
		t.Fatalf("kept %v (forgot %d), want %v", left, len(gone), want)
	}
	rep := checkClean(t, r)
	if rep.Unreferenced == 0 {
		t.Fatalf("nothing unreferenced after forgetting 8 backups: %+v", rep)
	}
	st, err := r.Prune(ctx)
	if err != nil || st.Chunks != rep.Unreferenced || st.Bytes == 0 {
		t.Fatalf("prune: %v %+v, check counted %d unreferenced", err, st, rep.Unreferenced)
	}
	if rep := checkClean(t, r); rep.Unreferenced != 0 || rep.Chunks != st.Kept {
		t.Fatalf("after prune: %+v (%+v)", rep, st)
	}
	for _, snap := range left {
		if want, got := records(t, streams[snap]), records(t, restored(t, r, "v", snap)); want != got {
			t.Fatalf("%s restores differently:\n%s", snap, firstDiff(want, got))
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// cutReader yields n bytes of r and then fails, as a send killed midway.
type cutReader struct {
	r io.Reader
	n int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("connection lost")
	}
	if len(p) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

// An interrupted backup leaves no backup and a clean repository; sent again, what it wrote is
// verified, not written again.
func TestResume(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	r := newRepo(t, t.TempDir())
	vo := newVolume(t, s, "v", 11)
	vo.change(40)
	vo.snapshot("s1")
	full := send(t, s, "v", "s1", "")
	if _, err := r.Backup(ctx, &cutReader{r: bytes.NewReader(full), n: len(full) / 2}); err == nil {
		t.Fatal("a cut backup succeeded")
	}
	if l, _ := r.List(ctx, ""); len(l) != 0 {
		t.Fatalf("an interrupted backup is listed: %v", l)
	}
	rep := checkClean(t, r)
	if rep.Unreferenced == 0 {
		t.Fatal("the interrupted backup wrote no chunk")
	}
	st := backup(t, r, full)
	if st.Verified != rep.Unreferenced || st.Added+st.Verified != st.Chunks || st.Added == 0 {
		t.Fatalf("resumed backup: %+v; the interrupted one left %d chunks", st, rep.Unreferenced)
	}
	t.Logf("resumed: %d chunks verified, %d written", st.Verified, st.Added)
	checkRestores(t, r, s, "v", "s1")
}

// Dir refuses names that would leave it, and a Put whose reader fails leaves nothing.
func TestDirPut(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"../x", "a//b", "/a", "a/.tmp-x", "."} {
		if err := d.Put(ctx, n, bytes.NewReader(nil)); err == nil {
			t.Errorf("put %q worked", n)
		}
	}
	if err := d.Put(ctx, "a/b", &cutReader{r: bytes.NewReader(make([]byte, 100)), n: 10}); err == nil {
		t.Fatal("a failing put worked")
	}
	if left, _ := d.leftovers(); len(left) != 0 {
		t.Fatalf("a failed put left %v", left)
	}
	if err := d.Put(ctx, "a/b", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if l, err := d.List(ctx, "a/"); err != nil || len(l) != 1 || l[0] != "a/b" {
		t.Fatalf("list: %v %v", l, err)
	}
	if err := d.Delete(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "a/b"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
