package fs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tunes a mount.
type Options struct {
	Logger *slog.Logger
	// DirtyLimit caps buffered, uncommitted write data across the mount (0 = 64 MiB default);
	// writers block (backpressure) beyond it. Each buffered MiB costs about 3-4 MiB of daemon
	// memory (chunk buffer, stored form, garbage-collector headroom), and 64 MiB already keeps
	// hashing and commits busy, so larger limits only cost memory.
	DirtyLimit int64
	// WriteBudget, when set, is shared with other mounts and replaces DirtyLimit (budget.go).
	WriteBudget *WriteBudget
	// Cache is the chunk read cache's budget, shared with the other mounts given the same one
	// (the daemon gives all its mounts one). Nil: the mount has its own of CacheBytes.
	Cache *Cache
	// CacheBytes bounds the mount's own chunk cache when Cache is nil (0 = DefaultCacheBytes).
	CacheBytes int64
	// MaxWrite is the largest FUSE request's payload (0 = DefaultMaxWrite); it also caps read
	// requests. go-fuse keeps a buffer of this size for each of the mount's 2-3 request
	// readers, idle or not, so a daemon of many mounts sets it lower.
	MaxWrite int
	// Observe, when set, is told of every request the mount answers (observe.go); nil costs
	// nothing.
	Observe Observer
	// Restartable holds every request at a gate that Freeze closes, so that a successor
	// process can take the connection over (resume.go); it costs a shared lock per request.
	Restartable bool
	// Persist, when set, is given the mount's ResumeState and connection (Mounted.Device) when
	// it is mounted and each time the state changes, so that what a successor needs is kept
	// outside this process.
	Persist func(ResumeState, *os.File)
	// Atime says when reads update atime (atime.go); SetAtime changes it later.
	Atime Atime
	Debug bool
}

// DefaultMaxWrite is Options.MaxWrite's default.
const DefaultMaxWrite = 1 << 20

func (o Options) cache() *Cache {
	if o.Cache != nil {
		return o.Cache
	}
	return NewCache(o.CacheBytes)
}

// viewInfo describes the view being mounted (Mount, newFsys).
type viewInfo interface {
	ReadOnly() bool
	ChunkSize() int
	Volume() backend.VolumeInfo
}

var _ viewInfo = (*backend.View)(nil)

// Mounted is a mounted view.
type Mounted struct {
	dir    string
	f      *fsys
	srv    *fuse.Server
	dev    *os.File // the connection's /dev/fuse descriptor (go-fuse serves a duplicate)
	gate   *gate    // nil unless Options.Restartable
	cancel context.CancelFunc
	done   chan struct{} // closed when the server has stopped
}

