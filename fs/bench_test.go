package fs

import (
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Each benchmark runs on three targets mounted in the same run: a directory of the kernel's own
// filesystem, go-fuse's loopback filesystem over such a directory, and a fusevol volume.

type benchTarget struct {
	name string
	dir  string
}

func benchTargets(b *testing.B) []benchTarget {
	b.Helper()
	fusetest.Require(b)
	tv := newVolume(b, backend.VolumeOptions{}, Options{})
	return []benchTarget{
		{"native", b.TempDir()},
		{"loopback", mountLoopback(b, 0)},
		// Without kernel passthrough every read and write goes through the FUSE server,
		// as it must for fusevol, whose data is not in a file.
		{"loopback-nopassthrough", mountLoopback(b, fuse.CAP_PASSTHROUGH)},
		{"fusevol", tv.dir},
	}
}

func mountLoopback(b *testing.B, disabled uint64) string {
	b.Helper()
	backing, mnt := b.TempDir(), b.TempDir()
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		b.Fatal(err)
	}
	sec := liveTimeout
	srv, err := gofs.Mount(mnt, root, &gofs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{
			DirectMount: true, MaxWrite: 1 << 20, MaxReadAhead: 1 << 20, MaxBackground: 128,
			DisableSplice: true, DisabledCapabilities: disabled,
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for range 50 {
			if srv.Unmount() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.Errorf("cannot unmount loopback %s", mnt)
	})
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		b.Fatal(err)
	}
	setReadAhead(st.Dev, testLogger(b))
	return mnt
}

func forEachTarget(b *testing.B, fn func(b *testing.B, dir string)) {
	for _, t := range benchTargets(b) {
		b.Run(t.name, func(b *testing.B) { fn(b, t.dir) })
	}
}

const (
	benchFileSize = 64 << 20
	benchIO       = 1 << 20
)

func writeFile(b *testing.B, p string, size, io int) {
	fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	buf := randBytes(7, io)
	for off := 0; off < size; off += io {
		buf[0]++ // distinct chunks: no dedup shortcut
		if _, err := fh.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	// Clean pages can be dropped from the page cache (dropCache) before a read benchmark.
	if err := fh.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkSeqWrite1M(b *testing.B) {
	forEachTarget(b, func(b *testing.B, dir string) {
		p := filepath.Join(dir, "seq")
		b.SetBytes(benchFileSize)
		for b.Loop() {
			writeFile(b, p, benchFileSize, benchIO)
		}
		os.Remove(p)
	})
}

// dropCache evicts the file's pages from the page cache of the filesystem under test.
func dropCache(b *testing.B, fd int) {
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkSeqRead1M(b *testing.B) {
	forEachTarget(b, func(b *testing.B, dir string) {
		p := filepath.Join(dir, "seq")
		writeFile(b, p, benchFileSize, benchIO)
		defer os.Remove(p)
		buf := make([]byte, benchIO)
		b.SetBytes(benchFileSize)
		for b.Loop() {
			fh, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			dropCache(b, int(fh.Fd()))
			for {
				n, err := fh.Read(buf)
				if n == 0 || err != nil {
					break
				}
			}
			fh.Close()
		}
	})
}

const randFileSize = 32 << 20

// alignedBuf returns a page-aligned buffer for O_DIRECT.
func alignedBuf(b *testing.B, n int) []byte {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(m) })
	return m
}

// BenchmarkRandRead4K reads with O_DIRECT so that every read reaches the filesystem.
func BenchmarkRandRead4K(b *testing.B) {
	forEachTarget(b, func(b *testing.B, dir string) {
		p := filepath.Join(dir, "rand")
		writeFile(b, p, randFileSize, benchIO)
		defer os.Remove(p)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		buf := alignedBuf(b, 4096)
		r := rand.New(rand.NewPCG(1, 2))
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := unix.Pread(fd, buf, int64(r.IntN(randFileSize/4096))*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRandWrite4K writes 4 KiB blocks at random offsets and fsyncs once at the end.
func BenchmarkRandWrite4K(b *testing.B) {
	forEachTarget(b, func(b *testing.B, dir string) {
		fd := randFile(b, filepath.Join(dir, "rand"))
		buf := randBytes(8, 4096)
		r := rand.New(rand.NewPCG(3, 4))
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := unix.Pwrite(fd, buf, int64(r.IntN(randFileSize/4096))*4096); err != nil {
				b.Fatal(err)
			}
		}
		if err := unix.Fsync(fd); err != nil {
			b.Fatal(err)
		}
	})
}

// randFile writes a file of randFileSize at p (removed when the benchmark ends) and opens it for
// writing (closed then too).
func randFile(b *testing.B, p string) int {
	writeFile(b, p, randFileSize, benchIO)
	b.Cleanup(func() { os.Remove(p) })
	fd, err := unix.Open(p, unix.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

// BenchmarkSmallFiles creates, writes 4 KiB to, closes, stats and unlinks one file per op.
func BenchmarkSmallFiles(b *testing.B) {
	forEachTarget(b, func(b *testing.B, dir string) {
		d := filepath.Join(dir, "small")
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(d)
		data := randBytes(9, 4096)
		i := 0
		var st syscall.Stat_t
		for b.Loop() {
			p := filepath.Join(d, fmt.Sprint("f", i))
			i++
			if err := os.WriteFile(p, data, 0o644); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Stat(p, &st); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Unlink(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
