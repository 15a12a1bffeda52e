package reliability

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
	"golang.org/x/sys/unix"
)

// TestDiskFilledByAnotherProcess puts the store on a small loop-mounted ext4 (512 MiB, 1 GiB in
// long mode) and, round after round, lets a dd of another process fill that filesystem while
// writers create small and medium files in a mounted volume, write and fsync them. Badger writes its logs through
// memory maps, and a store into a hole of a full filesystem is SIGBUS: before the disk guard
// covered every transaction, this killed the daemon within a round. Asserted each round: the
// daemon lives, every operation either worked or failed with ENOSPC, the writers did meet
// ENOSPC, every fsynced file reads back, fsck is clean, the daemon stops on SIGTERM and starts
// again on the full filesystem, and once dd's file is removed writes work again.
func TestDiskFilledByAnotherProcess(t *testing.T) {
	fusetest.Require(t)
	for _, bin := range []string{"mkfs.ext4", "mount", "dd"} {
		if _, err := exec.LookPath(bin); err != nil {
			fusetest.Missing(t, "needs "+bin)
		}
	}
	base := fusetest.TempRoot(t, "fvrel-")
	disk := loopExt4(t, base, pick[int64](512<<20, 1<<30)) // what the rounds store must fit
	root := filepath.Join(base, "daemon")
	store := filepath.Join(disk, "store")
	bindStore(t, store, filepath.Join(root, "store"))
	d := newDaemon(t, root)
	mnt := subdir(base, "mnt")
	d.mustVolctl("volume", "create", "hogged")
	d.mustVolctl("mount", "hogged", mnt)

	sums := map[string][32]byte{}
	hog := filepath.Join(disk, "hog")
	for round := range pick(3, 10) {
		// A hog that keeps taking whatever room comes back.
		fillWhileWriting(t, d, mnt, fmt.Sprintf("r%da", round), hog, true, pick[int64](1500, 5000), sums)
		must(t, os.Remove(hog))
		writeAfterHog(t, mnt, store, fmt.Sprintf("after%da", round), sums)

		// A hog that fills the disk once and exits; then SIGTERM and a restart with the
		// filesystem still full (Badger flushes its memtables at both ends), and the volume
		// mounts again and serves what was fsynced.
		fillWhileWriting(t, d, mnt, fmt.Sprintf("r%db", round), hog, false, 300, sums)
		for start := time.Now(); freeBytes(t, disk) < 32<<20; time.Sleep(50 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("round %d: the store kept its spare room with the filesystem full", round)
			}
		}
		p := d.proc
		d.proc = nil
		d.http.CloseIdleConnections()
		if !p.Stop(syscall.SIGTERM, 15*time.Second) || !p.Cmd.ProcessState.Success() {
			t.Fatalf("round %d: SIGTERM on the full filesystem: %v\n%s", round, p.Cmd.ProcessState, crash(d.log))
		}
		d.start()
		d.mustVolctl("mount", "hogged", mnt)
		checkSums(t, mnt, sums)
		must(t, os.Remove(hog))
		writeAfterHog(t, mnt, store, fmt.Sprintf("after%db", round), sums)
	}
	d.mustVolctl("unmount", mnt)
	if out, err := d.volctl("fsck"); err != nil {
		t.Errorf("fsck at the end: %v\n%s", err, out)
	}
	d.stop()
	if log := d.logTail(); strings.Contains(log, "SIGBUS") || strings.Contains(log, "unexpected fault address") {
		t.Errorf("a fault in the daemon log:\n%s", log)
	}
}