// Mount mounts the view (read-write volume, or read-only snapshot when view.ReadOnly()) at dir
// with allow_other and default_permissions, and returns only once the mount answers requests;
// on error nothing is left mounted. The mount is made here rather than by go-fuse so that the
// connection's descriptor can outlive this process (Device, resume.go).
func Mount(ctx context.Context, dir string, view Volume, opts Options) (*Mounted, error) {
	opts = opts.withDefaults()
	if cs := view.ChunkSize(); cs <= 0 {
		return nil, fmt.Errorf("mount %s: bad chunk size %d", dir, cs)
	}
	dev, err := mountDevice(dir, view, opts.MaxWrite)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	m, err := serve(ctx, dir, dev, view, opts, func(f *fsys, mo *fuse.MountOptions) (*fuse.Server, error) {
		fd, err := unix.FcntlInt(dev.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		return fuse.NewServer(rawFS(f, opts.Observe, f.gate), fmt.Sprintf("/dev/fd/%d", fd), mo)
	})
	if err != nil {
		_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		dev.Close()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return m, nil
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	o.MaxWrite = cmp.Or(o.MaxWrite, DefaultMaxWrite)
	return o
}

// mountDevice opens /dev/fuse and mounts a FUSE filesystem of it on dir.
func mountDevice(dir string, view viewInfo, maxWrite int) (*os.File, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, err
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=%d,group_id=%d,max_read=%d,allow_other,default_permissions",
		fd, st.Mode&syscall.S_IFMT, os.Geteuid(), os.Getegid(), maxWrite)
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if view.ReadOnly() {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("fusevol:"+view.Volume().Name, dir, "fuse.fusevol", flags, data); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}

// serve builds the fsys of a mount whose connection is dev and serves it with the server
// newServer makes; it returns once the mount answers.
func serve(ctx context.Context, dir string, dev *os.File, view Volume, opts Options,
	newServer func(*fsys, *fuse.MountOptions) (*fuse.Server, error)) (*Mounted, error) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := newFsys(fctx, view, opts)
	if opts.Restartable {
		f.gate = &gate{}
	}
	for range 2 {
		go f.cache.runPrefetch(fctx)
	}
	mo := &fuse.MountOptions{
		MaxBackground:            128,
		MaxWrite:                 opts.MaxWrite,
		MaxReadAhead:             1 << 20,
		ExplicitDataCacheControl: true,
		DisableSplice:            true, // measured faster: fs BenchmarkSeqRead1M 899-937 vs 714-815 MB/s spliced
		Debug:                    opts.Debug,
		Logger:                   fuseLogger(opts.Logger, opts.Debug),
	}
	srv, err := newServer(f, mo)
	if err != nil {
		cancel()
		f.cache.close()
		return nil, err
	}
	f.init, f.dev = *srv.KernelSettings(), dev
	m := &Mounted{dir: dir, f: f, srv: srv, dev: dev, gate: f.gate, cancel: cancel, done: make(chan struct{})}
	go func() {
		srv.Serve()
		close(m.done)
	}()
	if err := srv.WaitMount(); err != nil {
		m.abort()
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		m.abort()
		return nil, fmt.Errorf("mount does not answer: %w", err)
	}
	setReadAhead(st.Dev, opts.Logger)
	f.persist()
	return m, nil
}

// fuseLogger is go-fuse's log: its lines go to the mount's logger (at Warn: without Debug,
// go-fuse logs only anomalies), except the trySplice failures it prints for each read reply
// larger than a pipe, which would flood the log (one per 1 MiB read) were splice ever on.
func fuseLogger(log *slog.Logger, debug bool) *stdlog.Logger {
	lv := slog.LevelWarn
	if debug {
		lv = slog.LevelInfo
	}
	return stdlog.New(fuseLog{log, lv}, "", 0)
}

type fuseLog struct {
	log   *slog.Logger
	level slog.Level
}

func (w fuseLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" && !strings.Contains(line, "trySplice") {
			w.log.Log(context.Background(), w.level, "go-fuse: "+line)
		}
	}
	return len(p), nil
}

// setReadAhead raises the kernel's read-ahead for the mount to 1 MiB (its default for
// FUSE is 128 KiB), so sequential reads arrive in large requests.
func setReadAhead(dev uint64, log *slog.Logger) {
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
	if err := os.WriteFile(p, []byte("1024"), 0); err != nil {
		log.Debug("cannot raise read-ahead", "path", p, "err", err)
	}
}

func (m *Mounted) abort() {
	if err := unmountDir(m.dir); err != nil {
		_ = syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
	m.cancel()
	m.f.cache.close()
}

// unmountDir unmounts dir, trying a few times: the kernel may not have seen the last close yet.
func unmountDir(dir string) error {
	var err error
	delay := time.Duration(0)
	for range 5 {
		if err = syscall.Unmount(dir, 0); err == nil {
			return nil
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	return err
}

// Dir is the mount point.
func (m *Mounted) Dir() string { return m.dir }

// Flush commits every dirty buffer of the mount to the store (the daemon calls it before
// taking a snapshot).
func (m *Mounted) Flush(ctx context.Context) error {
	return m.f.wb.flushAll(ctx)
}

// Unmount flushes, unmounts (lazily if busy after a few tries) and waits for the server to stop.
func (m *Mounted) Unmount(ctx context.Context) error {
	ferr := m.Flush(ctx)
	if err := unmountDir(m.dir); err != nil {
		m.f.log.Warn("mount busy: detaching lazily", "dir", m.dir, "err", err)
		if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("unmount %s: %w", m.dir, err)
		}
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		return fmt.Errorf("unmount %s: waiting for the server: %w", m.dir, ctx.Err())
	}
	// Late writes (from lazily detached users) are committed before the store lets go.
	ferr = errors.Join(ferr, m.f.wb.flushAll(ctx))
	m.f.reclaimOrphans()
	m.cancel()
	m.f.cache.close()
	m.dev.Close()
	if ferr != nil {
		return fmt.Errorf("unmount %s: %w", m.dir, ferr)
	}
	return nil
}
