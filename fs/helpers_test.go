package fs

import (
	"context"
	"github.com/fusevol/fusevol/fs/fusetest"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("FUSEVOL_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// testVolume is a volume of a fresh store, mounted in a temporary directory.
type testVolume struct {
	store *backend.Store
	view  *backend.View
	mnt   *Mounted
	dir   string
}

func openStore(t testing.TB) *backend.Store {
	t.Helper()
	ctx := context.Background()
	st, err := backend.Open(ctx, t.TempDir(), backend.Options{Logger: testLogger(t), GCInterval: -1})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newVolume(t testing.TB, vopts backend.VolumeOptions, fopts Options) *testVolume {
	t.Helper()
	fusetest.Require(t)
	st, v := openView(t, vopts)
	tv := &testVolume{store: st, view: v}
	tv.mnt, tv.dir = mountView(t, v, fopts)
	return tv
}

// openView creates the volume "vol" in a fresh store and opens it.
func openView(t testing.TB, vopts backend.VolumeOptions) (*backend.Store, *backend.View) {
	t.Helper()
	st := openStore(t)
	ctx := context.Background()
	if vopts.ChunkSize == 0 {
		vopts.ChunkSize = backend.DefaultChunkSize
	}
	if vopts.Compression == "" {
		vopts.Compression = "none"
	}
	if vopts.Mode == 0 {
		vopts.Mode = 0o755
	}
	if _, err := st.CreateVolume(ctx, "vol", vopts); err != nil {
		t.Fatalf("create volume: %v", err)
	}
	v, err := st.OpenVolume(ctx, "vol")
	if err != nil {
		t.Fatalf("open volume: %v", err)
	}
	return st, v
}

// mountView mounts a view on a fresh directory and unmounts it when the test ends.
func mountView(t testing.TB, v Volume, fopts Options) (*Mounted, string) {
	t.Helper()
	dir := t.TempDir()
	if fopts.Logger == nil {
		fopts.Logger = testLogger(t)
	}
	m, err := Mount(context.Background(), dir, v, fopts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return m, dir
}

func backendOpts(chunkSize int) backend.VolumeOptions {
	return backend.VolumeOptions{ChunkSize: chunkSize, Compression: "none", Mode: 0o755}
}
