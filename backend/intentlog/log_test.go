package intentlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

const testSize = 64 << 10

func rec(vol string, ino, off uint64, data string) Record {
	return Record{Volume: vol, Ino: ino, Off: off, Size: off + uint64(len(data)), Mtime: int64(ino*1000 + off), Data: []byte(data)}
}

func mustOpen(t *testing.T, dir string) (*Log, []Record) {
	t.Helper()
	l, recs, err := Open(dir, testSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, recs
}

func commit(t *testing.T, l *Log, rs []Record) uint64 {
	t.Helper()
	last, err := l.Append(rs)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(last); err != nil {
		t.Fatal(err)
	}
	return last
}

func sameRecords(t *testing.T, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.LSN != w.LSN || g.Volume != w.Volume || g.Ino != w.Ino || g.Off != w.Off || g.Size != w.Size || g.Mtime != w.Mtime || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestReopenReturnsSyncedRecords(t *testing.T) {
	dir := t.TempDir()
	l, recs := mustOpen(t, dir)
	if len(recs) != 0 {
		t.Fatalf("new log holds %d records", len(recs))
	}
	want := []Record{rec("v1", 2, 0, "hello"), rec("v1", 3, 4096, "world"), rec("v-two", 2, 7, "")}
	commit(t, l, want[:2])
	commit(t, l, want[2:])
	if want[0].LSN != 1 || want[2].LSN != 3 {
		t.Fatalf("LSNs %d..%d, want 1..3", want[0].LSN, want[2].LSN)
	}
	if f := l.Flushes(); f != 2 {
		t.Fatalf("%d flushes for two syncs", f)
	}
	l.Close()
	_, got := mustOpen(t, dir)
	sameRecords(t, got, want)
}

func TestTornTailEndsTheLog(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wreck func(b []byte, lastOff int) // damages the file contents after the first two records
	}{
		{"flipped byte in the last record", func(b []byte, last int) { b[last+20] ^= 0x40 }},
		{"last record cut short", func(b []byte, last int) { clear(b[last+10:]) }},
		{"length points past the segment", func(b []byte, last int) { b[last+4] = 0xff }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := mustOpen(t, dir)
			want := []Record{rec("v", 2, 0, "aaaa"), rec("v", 2, 4, "bbbb")}
			commit(t, l, want)
			last := dataStart + int(encodedLen(&want[0])+encodedLen(&want[1]))
			commit(t, l, []Record{rec("v", 2, 8, "cccccccc")})
			l.Close()
			path := filepath.Join(dir, "segment-0")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tc.wreck(b, last)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			l2, got := mustOpen(t, dir)
			sameRecords(t, got, want)
			// The next record goes where the damage began, with the next LSN.
			rs := []Record{rec("v", 2, 16, "dd")}
			commit(t, l2, rs)
			r := rs[0]
			if r.LSN != 3 {
				t.Fatalf("LSN after a torn tail: %d, want 3", r.LSN)
			}
			l2.Close()
			_, got = mustOpen(t, dir)
			sameRecords(t, got, append(want, r))
		})
	}
}

func TestReleaseStartsAnEmptyGeneration(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir)
	commit(t, l, []Record{rec("v", 2, 0, "old"), rec("v", 2, 3, "old")})
	if err := l.Release(0); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(1); err != nil {
		t.Fatal(err)
	}
	if b := l.Busy(); b[0] || b[1] {
		t.Fatalf("busy after release: %v", b)
	}
	l.Close()
	l2, got := mustOpen(t, dir)
	if len(got) != 0 {
		t.Fatalf("released records came back: %+v", got)
	}
	rs := []Record{rec("v", 2, 0, "new")}
	commit(t, l2, rs)
	r := rs[0]
	if r.LSN <= 2 {
		t.Fatalf("LSN %d after release reuses an old one", r.LSN)
	}
	l2.Close()
	_, got = mustOpen(t, dir)
	sameRecords(t, got, []Record{r})
}

