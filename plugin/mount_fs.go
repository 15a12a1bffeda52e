package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
	"github.com/fusevol/fusevol/fs/mountinfo"
)

// mounter is what the mount table asks of the system: FUSE mounts, bind mounts, unmounts and
// the mount table. sysMounter is the real one; tests drive the table with a fake.
type mounter interface {
	// Mount mounts view on dir with FUSE and returns once the mount answers requests.
	Mount(ctx context.Context, dir string, view *backend.View, log *slog.Logger) (fsMount, error)
	// Bind bind-mounts src on dir.
	Bind(src, dir string) error
	// Unmount unmounts dir; detach makes it lazy (MNT_DETACH).
	Unmount(dir string, detach bool) error
	// Mounts reads this process's mount table.
	Mounts() (mountinfo.Table, error)
	// Statfs asks the filesystem mounted on dir for its statistics. It always reaches a FUSE
	// server (stat may be answered from the kernel's cache): ENOTCONN when the server is gone.
	Statfs(dir string) error
}

// fsMount is what the daemon needs from a live FUSE mount (fs.Mounted).
type fsMount interface {
	Dir() string
	SetAtime(fs.Atime)
	Flush(ctx context.Context) error
	Unmount(ctx context.Context) error
	// Freeze hands the mount over to a successor process (fs.Mounted.Freeze).
	Freeze(ctx context.Context) error
}

// sysMounter mounts with the fs package and the mount system calls. All its mounts share one chunk
// cache and one write-buffer budget, so the daemon's memory does not grow with its mounts.
type sysMounter struct {
	cache   *fs.Cache
	budget  *fs.WriteBudget
	observe func(volume string) fs.Observer // nil: no metrics
	keep    *keptMounts                     // nil: live restart off
}

func newSysMounter(cacheSize, writeBuffer int64) sysMounter {
	return sysMounter{cache: fs.NewCache(cacheSize), budget: fs.NewWriteBudget(writeBuffer)}
}

// mountMaxWrite is the daemon's FUSE request size: one default chunk. go-fuse holds a buffer of
// it for each of a mount's 2-3 request readers, idle or not; at fs's 1 MiB default, 50 mounts
// held 159 MB of heap that way, which pushed the daemon against its soft memory limit and halved
// their write throughput (BenchmarkManyVolumes: 0.45-0.64x one volume, 0.78-1.05x at 256 KiB).
const mountMaxWrite = backend.DefaultChunkSize

func (sm sysMounter) Mount(ctx context.Context, dir string, view *backend.View, log *slog.Logger) (fsMount, error) {
	m, err := fs.Mount(ctx, dir, view, sm.options(dir, view, log))
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (sm sysMounter) options(dir string, view *backend.View, log *slog.Logger) fs.Options {
	opts := fs.Options{Logger: log, Cache: sm.cache, WriteBudget: sm.budget, MaxWrite: mountMaxWrite}
	if sm.observe != nil {
		opts.Observe = sm.observe(view.Volume().Name)
	}
	if sm.keep != nil && !view.ReadOnly() {
		name := view.Volume().Name
		opts.Restartable = true
		opts.Persist = func(st fs.ResumeState, dev *os.File) { sm.keep.state(dir, name, st, dev) }
	}
	return opts
}

// resume serves a live mount a predecessor left with the keeper.
func (sm sysMounter) resume(ctx context.Context, r keptMount, dev *os.File, view *backend.View, log *slog.Logger) (fsMount, error) {
	return fs.Resume(ctx, r.Dir, dev, r.State, view, sm.options(r.Dir, view, log))
}

// Bind mounts on dir through a descriptor opened without following symlinks: dir is a volctl
// target that checkMountTarget resolved and checked, and mount(2) on the path would follow a
// symlink put in its place since.
func (sysMounter) Bind(src, dir string) error {
	fd, err := openNoSymlinks(dir)
	if err != nil {
		return fmt.Errorf("open mount target %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return unix.Mount(src, fmt.Sprintf("/proc/self/fd/%d", fd), "", unix.MS_BIND, "")
}

// openNoSymlinks opens the directory path (O_PATH) with every symlink in it refused (ELOOP).
func openNoSymlinks(path string) (int, error) {
	return unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

func (sysMounter) Unmount(dir string, detach bool) error {
	flags := 0
	if detach {
		flags = unix.MNT_DETACH
	}
	return unix.Unmount(dir, flags)
}

func (sysMounter) Mounts() (mountinfo.Table, error) { return mountinfo.Read() }

func (sysMounter) Statfs(dir string) error {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st)
}
