package backend

import (
	"context"
	"strings"
	"syscall"
	"testing"
)

// TestZeroOptionsDefaults: a volume created with zero-value options gets the documented defaults
// (root directory 0755, 256 KiB chunks, no compression), the same ones ParseVolumeOptions(nil)
// reports, and an explicit mode 0 is refused rather than silently replaced.
func TestZeroOptionsDefaults(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	info, err := s.CreateVolume(ctx, "zero", VolumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Options != DefaultVolumeOptions() {
		t.Errorf("options of a volume created with none: %+v, want %+v", info.Options, DefaultVolumeOptions())
	}
	v, err := s.OpenVolume(ctx, "zero")
	if err != nil {
		t.Fatal(err)
	}
	root, err := v.GetAttr(ctx, RootIno)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint32(syscall.S_IFDIR | 0o755); root.Mode != want {
		t.Errorf("root mode %#o, want %#o", root.Mode, want)
	}
	if v.ChunkSize() != DefaultChunkSize {
		t.Errorf("chunk size %d, want %d", v.ChunkSize(), DefaultChunkSize)
	}
	parsed, err := ParseVolumeOptions(nil)
	if err != nil || parsed != info.Options {
		t.Errorf("ParseVolumeOptions(nil) = %+v, %v; CreateVolume filled in %+v", parsed, err, info.Options)
	}
	if _, err := ParseVolumeOptions(map[string]string{"mode": "0"}); err == nil || !strings.Contains(err.Error(), "option mode") {
		t.Errorf("mode=0: %v, want an error naming the option", err)
	}
}
