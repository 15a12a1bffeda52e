package backend

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestSetVolumeOptions: each case starts from a volume with a 1 MiB quota holding 300,000
// bytes (allocated: 300,000, the chunks' lengths).
func TestSetVolumeOptions(t *testing.T) {
	const used = 300_000
	for _, tc := range []struct {
		name     string
		opts     map[string]string
		wantSize int64
		wantComp string
		wantErr  error
		wantMsg  []string // substrings of the error
	}{
		{name: "grow", opts: map[string]string{"size": "20MiB"}, wantSize: 20 << 20},
		{name: "shrink above usage", opts: map[string]string{"size": "512KiB"}, wantSize: 512 << 10},
		{name: "shrink to exactly the usage", opts: map[string]string{"size": "300000"}, wantSize: used},
		{name: "shrink below usage", opts: map[string]string{"size": "100KiB"}, wantErr: ErrInvalid,
			wantMsg: []string{"uses 300000 bytes (293.0 KiB)", "quota of 102400 bytes (100.0 KiB)"}},
		{name: "none", opts: map[string]string{"size": "none"}, wantSize: 0},
		{name: "compression", opts: map[string]string{"compression": "zstd"}, wantSize: 1 << 20, wantComp: "zstd"},
		{name: "both", opts: map[string]string{"size": "2MiB", "compression": "s2"}, wantSize: 2 << 20, wantComp: "s2"},
		{name: "size zero", opts: map[string]string{"size": "0"}, wantErr: ErrInvalid, wantMsg: []string{"size", "positive", "none"}},
		{name: "size not a size", opts: map[string]string{"size": "lots"}, wantErr: ErrInvalid, wantMsg: []string{`size="lots"`, "512MiB", "none"}},
		{name: "bad compression", opts: map[string]string{"compression": "lz4"}, wantErr: ErrInvalid, wantMsg: []string{"lz4", "zstd"}},
		{name: "unknown key", opts: map[string]string{"colour": "red"}, wantErr: ErrInvalid,
			wantMsg: []string{`unknown option "colour"`, "settable options: compression, size"}},
		{name: "not settable", opts: map[string]string{"chunk-size": "1MiB"}, wantErr: ErrInvalid,
			wantMsg: []string{"chunk-size is not settable", "compression, size"}},
		{name: "nothing", opts: map[string]string{}, wantErr: ErrInvalid, wantMsg: []string{"no option"}},
		// One bad option sets nothing, not even the good one.
		{name: "good and bad", opts: map[string]string{"size": "2MiB", "mode": "0700"}, wantErr: ErrInvalid,
			wantMsg: []string{"mode is not settable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openTestStore(t)
			v := mustVolume(t, s, "data", map[string]string{"size": "1MiB", "chunk-size": "64KiB"})
			f := mustFile(t, v, RootIno, "f")
			if _, err := v.WriteAt(ctx, f, bytes.Repeat([]byte{7}, used), 0); err != nil {
				t.Fatal(err)
			}
			info, err := s.SetVolumeOptions(ctx, "data", tc.opts)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				for _, m := range tc.wantMsg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q does not say %q", err, m)
					}
				}
				tc.wantSize, tc.wantComp = 1<<20, "none" // unchanged
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.wantComp == "" {
				tc.wantComp = "none"
			}
			got, gerr := s.GetVolume(ctx, "data")
			if gerr != nil {
				t.Fatal(gerr)
			}
			if err == nil && info.Options != got.Options {
				t.Errorf("returned %+v, stored %+v", info.Options, got.Options)
			}
			if got.Options.Size != tc.wantSize || got.Options.Compression != tc.wantComp {
				t.Errorf("stored size %d compression %s, want %d %s", got.Options.Size, got.Options.Compression, tc.wantSize, tc.wantComp)
			}
			// The view opened before the change sees it.
			if limit, _, err := v.Quota(ctx); err != nil || limit != tc.wantSize {
				t.Errorf("open view's quota %d (%v), want %d", limit, err, tc.wantSize)
			}
			if vi := v.Volume(); vi.Options != got.Options {
				t.Errorf("open view's options %+v, stored %+v", vi.Options, got.Options)
			}
			fsckClean(t, s)
		})
	}
}

