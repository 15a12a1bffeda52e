package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"golang.org/x/sys/unix"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func mustErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestUnlinkWhileOpen(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	ctx := context.Background()
	_, before, err := tv.view.Quota(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(tv.dir, "f")
	data := randBytes(1, 300<<10)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after unlink: %v", err)
	}
	more := randBytes(2, 100<<10)
	if _, err := fh.WriteAt(more, int64(len(data))); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	want := append(append([]byte(nil), data...), more...)
	got := make([]byte, len(want)+10)
	n, err := fh.ReadAt(got, 0)
	if n != len(want) || !bytes.Equal(got[:n], want) {
		t.Fatalf("read after unlink: %d bytes (%v), want %d", n, err, len(want))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fh.Fd()), &st); err != nil || st.Nlink != 0 || st.Size != int64(len(want)) {
		t.Fatalf("fstat after unlink: nlink %d size %d err %v", st.Nlink, st.Size, err)
	}
	fh.Close()
	// The orphan is reclaimed once the kernel lets go of the inode.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, after, err := tv.view.Quota(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.Files == before.Files && after.Bytes == before.Bytes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan not reclaimed: usage %+v, was %+v", after, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMmapSharedWrite(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	p := filepath.Join(tv.dir, "m")
	const size = 256 << 10
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(fh.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	want := randBytes(3, size)
	copy(mem, want)
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	// The data reached the store, not just the page cache.
	got := make([]byte, size)
	n, err := tv.view.ReadAt(context.Background(), lookupIno(t, tv, "m"), got, 0)
	if err != nil || n != size || !bytes.Equal(got, want) {
		t.Fatalf("store content after msync: %d bytes, err %v, equal %v", n, err, bytes.Equal(got, want))
	}
	// Another mapping reads it back.
	fh, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	mem, err = unix.Mmap(int(fh.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if !bytes.Equal(mem, want) {
		t.Fatal("mapping reads different data")
	}
}

func lookupIno(t *testing.T, tv *testVolume, name string) backend.Ino {
	t.Helper()
	a, err := tv.view.Lookup(context.Background(), backend.RootIno, name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	return a.Ino
}

// TestFlushCommits checks that Mounted.Flush puts data written to a still-open file into the
// store, and that getattr reports the size of buffered data.
func TestFlushCommits(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	fh, err := os.Create(filepath.Join(tv.dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	data := randBytes(4, 1<<20+12345)
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fh.Name()); err != nil || fi.Size() != int64(len(data)) {
		t.Fatalf("size while buffered: %v %v", fi.Size(), err)
	}
	if err := tv.mnt.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	n, err := tv.view.ReadAt(context.Background(), lookupIno(t, tv, "f"), got, 0)
	if err != nil || n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("store after Flush: %d bytes, err %v", n, err)
	}
}

func TestTimes(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	p := filepath.Join(tv.dir, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	stat := func() (m, c time.Time) {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return time.Unix(st.Mtim.Unix()), time.Unix(st.Ctim.Unix())
	}
	tick := func() { time.Sleep(20 * time.Millisecond) }
	m0, c0 := stat()
	tick()
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	m1, c1 := stat()
	if !m1.Equal(m0) || !c1.After(c0) {
		t.Errorf("chmod: mtime %v->%v (want same), ctime %v->%v (want later)", m0, m1, c0, c1)
	}
	tick()
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	if m2, c2 := stat(); !m2.Equal(m1) || !c2.Equal(c1) {
		t.Errorf("read changed times: %v %v", m2, c2)
	}
	tick()
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	m3, c3 := stat()
	if !m3.After(m1) || !c3.After(c1) {
		t.Errorf("write (buffered): mtime %v->%v, ctime %v->%v: want both later", m1, m3, c1, c3)
	}
	// Committing the data on fsync does not move the times: they are those of the write.
	tick()
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	if m, c := stat(); !m.Equal(m3) || !c.Equal(c3) {
		t.Errorf("fsync moved the times: mtime %v->%v, ctime %v->%v", m3, m, c3, c)
	}
	// An explicit mtime set while data is buffered survives the commit at close (cp -p, tar).
	explicit := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	if _, err := fh.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, explicit, explicit); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if m4, _ := stat(); !m4.Equal(explicit) {
		t.Errorf("explicit mtime after close: %v, want %v", m4, explicit)
	}
	// chown(f, -1, -1) changes nothing but ctime, as on ext4.
	m5, c5 := stat()
	tick()
	if err := os.Chown(p, -1, -1); err != nil {
		t.Fatal(err)
	}
	if m, c := stat(); !m.Equal(m5) || !c.After(c5) {
		t.Errorf("chown(-1, -1): mtime %v->%v (want same), ctime %v->%v (want later)", m5, m, c5, c)
	}
	// rename changes the moved file's ctime, as ext4 does.
	_, c6 := stat()
	tick()
	q := filepath.Join(tv.dir, "g")
	if err := os.Rename(p, q); err != nil {
		t.Fatal(err)
	}
	p = q
	if _, c7 := stat(); !c7.After(c6) {
		t.Errorf("rename: ctime %v -> %v, want later", c6, c7)
	}
	// UTIME_OMIT keeps a time, UTIME_NOW sets it to now.
	before := time.Now().Add(-time.Second)
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(st.Atim.Unix()); at.Before(before) {
		t.Errorf("UTIME_NOW atime %v", at)
	}
	if mt := time.Unix(st.Mtim.Unix()); !mt.Equal(explicit) {
		t.Errorf("UTIME_OMIT changed mtime to %v", mt)
	}
}

func TestSparseSeekAndSpecialFiles(t *testing.T) {
	const cs = 64 << 10
	tv := newVolume(t, backendOpts(cs), Options{})
	p := filepath.Join(tv.dir, "sparse")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(5, 1000)
	if _, err := fh.WriteAt(data, 3*cs+10); err != nil {
		t.Fatal(err)
	}
	fd := int(fh.Fd())
	if off, err := unix.Seek(fd, 0, unix.SEEK_DATA); err != nil || off != 3*cs {
		t.Errorf("SEEK_DATA from 0: %d %v, want %d", off, err, 3*cs)
	}
	if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != 0 {
		t.Errorf("SEEK_HOLE from 0: %d %v, want 0", off, err)
	}
	if _, err := unix.Seek(fd, 4*cs, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("SEEK_DATA past EOF: %v, want ENXIO", err)
	}
	fh.Close()
	got, err := os.ReadFile(p)
	if err != nil || len(got) != 3*cs+10+1000 || !bytes.Equal(got[3*cs+10:], data) || !bytes.Equal(got[:3*cs+10], make([]byte, 3*cs+10)) {
		t.Fatalf("sparse read: %d bytes, %v", len(got), err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Blocks*512 >= 3*cs {
		t.Errorf("sparse file allocates %d blocks (%v)", st.Blocks, err)
	}

	dev := filepath.Join(tv.dir, "null")
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Lstat(dev, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("char device: mode %#o rdev %#x %v", st.Mode, st.Rdev, err)
	}
	sock := filepath.Join(tv.dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := syscall.Lstat(sock, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		t.Errorf("socket: mode %#o %v", st.Mode, err)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("connect through the socket node: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Errorf("socket read %q %v", buf, err)
	}
	c.Close()
	long := filepath.Join(tv.dir, string(bytes.Repeat([]byte("n"), 256)))
	mustErrno(t, "create 256-byte name", os.WriteFile(long, nil, 0o644), syscall.ENAMETOOLONG)
	ok := filepath.Join(tv.dir, string(bytes.Repeat([]byte("n"), 255)))
	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		t.Errorf("create 255-byte name: %v", err)
	}
}

func TestLocks(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	p := filepath.Join(tv.dir, "lock")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	mustErrno(t, "second flock", unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)
	if err := unix.Flock(int(a.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("flock after unlock: %v", err)
	}
	unix.Flock(int(b.Fd()), unix.LOCK_UN)
	// Open-file-description record locks conflict between descriptions even in one process.
	lk := func(typ int16, start, n int64) *unix.Flock_t {
		return &unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: n}
	}
	if err := unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, lk(unix.F_WRLCK, 0, 5)); err != nil {
		t.Fatal(err)
	}
	mustErrno(t, "overlapping record lock", unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, lk(unix.F_WRLCK, 4, 2)), syscall.EAGAIN)
	if err := unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, lk(unix.F_WRLCK, 5, 5)); err != nil {
		t.Errorf("disjoint record lock: %v", err)
	}
	probe := lk(unix.F_WRLCK, 0, 10)
	if err := unix.FcntlFlock(b.Fd(), unix.F_OFD_GETLK, probe); err != nil || probe.Type != unix.F_WRLCK || probe.Start != 0 || probe.Len != 5 {
		t.Errorf("F_OFD_GETLK: %+v %v", probe, err)
	}
}

func TestConcurrentIntegrity(t *testing.T) {
	const cs = 64 << 10
	// A small dirty limit makes the writers hit backpressure.
	tv := newVolume(t, backendOpts(cs), Options{DirtyLimit: 8 * cs, CacheBytes: 16 * cs})
	const writers, size = 6, 1 << 20
	errc := make(chan error, 2*writers)
	want := make([][]byte, writers)
	shared := filepath.Join(tv.dir, "shared")
	if err := os.WriteFile(shared, make([]byte, writers*size/4), 0o644); err != nil {
		t.Fatal(err)
	}
	sharedWant := make([]byte, writers*size/4)
	for w := range writers {
		want[w] = randBytes(uint64(100+w), size)
		copy(sharedWant[w*size/4:], want[w][:size/4])
		go func() {
			errc <- func() error {
				// Own file: random-order writes of random sizes, then read back.
				p := filepath.Join(tv.dir, "own", string(rune('a'+w)))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return err
				}
				fh, err := os.Create(p)
				if err != nil {
					return err
				}
				r := rand.New(rand.NewPCG(uint64(w), 9))
				for off := 0; off < size; {
					n := min(size-off, 1+r.IntN(3*cs))
					if _, err := fh.WriteAt(want[w][off:off+n], int64(off)); err != nil {
						return err
					}
					off += n
				}
				if err := fh.Close(); err != nil {
					return err
				}
				got, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if sha256.Sum256(got) != sha256.Sum256(want[w]) {
					return errors.New("own file: checksum mismatch")
				}
				return nil
			}()
			errc <- func() error {
				// Shared file: each writer owns a quarter-MiB region, not chunk-aligned.
				fh, err := os.OpenFile(shared, os.O_RDWR, 0)
				if err != nil {
					return err
				}
				defer fh.Close()
				region := want[w][:size/4]
				for off := 0; off < len(region); off += 4096 + 123 {
					end := min(len(region), off+4096+123)
					if _, err := fh.WriteAt(region[off:end], int64(w*size/4+off)); err != nil {
						return err
					}
				}
				got := make([]byte, len(region))
				if _, err := fh.ReadAt(got, int64(w*size/4)); err != nil {
					return err
				}
				if !bytes.Equal(got, region) {
					return errors.New("shared file: own region reads back different")
				}
				return nil
			}()
		}()
	}
	for range 2 * writers {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	got, err := os.ReadFile(shared)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(sharedWant) {
		t.Fatalf("shared file checksum mismatch (%v)", err)
	}
}

// writerChild makes the test binary a writer process: "DIR N" writes writerData(N) to DIR/pN and
// to region N of DIR/shared, then reads both back.
const writerChild = "FUSEVOL_WRITER_CHILD"

const writerSize = 512 << 10

func writerData(n int) []byte { return randBytes(uint64(1000+n), writerSize) }

func runWriterChild(spec string) error {
	var dir string
	var n int
	if _, err := fmt.Sscan(spec, &dir, &n); err != nil {
		return err
	}
	data := writerData(n)
	own := filepath.Join(dir, fmt.Sprint("p", n))
	if err := os.WriteFile(own, data, 0o644); err != nil {
		return err
	}
	fh, err := os.OpenFile(filepath.Join(dir, "shared"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	for off := 0; off < writerSize; off += 5000 {
		if _, err := fh.WriteAt(data[off:min(off+5000, writerSize)], int64(n*writerSize+off)); err != nil {
			return err
		}
	}
	got, err := os.ReadFile(own)
	if err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("writer %d: own file reads back different (%v)", n, err)
	}
	region := make([]byte, writerSize)
	if _, err := fh.ReadAt(region, int64(n*writerSize)); err != nil || !bytes.Equal(region, data) {
		return fmt.Errorf("writer %d: shared region reads back different (%v)", n, err)
	}
	return nil
}

// TestConcurrentProcesses runs writer processes against one mount at the same time.
func TestConcurrentProcesses(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	const procs = 4
	if err := os.WriteFile(filepath.Join(tv.dir, "shared"), make([]byte, procs*writerSize), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := make([]*exec.Cmd, procs)
	outs := make([]bytes.Buffer, procs)
	for n := range procs {
		cmds[n] = exec.Command(os.Args[0], "-test.run=^$")
		cmds[n].Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", writerChild, tv.dir, n))
		cmds[n].Stdout, cmds[n].Stderr = &outs[n], &outs[n]
		if err := cmds[n].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for n, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("writer %d: %v\n%s", n, err, outs[n].String())
		}
	}
	shared, err := os.ReadFile(filepath.Join(tv.dir, "shared"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range procs {
		want := writerData(n)
		if !bytes.Equal(shared[n*writerSize:(n+1)*writerSize], want) {
			t.Errorf("shared region %d differs", n)
		}
		if got, err := os.ReadFile(filepath.Join(tv.dir, fmt.Sprint("p", n))); err != nil || sha256.Sum256(got) != sha256.Sum256(want) {
			t.Errorf("file p%d differs (%v)", n, err)
		}
	}
}

// TestFileCapability checks the security.capability fast path: a capability set on a file is
// seen, and a write drops it, as on the kernel's filesystem.
func TestFileCapability(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	// struct vfs_cap_data, revision 2, permitting CAP_NET_RAW.
	capv := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, dir := range []string{nativeDir(t), tv.dir} {
		p := filepath.Join(dir, "bin")
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := unix.Getxattr(p, capXattr, buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%s: capability of a new file: %v", dir, err)
		}
		if err := unix.Setxattr(p, capXattr, capv, 0); err != nil {
			t.Fatalf("%s: set capability: %v", dir, err)
		}
		if n, err := unix.Getxattr(p, capXattr, buf); err != nil || !bytes.Equal(buf[:n], capv) {
			t.Errorf("%s: capability after set: % x %v", dir, buf[:max(n, 0)], err)
		}
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		if _, err := unix.Getxattr(p, capXattr, buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%s: capability after a write: %v, want ENODATA", dir, err)
		}
	}
}

// TestAppendAfterBackgroundCommit races attribute requests against background commits: a
// full chunk is committed in the background while a read past the end makes the kernel ask
// for the size; a stale answer would send the next O_APPEND write to the wrong offset.
func TestAppendAfterBackgroundCommit(t *testing.T) {
	const cs = 64 << 10
	tv := newVolume(t, backendOpts(cs), Options{})
	chunk := randBytes(12, cs)
	tail := []byte("tail")
	for i := range 300 {
		p := filepath.Join(tv.dir, fmt.Sprint("a", i%10))
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_APPEND|unix.O_CREAT|unix.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, chunk); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Pread(fd, make([]byte, 16), 1<<20); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, tail); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err != nil || st.Size != cs+int64(len(tail)) {
			t.Fatalf("round %d: size %d (%v), want %d", i, st.Size, err, cs+len(tail))
		}
	}
}
