package backend

import (
	"context"
	"testing"
)

// GCStats counts every pass, with its time.
func TestGCStats(t *testing.T) {
	s := openTestStore(t)
	before := s.GCStats()
	for range 2 {
		if err := s.GC(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := s.GCStats()
	if got.Passes-before.Passes != 2 || got.Time <= before.Time || got.Rewrites < before.Rewrites {
		t.Fatalf("GCStats %+v after two passes, %+v before", got, before)
	}
}
