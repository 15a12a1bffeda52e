package fs

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"golang.org/x/sys/unix"
)

const cpChunk = 64 << 10

// cloneCounter is a view that counts the copies fsys hands to the backend: the kernel copies
// some ranges itself, and the store's bytes cannot tell (chunks are content-addressed).
type cloneCounter struct {
	*backend.View
	calls atomic.Int64
}

func (c *cloneCounter) CloneRange(ctx context.Context, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error) {
	c.calls.Add(1)
	return c.View.CloneRange(ctx, src, srcOff, dst, dstOff, n)
}

func (c *cloneCounter) CloneRangeFrom(ctx context.Context, from *backend.View, src backend.Ino, srcOff int64, dst backend.Ino, dstOff int64, n int64) (int64, error) {
	c.calls.Add(1)
	return c.View.CloneRangeFrom(ctx, from, src, srcOff, dst, dstOff, n)
}

// newCopyVolume mounts a fresh volume of 64 KiB chunks through a cloneCounter.
func newCopyVolume(t *testing.T) (*testVolume, *cloneCounter) {
	t.Helper()
	fusetest.Require(t)
	st, v := openView(t, backendOpts(cpChunk))
	cc := &cloneCounter{View: v}
	tv := &testVolume{store: st, view: v}
	tv.mnt, tv.dir = mountView(t, cc, Options{})
	return tv, cc
}

// pattern is n seeded random bytes.
func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// copyRange is copy_file_range(2) of the files at src and dst with explicit offsets.
func copyRange(t *testing.T, src, dst string, srcOff, dstOff int64, n int, flags int) (int, error) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out := in
	if dst != src {
		if out, err = os.OpenFile(dst, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
			t.Fatal(err)
		}
		defer out.Close()
	} else if out, err = os.OpenFile(dst, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	} else {
		defer out.Close()
	}
	return unix.CopyFileRange(int(in.Fd()), &srcOff, int(out.Fd()), &dstOff, n, flags)
}

// uniqueBytes flushes the mount and returns the store's distinct chunk bytes.
func uniqueBytes(t *testing.T, tv *testVolume) int64 {
	t.Helper()
	if err := tv.mnt.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := tv.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.UniqueBytes
}

func storeFsck(t *testing.T, tv *testVolume) {
	t.Helper()
	if err := tv.mnt.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err := tv.store.Fsck(context.Background(), false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %v %v", err, rep)
	}
}

