package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/api"
)

// damagedStore writes files of random bytes into volume "v" of a new store under root (bodies in
// the value log), closes it and returns the files' contents by name.
func damagedStore(t *testing.T, root string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	st, err := backend.Open(ctx, filepath.Join(root, "store"), backend.Options{GCInterval: -1, ValueLogFileSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	opts, err := backend.ParseVolumeOptions(map[string]string{"chunk-size": "131072"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVolume(ctx, "v", opts); err != nil {
		t.Fatal(err)
	}
	v, err := st.OpenVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	files := map[string][]byte{}
	for i := range 24 {
		name := fmt.Sprintf("f%d", i)
		a, err := v.Mknod(ctx, backend.RootIno, name, backend.NewNode{Mode: syscall.S_IFREG | 0o644})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 200<<10+r.IntN(400<<10))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		if _, err := v.WriteAt(ctx, a.Ino, data, 0); err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return files
}

// flipBytes flips n bytes (seeded) inside the files of dir matching pattern, away from their
// first 64 bytes (value-log headers).
func flipBytes(t *testing.T, dir, pattern string, n int, seed uint64) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(names) == 0 {
		t.Fatalf("no %s in %s (%v)", pattern, dir, err)
	}
	slices.Sort(names)
	r := rand.New(rand.NewPCG(seed, 1))
	for range n {
		name := names[r.IntN(len(names))]
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) <= 64 {
			continue
		}
		b[64+r.IntN(len(b)-64)] ^= byte(1 + r.IntN(255))
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDamagedStoreDaemon runs the real daemon on a store whose value log was damaged while it
// was stopped: it starts, every file of a mounted volume reads its exact bytes or fails with
// EIO (never other bytes, never a hung read), volctl fsck names exactly the files that failed,
// and SIGTERM stops it with the volume still mounted. A store with a damaged table is refused
// at start with a message naming the file, and the daemon exits instead of hanging.
func TestDamagedStoreDaemon(t *testing.T) {
	fusetest.Require(t)
	bin := fusetest.BuildVolctl(t, t.TempDir())
	dir := fusetest.TempRoot(t, "volctl-damage-")
	root, sock := filepath.Join(dir, "root"), filepath.Join(dir, "d.sock")
	files := damagedStore(t, root)
	flipBytes(t, filepath.Join(root, "store"), "*.vlog", 6, 1)

	d := fusetest.StartProcess(t, exec.Command(bin, "daemon", "--root", root, "--socket", sock,
		"--mount-root", filepath.Join(dir, "mnt")), filepath.Join(dir, "daemon.log"))
	d.WaitReady(t, sock)
	mnt := filepath.Join(dir, "v")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	volctl(t, "--socket", sock, "mount", "v", mnt).ok(t)
	var failed []string
	for name, want := range files {
		got, err := readWithin(filepath.Join(mnt, name), 10*time.Second)
		switch {
		case errors.Is(err, syscall.EIO):
			failed = append(failed, "v:/"+name)
		case err != nil:
			t.Errorf("%s: %v, want its bytes or EIO", name, err)
		case !bytes.Equal(got, want):
			t.Errorf("%s: wrong bytes (%d read, %d written)", name, len(got), len(want))
		}
	}
	if len(failed) == 0 {
		t.Error("no read failed: the damage missed every file (pick other seeds)")
	}
	r := volctl(t, "--socket", sock, "fsck", "--format", "json")
	var rep api.FsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("fsck json %q (exit %d, %s): %v", r.stdout, r.code, r.stderr, err)
	}
	slices.Sort(failed)
	if r.code != 1 || !slices.Equal(rep.Damaged, failed) {
		t.Errorf("fsck exited %d naming %q; reads failed for %q", r.code, rep.Damaged, failed)
	}
	t.Logf("%d of %d files gave EIO, fsck named them", len(failed), len(files))
	d.StopClean(t, 10*time.Second)

	// A damaged table: the daemon refuses the store and exits.
	flipBytes(t, filepath.Join(root, "store"), "*.sst", 3, 2)
	d = fusetest.StartProcess(t, exec.Command(bin, "daemon", "--root", root, "--socket", sock,
		"--mount-root", filepath.Join(dir, "mnt")), filepath.Join(dir, "daemon2.log"))
	select {
	case <-d.Exited():
	case <-time.After(time.Minute):
		t.Fatalf("the daemon on a store with a damaged table neither served nor exited:\n%s", d.LogTail())
	}
	if d.Cmd.ProcessState.Success() {
		t.Errorf("the daemon on a store with a damaged table exited 0:\n%s", d.LogTail())
	}
	if out := d.Output(); !strings.Contains(out, "damaged table file") || !strings.Contains(out, ".sst") || strings.Contains(out, "goroutine ") {
		t.Errorf("the daemon's refusal does not name the damaged table (or holds a stack):\n%s", d.LogTail())
	}
}

// readWithin reads a file, giving up (as an error) after timeout: a hung read is a failure, not
// a hung test.
func readWithin(path string, timeout time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := os.ReadFile(path)
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("read of %s hung for %v", path, timeout)
	}
}