// A view open across a change enforces the new quota on its next write, both ways.
func TestSetVolumeOptionsOpenView(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "data", map[string]string{"size": "256KiB", "chunk-size": "64KiB"})
	f := mustFile(t, v, RootIno, "f")
	data := bytes.Repeat([]byte{1}, 200<<10)
	if _, err := v.WriteAt(ctx, f, data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(ctx, f, data, 200<<10); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write past the quota: %v, want ErrNoSpace", err)
	}
	if _, err := s.SetVolumeOptions(ctx, "data", map[string]string{"size": "1MiB"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(ctx, f, data, 200<<10); err != nil {
		t.Fatalf("write under the raised quota: %v", err)
	}
	if _, err := s.SetVolumeOptions(ctx, "data", map[string]string{"size": "500KiB"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(ctx, f, data, 400<<10); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write past the lowered quota: %v, want ErrNoSpace", err)
	}
	if err := v.Fallocate(ctx, f, 0, 600<<10, 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("fallocate past the lowered quota: %v, want ErrNoSpace", err)
	}
	fsckClean(t, s)
}

// New chunks of an open view take the new compression; chunks already stored keep theirs.
func TestSetVolumeCompression(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	v := mustVolume(t, s, "data", map[string]string{"compression": "none", "chunk-size": "64KiB"})
	text := bytes.Repeat([]byte("compressible "), 6000)[:64<<10]
	if c := v.PrepareChunk(0, text); c.body[0] != codecTree {
		t.Fatalf("codec %d before the change, want the tree body %d", c.body[0], codecTree)
	}
	if _, err := s.SetVolumeOptions(ctx, "data", map[string]string{"compression": "zstd"}); err != nil {
		t.Fatal(err)
	}
	if c := v.PrepareChunk(0, text); c.body[0] != codecZstd {
		t.Fatalf("codec %d after compression=zstd, want %d", c.body[0], codecZstd)
	}
}

// Things that are not volumes are refused.
func TestSetVolumeOptionsNotAVolume(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	mustVolume(t, s, "data", nil)
	if _, err := s.CreateSnapshot(ctx, "data", "s1"); err != nil {
		t.Fatal(err)
	}
	mustVolume(t, s, "gone", nil)
	if _, err := s.CreateSnapshot(ctx, "gone", "s1"); err != nil {
		t.Fatal(err)
	}
	kept, err := s.DeleteVolumeKeepSnapshots(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	size := map[string]string{"size": "1GiB"}
	for _, tc := range []struct {
		name, vol string
		want      error
		msg       string
	}{
		{"snapshot", "data@s1", ErrInvalid, "snapshots are read-only"},
		{"removed volume's record", kept, ErrNotFound, "removed volume"},
		{"removed volume", "gone", ErrNotFound, `"gone"`},
		{"no such volume", "nosuch", ErrNotFound, `"nosuch"`},
		{"bad name", "a/b", ErrInvalid, `"a/b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.SetVolumeOptions(ctx, tc.vol, size)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.msg)
			}
		})
	}
}

// The change is stored: it survives a reopen.
func TestSetVolumeOptionsPersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustVolume(t, s, "data", nil)
	if _, err := s.SetVolumeOptions(ctx, "data", map[string]string{"size": "3GiB", "compression": "s2"}); err != nil {
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
	v, err := s.OpenVolume(ctx, "data")
	if err != nil {
		t.Fatal(err)
	}
	if o := v.Volume().Options; o.Size != 3<<30 || o.Compression != "s2" {
		t.Fatalf("after reopen: %+v", o)
	}
}