// TestCopyFileRange runs copy_file_range(2) on a mount against the kernel's semantics (the
// VFS checks flags, overlap and EOF before the request reaches fsys) and checks that whole
// chunks at equally aligned offsets are shared: the store gains no chunk bytes.
func TestCopyFileRange(t *testing.T) {
	tv, cc := newCopyVolume(t)
	const c = cpChunk
	tests := []struct {
		name           string
		src, dst       int // initial sizes (dst -1: no such file before the copy)
		same           bool
		srcOff, dstOff int64
		n              int
		flags          int
		want           int
		wantErr        syscall.Errno
		shared         bool // no new chunk bytes in the store
	}{
		{name: "aligned", src: 4 * c, dst: -1, n: 4 * c, want: 4 * c, shared: true},
		{name: "aligned to an offset", src: 2 * c, dst: 0, dstOff: 3 * c, n: 2 * c, want: 2 * c, shared: true},
		{name: "length past EOF", src: 2 * c, dst: 0, n: 100 * c, want: 2 * c, shared: true},
		{name: "unaligned tail", src: 2*c + 123, dst: 0, n: 3 * c, want: 2*c + 123},
		{name: "equally misaligned", src: 4 * c, dst: 4 * c, srcOff: 500, dstOff: 500, n: 2 * c, want: 2 * c},
		{name: "misaligned", src: 3 * c, dst: 0, srcOff: 1, n: 2 * c, want: 2 * c},
		{name: "offset past EOF", src: c, dst: 0, srcOff: 2 * c, n: c, want: 0},
		{name: "zero length", src: c, dst: 0, n: 0, want: 0},
		{name: "overwrite", src: 2 * c, dst: 5 * c, dstOff: c, n: 2 * c, want: 2 * c, shared: true},
		{name: "same file", src: 2 * c, same: true, dstOff: 2 * c, n: 2 * c, want: 2 * c, shared: true},
		{name: "same file overlapping", src: 3 * c, same: true, dstOff: c, n: 2 * c, wantErr: syscall.EINVAL},
		{name: "flags", src: c, dst: 0, n: c, flags: 1, wantErr: syscall.EINVAL},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(tv.dir, "src"+tc.name)
			dst := filepath.Join(tv.dir, "dst"+tc.name)
			sdata := pattern(tc.src, uint64(i))
			if err := os.WriteFile(src, sdata, 0o644); err != nil {
				t.Fatal(err)
			}
			var ddata []byte
			if tc.same {
				dst = src
			} else if tc.dst >= 0 {
				ddata = pattern(tc.dst, uint64(i)+100)
				if err := os.WriteFile(dst, ddata, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before, calls := uniqueBytes(t, tv), cc.calls.Load()
			got, err := copyRange(t, src, dst, tc.srcOff, tc.dstOff, tc.n, tc.flags)
			if tc.wantErr != 0 {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("copy_file_range = %d, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("copy_file_range = %d, %v; want %d", got, err, tc.want)
			}
			if tc.same {
				ddata = sdata
			}
			if got > 0 {
				if end := int(tc.dstOff) + got; end > len(ddata) {
					ddata = append(ddata, make([]byte, end-len(ddata))...)
				}
				copy(ddata[tc.dstOff:], sdata[tc.srcOff:tc.srcOff+int64(got)])
			}
			if b, err := os.ReadFile(dst); err != nil || !bytes.Equal(b, ddata) {
				t.Fatalf("destination: %d bytes, %v; want %d", len(b), err, len(ddata))
			}
			if !tc.same {
				if b, err := os.ReadFile(src); err != nil || !bytes.Equal(b, sdata) {
					t.Fatalf("source changed: %v", err)
				}
			}
			if after := uniqueBytes(t, tv); tc.shared && after > before {
				t.Errorf("a shared copy added %d chunk bytes to the store", after-before)
			}
			if got > 0 && cc.calls.Load() == calls {
				t.Errorf("the kernel copied the range itself")
			}
		})
	}
	storeFsck(t, tv)
}

// TestCopyFileRangeBuffered: writes still buffered in the mount (no close, no fsync) of both
// files are in the copy; after it, each file changes alone.
func TestCopyFileRangeBuffered(t *testing.T) {
	tv := newVolume(t, backendOpts(cpChunk), Options{})
	sdata, ddata := pattern(3*cpChunk, 1), pattern(4*cpChunk, 2)
	src, err := os.Create(filepath.Join(tv.dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(tv.dir, "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := src.Write(sdata); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Write(ddata); err != nil {
		t.Fatal(err)
	}
	roff, woff := int64(0), int64(cpChunk)
	if n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, 3*cpChunk, 0); err != nil || n != 3*cpChunk {
		t.Fatalf("copy_file_range = %d, %v", n, err)
	}
	copy(ddata[cpChunk:], sdata)
	// Change both: a write through the destination's handle and one through the source's.
	if _, err := dst.WriteAt([]byte("destination"), cpChunk+10); err != nil {
		t.Fatal(err)
	}
	copy(ddata[cpChunk+10:], "destination")
	if _, err := src.WriteAt([]byte("source"), 10); err != nil {
		t.Fatal(err)
	}
	copy(sdata[10:], "source")
	for name, want := range map[string][]byte{"a": sdata, "b": ddata} {
		if b, err := os.ReadFile(filepath.Join(tv.dir, name)); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %d bytes, %v; want %d", name, len(b), err, len(want))
		}
	}
	storeFsck(t, tv)
}

// TestReflinkTools records what a user of a mounted volume meets: FICLONE and FICLONERANGE fail
// with EOPNOTSUPP (FUSE has no remap_file_range), so `cp --reflink=always` fails, while
// `cp --reflink=auto` and plain `cp` (coreutils 9 falls back to copy_file_range) copy by
// sharing chunks.
func TestReflinkTools(t *testing.T) {
	tv, cc := newCopyVolume(t)
	data := pattern(16*cpChunk, 3)
	a := filepath.Join(tv.dir, "a")
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(tv.dir, "clone"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("FICLONE: %v, want EOPNOTSUPP", err)
	}
	r := unix.FileCloneRange{Src_fd: int64(in.Fd()), Src_length: cpChunk}
	if err := unix.IoctlFileCloneRange(int(out.Fd()), &r); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("FICLONERANGE: %v, want EOPNOTSUPP", err)
	}
	cp, err := exec.LookPath("cp")
	if err != nil {
		fusetest.Missing(t, "needs cp: "+err.Error())
	}
	outp, err := exec.Command(cp, "--reflink=always", a, filepath.Join(tv.dir, "always")).CombinedOutput()
	if err == nil || !strings.Contains(string(outp), "Operation not supported") {
		t.Errorf("cp --reflink=always: %v, %q; want a failure: Operation not supported", err, outp)
	}
	for _, args := range [][]string{{"--reflink=auto"}, {}} {
		before, calls := uniqueBytes(t, tv), cc.calls.Load()
		b := filepath.Join(tv.dir, "copy"+strings.Join(args, ""))
		if outp, err := exec.Command(cp, append(args, a, b)...).CombinedOutput(); err != nil {
			t.Fatalf("cp %v: %v: %s", args, err, outp)
		}
		if got, err := os.ReadFile(b); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("cp %v: copy differs: %v", args, err)
		}
		if after := uniqueBytes(t, tv); after != before {
			t.Errorf("cp %v added %d chunk bytes to the store", args, after-before)
		}
		if cc.calls.Load() == calls {
			t.Errorf("cp %v did not use copy_file_range", args)
		}
	}
	storeFsck(t, tv)
}