// fillWhileWriting runs writers on mnt (file names starting with prefix) and, once they have
// fsynced 100 files, a hog filling the filesystem through path (topping up: see startHog) while
// they begin n more; it adds what they fsynced to sums and checks that the daemon lives, that
// every error was ENOSPC (and with topUp that there were some), that sums read back and fsck is
// clean.
func fillWhileWriting(t *testing.T, d *daemon, mnt, prefix, path string, topUp bool, n int64, sums map[string][32]byte) {
	t.Helper()
	w := startWriters(t, mnt, prefix, 2)
	err := w.waitFiles(100)
	if err == nil {
		stopHog := startHog(t, path, topUp)
		err = w.waitAttempts(w.attempts.Load() + n)
		stopHog()
	}
	got, werr := w.stop()
	if err = errors.Join(err, werr); err != nil {
		select { // a dying daemon fails its mount before it is gone
		case <-d.proc.Exited():
		case <-time.After(5 * time.Second):
		}
	}
	if !d.alive() {
		t.Fatalf("%s: the daemon died while another process filled its disk:\n%s", prefix, crash(d.log))
	}
	if err != nil {
		t.Fatalf("%s: %v", prefix, err)
	}
	if topUp && w.enospc.Load() == 0 { // a one-shot hog may leave them the room the store holds
		t.Fatalf("%s: no writer met ENOSPC: the hog did not fill the disk", prefix)
	}
	t.Logf("%s: %d files fsynced, %d met ENOSPC, %d MiB free under the hog",
		prefix, len(got), w.enospc.Load(), freeBytes(t, filepath.Dir(path))>>20)
	for name, sum := range got {
		sums[name] = sum
	}
	checkSums(t, mnt, sums)
	if out, err := d.volctl("fsck"); err != nil {
		t.Fatalf("%s: fsck of the full store: %v\n%s", prefix, err, out)
	}
}

// writeAfterHog writes and fsyncs the file name, which must work once the hog is gone.
func writeAfterHog(t *testing.T, mnt, store, name string, sums map[string][32]byte) {
	t.Helper()
	data := make([]byte, 300<<10)
	rand.Read(data)
	if err := withinMinutes(t, 2, func() error { return writeSync(filepath.Join(mnt, name), data) }); err != nil {
		t.Fatalf("writing %s once the hog is gone: %v\n%s", name, err, storeFiles(store))
	}
	sums[name] = sha256.Sum256(data)
	checkSums(t, mnt, sums)
}

// startHog fills the filesystem of path with a dd writing to path until ENOSPC; with topUp it
// then keeps taking whatever room comes back (the filesystem's own slack, the store's spare
// room) with a dd appending to it every 20 ms, until the returned function stops it.
func startHog(t *testing.T, path string, topUp bool) (stop func()) {
	t.Helper()
	out, err := exec.Command("dd", "if=/dev/zero", "of="+path, "bs=1M").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("dd was to fill the filesystem: %v\n%s", err, out)
	}
	if !topUp {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			exec.Command("dd", "if=/dev/zero", "of="+path, "bs=4k", "oflag=append", "conv=notrunc").Run()
		}
	}()
	return func() { close(done); <-finished }
}

