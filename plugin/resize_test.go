package plugin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// TestResizeMounted changes the quota of a mounted volume with a file open in it: statfs shows
// each new size at once, writes through the open file fit under a raised quota and fail with
// ENOSPC at write time past a lowered one, and a quota below the usage (buffered writes
// included) is refused with the usage.
func TestResizeMounted(t *testing.T) {
	fusetest.Require(t)
	const MiB = 1 << 20
	td := startDaemon(t, "")
	c := client.New(td.sock)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, "v", map[string]string{"size": "4MiB", "chunk-size": "256KiB"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := c.Mount(ctx, "v", dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Unmount(ctx, dir) })
	f, err := os.Create(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xa5}, MiB)
	write := func(n int) error {
		t.Helper()
		for range n {
			if _, err := f.Write(chunk); err != nil {
				return err
			}
		}
		return f.Sync()
	}
	set := func(size string) (api.Volume, error) {
		t.Helper()
		return c.SetVolumeOptions(ctx, "v", map[string]string{"size": size})
	}
	wantTotal := func(want int64) {
		t.Helper()
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if got := int64(st.Blocks) * st.Bsize; got != want {
			t.Fatalf("statfs total %d bytes, want %d", got, want)
		}
	}

	wantTotal(4 * MiB)
	if err := write(3); err != nil {
		t.Fatalf("3 MiB under a 4 MiB quota: %v", err)
	}
	if err := write(2); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("2 MiB more under a 4 MiB quota: %v, want ENOSPC", err)
	}
	// The failed write left 4 MiB - 3 MiB stored (a short write): start over at 3 MiB.
	if err := f.Truncate(3 * MiB); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(3*MiB, 0); err != nil {
		t.Fatal(err)
	}

	v, err := set("8MiB")
	if err != nil || v.Options.Size != 8*MiB || !v.Mounted {
		t.Fatalf("raise to 8 MiB: %+v, %v", v, err)
	}
	wantTotal(8 * MiB)
	if err := write(2); err != nil {
		t.Fatalf("2 MiB more after raising the quota to 8 MiB: %v", err)
	}

	// 5 MiB stored and 1 MiB buffered (not fsynced): 5.5 MiB is below the usage.
	if _, err := f.Write(chunk); err != nil {
		t.Fatal(err)
	}
	_, err = set("5632KiB")
	if !api.HasCode(err, api.CodeInvalid) || !strings.Contains(err.Error(), "uses 6291456 bytes (6.0 MiB)") {
		t.Fatalf("lower below the usage: %v, want invalid giving the usage of 6 MiB", err)
	}
	wantTotal(8 * MiB)

	// Lowered to 6 MiB + 64 KiB: 128 KiB more (half a chunk, which stays buffered until
	// fsync or close) fails at write time, not later.
	if _, err := set("6208KiB"); err != nil {
		t.Fatal(err)
	}
	wantTotal(6208 << 10)
	if _, err := f.Write(chunk[:128<<10]); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("128 KiB past the lowered quota: %v, want ENOSPC", err)
	}
	if err := f.Truncate(6 * MiB); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}

	if _, err := set("none"); err != nil {
		t.Fatal(err)
	}
	wantTotal(unlimitedStatfsBytes)
	if _, err := f.Seek(6*MiB, 0); err != nil {
		t.Fatal(err)
	}
	if err := write(4); err != nil {
		t.Fatalf("4 MiB more without a quota: %v", err)
	}
	in, err := c.InspectVolume(ctx, "v")
	if err != nil || in.Options.Size != 0 || in.Usage.Bytes != 10*MiB {
		t.Fatalf("inspect after: %+v, %v", in, err)
	}
}

// unlimitedStatfsBytes is what statfs reports for a volume without a quota (fs: unlimitedBytes).
const unlimitedStatfsBytes = 1 << 50

// TestSetVolumeErrors: what the control API answers to options it cannot set.
func TestSetVolumeErrors(t *testing.T) {
	td := startDaemon(t, "")
	c := client.New(td.sock)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, vol string
		opts      map[string]string
		code, msg string
	}{
		{"unknown", "v", map[string]string{"colour": "red"}, api.CodeInvalid, `unknown option "colour"`},
		{"not settable", "v", map[string]string{"uid": "1"}, api.CodeInvalid, "uid is not settable"},
		{"bad size", "v", map[string]string{"size": "big"}, api.CodeInvalid, `size="big"`},
		{"none given", "v", nil, api.CodeInvalid, "no option"},
		{"snapshot", "v@s1", map[string]string{"size": "1GiB"}, api.CodeInvalid, "snapshots are read-only"},
		{"no such volume", "nosuch", map[string]string{"size": "1GiB"}, api.CodeNotFound, "nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.SetVolumeOptions(ctx, tc.vol, tc.opts)
			if !api.HasCode(err, tc.code) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %s saying %q", err, tc.code, tc.msg)
			}
		})
	}
	v, err := c.SetVolumeOptions(ctx, "v", map[string]string{"compression": "zstd", "size": "1GiB"})
	if err != nil || v.Options.Compression != "zstd" || v.Options.Size != 1<<30 {
		t.Fatalf("set compression and size: %+v, %v", v, err)
	}
}
