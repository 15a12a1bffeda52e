package backend

import (
	"bytes"
	"context"
	"testing"
)

// GCStats counts every pass, with its time, and the chunk bodies the passes deleted.
func TestGCStats(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "data", map[string]string{"compression": "none"})
	f := mustFile(t, v, RootIno, "f")
	data := bytes.Repeat([]byte("gcstats!"), 3*DefaultChunkSize/8) // three identical chunks: one body
	if _, err := v.WriteAt(ctx, f, data, 0); err != nil {
		t.Fatal(err)
	}
	before := s.GCStats()
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.GCStats(); got.Passes != before.Passes+1 || got.Time <= before.Time || got.Swept != before.Swept {
		t.Fatalf("GCStats %+v after a pass with nothing to sweep, %+v before", got, before)
	}
	if err := s.DeleteVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.GCStats(); got.Passes != before.Passes+2 || got.Swept-before.Swept < DefaultChunkSize {
		t.Fatalf("GCStats %+v after deleting a volume of one %d-byte chunk body, %+v before", got, DefaultChunkSize, before)
	}
}