// TestCopyFileRangeAcrossViews: between two mounts (each volume is its own FUSE connection)
// the kernel copies the bytes itself (no FUSE_COPY_FILE_RANGE across superblocks): the copy
// succeeds and, as chunks are content-addressed, an aligned one adds no chunk bytes. From a
// snapshot under .snapshots (the same mount) the request comes, and the chunks are shared.
func TestCopyFileRangeAcrossViews(t *testing.T) {
	ctx := context.Background()
	tv, cc := newCopyVolume(t)
	if _, err := tv.store.CreateVolume(ctx, "other", backendOpts(cpChunk)); err != nil {
		t.Fatal(err)
	}
	ov, err := tv.store.OpenVolume(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	om, odir := mountView(t, ov, Options{})
	data := pattern(8*cpChunk, 4)
	a := filepath.Join(tv.dir, "a")
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tv.mnt.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tv.store.CreateSnapshot(ctx, "vol", "s"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a, pattern(8*cpChunk, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, src, dst string
		served         bool // by fsys (else by the kernel)
	}{
		{"another mount", a, filepath.Join(odir, "b"), false},
		{"a snapshot", filepath.Join(tv.dir, ".snapshots", "s", "a"), a, true},
	} {
		want, err := os.ReadFile(c.src)
		if err != nil {
			t.Fatal(err)
		}
		before, calls := uniqueBytes(t, tv), cc.calls.Load()
		if n, err := copyRange(t, c.src, c.dst, 0, 0, len(data), 0); err != nil || n != len(data) {
			t.Fatalf("copy_file_range from %s = %d, %v", c.what, n, err)
		}
		if err := om.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(c.dst); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("copy from %s differs: %v", c.what, err)
		}
		if after := uniqueBytes(t, tv); after > before {
			t.Errorf("copy from %s added %d chunk bytes to the store", c.what, after-before)
		}
		if served := cc.calls.Load() != calls; served != c.served {
			t.Errorf("copy from %s: served by fsys %v, want %v", c.what, served, c.served)
		}
	}
	if b, err := os.ReadFile(a); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the file is not back as it was in the snapshot: %v", err)
	}
	storeFsck(t, tv)
}

// TestCopyFileRangeQuota: a copy counts its size against the quota (statfs shows it at once); one
// that would pass the quota fails with ENOSPC and leaves the destination as it was.
func TestCopyFileRangeQuota(t *testing.T) {
	const quota = 1 << 20
	opts := backendOpts(cpChunk)
	opts.Size = quota
	tv := newVolume(t, opts, Options{})
	a, b := filepath.Join(tv.dir, "a"), filepath.Join(tv.dir, "b")
	if err := os.WriteFile(a, pattern(6*cpChunk, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	used := func() int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(tv.dir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks-st.Bfree) * st.Bsize
	}
	before := used()
	if n, err := copyRange(t, a, b, 0, 0, 6*cpChunk, 0); err != nil || n != 6*cpChunk {
		t.Fatalf("copy_file_range = %d, %v", n, err)
	}
	if grew := used() - before; grew != 6*cpChunk {
		t.Errorf("statfs used grew by %d, want %d", grew, 6*cpChunk)
	}
	if n, err := copyRange(t, a, b, 0, 6*cpChunk, 6*cpChunk, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("copy_file_range past the quota = %d, %v; want ENOSPC", n, err)
	}
	if fi, err := os.Stat(b); err != nil || fi.Size() != 6*cpChunk {
		t.Fatalf("the refused copy changed the destination: %v, %v", fi.Size(), err)
	}
	storeFsck(t, tv)
}