// loopExt4 makes an ext4 image of size bytes in dir, without blocks reserved for root (so a
// root hog takes everything), mounts it and returns the mount point; it is unmounted (and its
// loop device freed) when the test ends.
func loopExt4(t *testing.T, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	mnt := subdir(dir, "disk")
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// bindStore makes dst (the daemon's store directory) the directory src of the small
// filesystem: daemon log, socket and mount points stay elsewhere.
func bindStore(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.MkdirAll(src, 0o700))
	must(t, os.MkdirAll(dst, 0o700))
	must(t, unix.Mount(src, dst, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
}

// storeFiles lists the store's files with their allocated sizes and the filesystem's free space
// (for a failure's message).
func storeFiles(dir string) string {
	var b strings.Builder
	ents, _ := os.ReadDir(dir)
	var st unix.Stat_t
	for _, e := range ents {
		if unix.Stat(filepath.Join(dir, e.Name()), &st) == nil {
			fmt.Fprintf(&b, "%s: %d bytes, %d allocated\n", e.Name(), st.Size, st.Blocks*512)
		}
	}
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) == nil {
		fmt.Fprintf(&b, "free: %d bytes\n", int64(fs.Bavail)*fs.Bsize)
	}
	return b.String()
}

func freeBytes(t *testing.T, dir string) int64 {
	var st unix.Statfs_t
	must(t, unix.Statfs(dir, &st))
	return int64(st.Bavail) * st.Bsize
}

// writers create files in a directory, each written whole and fsynced, until stopped. Every
// error must be ENOSPC; a file whose write, fsync or close failed is removed if it can be.
type writers struct {
	stopped  atomic.Bool
	files    atomic.Int64 // files fsynced
	enospc   atomic.Int64 // files that met ENOSPC
	attempts atomic.Int64 // files begun
	wg       sync.WaitGroup

	mu   sync.Mutex
	sums map[string][32]byte
	errs []error
}

func startWriters(t *testing.T, dir, prefix string, n int) *writers {
	w := &writers{sums: map[string][32]byte{}}
	for i := range n {
		w.wg.Add(1)
		go w.run(filepath.Join(dir, fmt.Sprintf("%s-w%d", prefix, i)))
	}
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *writers) run(prefix string) {
	defer w.wg.Done()
	for i := 0; !w.stopped.Load(); i++ {
		// Mostly small files (their bodies go to Badger's memtable log), every tenth of
		// 200 KiB (bodies of the value log).
		size := 512 + i%7*1024
		if i%10 == 9 {
			size = 200 << 10
		}
		data := make([]byte, size)
		rand.Read(data)
		name := fmt.Sprintf("%s-%05d", prefix, i)
		w.attempts.Add(1)
		err := writeSync(name, data)
		w.mu.Lock()
		switch {
		case err == nil:
			w.sums[filepath.Base(name)] = sha256.Sum256(data)
			w.files.Add(1)
		case onlyENOSPC(err):
			w.enospc.Add(1)
			if rerr := os.Remove(name); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && !onlyENOSPC(rerr) {
				w.errs = append(w.errs, fmt.Errorf("remove %s: %w", name, rerr))
			}
		default:
			w.errs = append(w.errs, fmt.Errorf("%s: %w", name, err))
		}
		w.mu.Unlock()
		if err != nil && !onlyENOSPC(err) {
			return
		}
	}
}

// onlyENOSPC reports whether err (possibly several joined) is ENOSPC and nothing else.
func onlyENOSPC(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e != nil && !onlyENOSPC(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, syscall.ENOSPC)
}

// waitFiles waits until the writers fsynced n files, waitAttempts until they began n. Either
// fails on a writer's error other than ENOSPC or after two minutes.
func (w *writers) waitFiles(n int64) error { return w.wait("fsynced files", &w.files, n) }

func (w *writers) waitAttempts(n int64) error { return w.wait("files begun", &w.attempts, n) }

func (w *writers) wait(what string, c *atomic.Int64, n int64) error {
	deadline := time.Now().Add(2 * time.Minute)
	for c.Load() < n {
		w.mu.Lock()
		errs := errors.Join(w.errs...)
		w.mu.Unlock()
		if errs != nil {
			return fmt.Errorf("a writer failed with something else than ENOSPC: %w", errs)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited 2 minutes for %d %s, got %d", n, what, c.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// crash is the start of the Go runtime's report of a fatal signal or panic in the log at path
// (the cause and the stack of the goroutine that died), or the log's tail if there is none.
func crash(path string) string {
	b, _ := os.ReadFile(path)
	log := string(b)
	for _, mark := range []string{"unexpected fault address", "fatal error", "panic:", "SIGBUS"} {
		if i := strings.Index(log, mark); i >= 0 {
			return log[i:min(len(log), i+4000)]
		}
	}
	return fusetest.LogTail(path, 4000)
}

// stop stops the writers and returns the checksums of the files they fsynced and their errors
// other than ENOSPC; stopping twice is fine.
func (w *writers) stop() (map[string][32]byte, error) {
	w.stopped.Store(true)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sums, errors.Join(w.errs...)
}