func TestSegmentsFillAndSwitch(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir)
	data := string(bytes.Repeat([]byte("x"), 8<<10))
	var all []Record
	full := -1
	for i := 0; ; i++ {
		r := rec("v", 2, uint64(i)*8<<10, data)
		last, err := l.Append([]Record{r})
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		r.LSN = last
		all = append(all, r)
		if err := l.Sync(last); err != nil {
			t.Fatal(err)
		}
		select {
		case full = <-l.Full():
		default:
		}
		if i > 100 {
			t.Fatal("log never filled")
		}
	}
	if full != 0 {
		t.Fatalf("segment reported full: %d, want 0", full)
	}
	if b := l.Busy(); !b[0] || !b[1] {
		t.Fatalf("both segments should hold records: %v", b)
	}
	l.Close()
	l2, got := mustOpen(t, dir)
	sameRecords(t, got, all)
	// Releasing the full segment lets appends go on in it.
	if err := l2.Release(0); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Append([]Record{rec("v", 2, 0, data)}); err != nil {
		t.Fatalf("append after release: %v", err)
	}
	if _, err := l2.Append([]Record{rec("v", 2, 0, string(make([]byte, testSize)))}); !errors.Is(err, ErrFull) {
		t.Fatalf("record bigger than a segment: %v, want ErrFull", err)
	}
}

func TestOneFlushCoversEveryAppendBeforeIt(t *testing.T) {
	l, _ := mustOpen(t, t.TempDir())
	first, err := l.Append([]Record{rec("v", 2, 0, "a")})
	if err != nil {
		t.Fatal(err)
	}
	second, err := l.Append([]Record{rec("v", 3, 0, "b"), rec("v", 4, 0, "c")})
	if err != nil {
		t.Fatal(err)
	}
	before := l.Flushes()
	if err := l.Sync(first); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(second); err != nil { // already on disk: no second flush
		t.Fatal(err)
	}
	if d := l.Flushes() - before; d != 1 {
		t.Fatalf("%d flushes for two syncs of records appended before the first", d)
	}
}

func TestConcurrentSyncs(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir)
	const writers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				last, err := l.Append([]Record{rec(fmt.Sprint("v", w), uint64(w), uint64(i), "0123456789")})
				if err == nil {
					err = l.Sync(last)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l.Close()
	_, got := mustOpen(t, dir)
	if len(got) != writers*each {
		t.Fatalf("reopened with %d records, want %d", len(got), writers*each)
	}
	for i, r := range got {
		if r.LSN != uint64(i+1) {
			t.Fatalf("record %d has LSN %d", i, r.LSN)
		}
	}
}

func TestBadSegmentsAreRefused(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir)
	l.Close()
	path := filepath.Join(dir, "segment-1")
	b, _ := os.ReadFile(path)
	clear(b[:dataStart])
	os.WriteFile(path, b, 0o600)
	if _, _, err := Open(dir, testSize); err == nil {
		t.Fatal("a segment without a valid header opened")
	}
	if _, _, err := Open(t.TempDir(), 100); err == nil {
		t.Fatal("a tiny segment size was accepted")
	}
	dir2 := t.TempDir()
	l2, _ := mustOpen(t, dir2)
	l2.Close()
	if _, _, err := Open(dir2, 2*testSize); err == nil {
		t.Fatal("reopen with another segment size was accepted")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, 3, &Record{LSN: 9, Volume: "vol", Ino: 4, Off: 5, Size: 6, Mtime: -7, Data: []byte("data")}))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 70})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, gen, n, ok := decodeRecord(b)
		if !ok {
			return
		}
		if n > len(b) {
			t.Fatalf("decoded length %d of %d bytes", n, len(b))
		}
		again := appendRecord(nil, gen, &r)
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b[:n])
		}
	})
}

func BenchmarkAppendSync(b *testing.B) {
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, _, err := Open(b.TempDir(), 64<<20)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			data := make([]byte, 4096)
			b.SetParallelism(writers)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					last, err := l.Append([]Record{{Volume: "v", Ino: 2, Data: data}})
					if errors.Is(err, ErrFull) {
						l.Release(0)
						l.Release(1)
						continue
					}
					if err == nil {
						err = l.Sync(last)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(l.Flushes())/float64(b.N), "flushes/op")
		})
	}
}
