package backend

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
)

// removedFixture is volume "db" whose file f held chunk-sized fills of '1' at snapshot s1, '2'
// at s2 and '3' when DeleteVolumeKeepSnapshots removed it; kept is its record's name.
type removedFixture struct {
	s    *Store
	kept string
}

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, DefaultChunkSize) }

// writeVersions writes f = fill(b) in volume vol and snapshots it as each of snaps, in order
// (one more write, of the byte after the last, follows the last snapshot).
func writeVersions(t *testing.T, s *Store, vol string, first byte, snaps ...string) {
	t.Helper()
	ctx := context.Background()
	v, err := s.OpenVolume(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	f := mustFile(t, v, RootIno, "f")
	for i, snap := range append(snaps, "") {
		if _, err := v.WriteAt(ctx, f, fill(first+byte(i)), 0); err != nil {
			t.Fatal(err)
		}
		if snap == "" {
			break
		}
		if _, err := s.CreateSnapshot(ctx, vol, snap); err != nil {
			t.Fatal(err)
		}
	}
}

func newRemovedFixture(t *testing.T) *removedFixture {
	t.Helper()
	s := openTestStore(t)
	mustVolume(t, s, "db", map[string]string{"size": "10MiB"})
	writeVersions(t, s, "db", '1', "s1", "s2")
	kept, err := s.DeleteVolumeKeepSnapshots(context.Background(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if !IsRemovedName(kept) {
		t.Fatalf("kept snapshots under %q, want db~ID", kept)
	}
	return &removedFixture{s: s, kept: kept}
}

// content is the first byte of f in a volume (snap "") or snapshot; 0 when f is empty.
func (fx *removedFixture) content(t *testing.T, vol, snap string) byte {
	t.Helper()
	ctx := context.Background()
	v, err := fx.s.OpenVolume(ctx, vol)
	if snap != "" {
		v, err = fx.s.OpenSnapshot(ctx, vol, snap)
	}
	if err != nil {
		t.Fatalf("open %s@%s: %v", vol, snap, err)
	}
	a, err := v.Lookup(ctx, RootIno, "f")
	if err != nil {
		t.Fatalf("%s@%s: f: %v", vol, snap, err)
	}
	b := readAll(t, v, a.Ino)
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func (fx *removedFixture) clone(t *testing.T, name, from string) error {
	t.Helper()
	o, err := ParseVolumeOptions(map[string]string{"from": from})
	if err != nil {
		return err
	}
	_, err = fx.s.CreateVolume(context.Background(), name, o)
	return err
}

// snaps lists VOL@SNAP of every snapshot (of volume, or all for ""), "(removed)" marking kept ones.
func (fx *removedFixture) snaps(t *testing.T, volume string) []string {
	t.Helper()
	list, err := fx.s.ListSnapshots(context.Background(), volume)
	if err != nil {
		t.Fatalf("ListSnapshots(%q): %v", volume, err)
	}
	var out []string
	for _, sn := range list {
		ref := sn.Volume + "@" + sn.Name
		if !sn.RemovedAt.IsZero() {
			ref += " (removed)"
		}
		out = append(out, ref)
	}
	return out
}

func (fx *removedFixture) chunks(t *testing.T) int64 {
	t.Helper()
	if err := fx.s.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := fx.s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Chunks
}

func TestRemovedVolumeKeepsSnapshots(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, fx *removedFixture)
	}{
		{"listed as removed, volume gone, live data freed", func(t *testing.T, fx *removedFixture) {
			k := fx.kept
			want := []string{k + "@s1 (removed)", k + "@s2 (removed)"}
			if got := fx.snaps(t, ""); !slices.Equal(got, want) {
				t.Fatalf("snapshot ls: %v, want %v", got, want)
			}
			if got := fx.snaps(t, "db"); !slices.Equal(got, want) {
				t.Fatalf("snapshot ls db: %v, want %v", got, want)
			}
			if vols, err := fx.s.ListVolumes(ctx); err != nil || len(vols) != 0 {
				t.Fatalf("volumes after removal: %v %v", vols, err)
			}
			for _, name := range []string{"db", k} {
				if _, err := fx.s.GetVolume(ctx, name); !errors.Is(err, ErrNotFound) {
					t.Fatalf("GetVolume(%s): %v, want ErrNotFound", name, err)
				}
			}
			if got := fx.content(t, k, "s1"); got != '1' {
				t.Fatalf("kept s1 reads %q", got)
			}
			if n := fx.chunks(t); n != 2 {
				t.Fatalf("%d chunks after removal and GC, want 2 (s1's and s2's)", n)
			}
		}},
		{"clone by VOL@SNAP takes the origin's quota", func(t *testing.T, fx *removedFixture) {
			if err := fx.clone(t, "c", "db@s1"); err != nil {
				t.Fatal(err)
			}
			if got := fx.content(t, "c", ""); got != '1' {
				t.Fatalf("clone reads %q, want '1'", got)
			}
			info, err := fx.s.GetVolume(ctx, "c")
			if err != nil || info.Options.Size != 10<<20 || info.Options.From != fx.kept+"@s1" {
				t.Fatalf("clone: %+v %v", info.Options, err)
			}
			if got := fx.snaps(t, "db"); len(got) != 2 {
				t.Fatalf("a clone under another name adopted snapshots: %v", got)
			}
		}},
		{"recreated from its own snapshot, the volume takes them all back", func(t *testing.T, fx *removedFixture) {
			if err := fx.clone(t, "db", "db@s2"); err != nil {
				t.Fatal(err)
			}
			if got := fx.content(t, "db", ""); got != '2' {
				t.Fatalf("restored volume reads %q, want '2'", got)
			}
			if got, want := fx.snaps(t, ""), []string{"db@s1", "db@s2"}; !slices.Equal(got, want) {
				t.Fatalf("snapshot ls: %v, want %v", got, want)
			}
			if err := fx.s.RestoreSnapshot(ctx, "db", "s1"); err != nil {
				t.Fatal(err)
			}
			if got := fx.content(t, "db", ""); got != '1' {
				t.Fatalf("after restore to s1 reads %q", got)
			}
		}},
		{"a new volume of the same name has its own snapshot names", func(t *testing.T, fx *removedFixture) {
			mustVolume(t, fx.s, "db", nil)
			writeVersions(t, fx.s, "db", 'a', "s1")
			if got, want := fx.snaps(t, "db"), []string{"db@s1", fx.kept + "@s1 (removed)", fx.kept + "@s2 (removed)"}; !slices.Equal(got, want) {
				t.Fatalf("snapshot ls db: %v, want %v", got, want)
			}
			if got := fx.content(t, "db", "s1"); got != 'a' {
				t.Fatalf("db@s1 reads %q, want the new volume's 'a'", got)
			}
			for from, want := range map[string]byte{"db@s1": 'a', fx.kept + "@s1": '1', "db@s2": '2'} {
				if err := fx.clone(t, "c", from); err != nil {
					t.Fatalf("clone %s: %v", from, err)
				}
				if got := fx.content(t, "c", ""); got != want {
					t.Fatalf("clone of %s reads %q, want %q", from, got, want)
				}
				if err := fx.s.DeleteVolume(ctx, "c"); err != nil {
					t.Fatal(err)
				}
			}
			if err := fx.s.RestoreSnapshot(ctx, "db", "s2"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("restore of a removed volume's snapshot onto the new one: %v, want ErrNotFound", err)
			}
		}},
		{"two removals of one name stay apart", func(t *testing.T, fx *removedFixture) {
			mustVolume(t, fx.s, "db", nil)
			writeVersions(t, fx.s, "db", 'a', "s1")
			second, err := fx.s.DeleteVolumeKeepSnapshots(ctx, "db")
			if err != nil || second == fx.kept || !IsRemovedName(second) {
				t.Fatalf("second removal kept under %q (first %q): %v", second, fx.kept, err)
			}
			if err := fx.clone(t, "c", "db@s1"); !errors.Is(err, ErrInvalid) {
				t.Fatalf("clone of an ambiguous db@s1: %v, want ErrInvalid", err)
			}
			if a, b := fx.content(t, fx.kept, "s1"), fx.content(t, second, "s1"); a != '1' || b != 'a' {
				t.Fatalf("first and second db@s1 read %q and %q", a, b)
			}
		}},
		{"removing the newest kept snapshot frees its data", func(t *testing.T, fx *removedFixture) {
			if err := fx.s.DeleteSnapshot(ctx, "db", "s2"); err != nil {
				t.Fatal(err)
			}
			if n := fx.chunks(t); n != 1 {
				t.Fatalf("%d chunks, want 1 (s1's)", n)
			}
			if got := fx.content(t, fx.kept, "s1"); got != '1' {
				t.Fatalf("s1 reads %q", got)
			}
		}},
		{"removing the last kept snapshot removes the record", func(t *testing.T, fx *removedFixture) {
			for _, snap := range []string{"s1", "s2"} {
				if err := fx.s.DeleteSnapshot(ctx, fx.kept, snap); err != nil {
					t.Fatal(err)
				}
			}
			if got := fx.snaps(t, ""); len(got) != 0 {
				t.Fatalf("snapshots left: %v", got)
			}
			if n := fx.chunks(t); n != 0 {
				t.Fatalf("%d chunks left", n)
			}
			if _, err := fx.s.ListSnapshots(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("snapshot ls db: %v, want ErrNotFound", err)
			}
		}},
		{"DeleteVolume of the record removes the kept snapshots", func(t *testing.T, fx *removedFixture) {
			if err := fx.s.DeleteVolume(ctx, fx.kept); err != nil {
				t.Fatal(err)
			}
			if got := fx.snaps(t, ""); len(got) != 0 {
				t.Fatalf("snapshots left: %v", got)
			}
			if n := fx.chunks(t); n != 0 {
				t.Fatalf("%d chunks left", n)
			}
		}},
		{"a removed volume's record is not a volume", func(t *testing.T, fx *removedFixture) {
			if _, err := fx.s.CreateSnapshot(ctx, fx.kept, "s3"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("snapshot of the record: %v", err)
			}
			if err := fx.s.RestoreSnapshot(ctx, fx.kept, "s1"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("restore of the record: %v", err)
			}
			if _, err := fx.s.DeleteVolumeKeepSnapshots(ctx, fx.kept); !errors.Is(err, ErrNotFound) {
				t.Fatalf("removal of the record: %v", err)
			}
			if _, err := fx.s.CreateVolume(ctx, fx.kept, VolumeOptions{}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("volume named like the record: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newRemovedFixture(t)
			fsckClean(t, fx.s)
			tc.run(t, fx)
			fsckClean(t, fx.s)
			if err := fx.s.GC(ctx); err != nil {
				t.Fatal(err)
			}
			fsckClean(t, fx.s)
		})
	}
}

func TestRemoveVolumeWithoutSnapshots(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	mustVolume(t, s, "db", nil)
	kept, err := s.DeleteVolumeKeepSnapshots(ctx, "db")
	if err != nil || kept != "" {
		t.Fatalf("kept %q, %v: want nothing kept", kept, err)
	}
	if snaps, err := s.ListSnapshots(ctx, ""); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots: %v %v", snaps, err)
	}
	mustVolume(t, s, "db", nil)
	fsckClean(t, s)
}

func TestRemovedVolumeSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustVolume(t, s, "db", nil)
	writeVersions(t, s, "db", '1', "s1")
	kept, err := s.DeleteVolumeKeepSnapshots(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fx := &removedFixture{s: s, kept: kept}
	if got, want := fx.snaps(t, ""), []string{kept + "@s1 (removed)"}; !slices.Equal(got, want) {
		t.Fatalf("after reopen: %v, want %v", got, want)
	}
	if err := fx.clone(t, "db", "db@s1"); err != nil {
		t.Fatal(err)
	}
	if got := fx.content(t, "db", ""); got != '1' {
		t.Fatalf("restored db reads %q", got)
	}
	fsckClean(t, s)
}

func TestCloneQuota(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name         string
		origin, size string // size options ("" = none given)
		want         int64
	}{
		{"takes the origin's quota", "10MiB", "", 10 << 20},
		{"size overrides a smaller one", "10MiB", "20MiB", 20 << 20},
		{"size overrides a larger one", "10MiB", "1MiB", 1 << 20},
		{"origin without quota", "", "", 0},
		{"size on a clone of an origin without", "", "5MiB", 5 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			opts := map[string]string{}
			if tc.origin != "" {
				opts["size"] = tc.origin
			}
			mustVolume(t, s, "o", opts)
			if _, err := s.CreateSnapshot(ctx, "o", "s"); err != nil {
				t.Fatal(err)
			}
			opts = map[string]string{"from": "o@s"}
			if tc.size != "" {
				opts["size"] = tc.size
			}
			mustVolume(t, s, "c", opts)
			info, err := s.GetVolume(ctx, "c")
			if err != nil || info.Options.Size != tc.want {
				t.Fatalf("clone quota %d (%v), want %d", info.Options.Size, err, tc.want)
			}
		})
	}
}
