package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
)

// fsMount is what the daemon needs from a live FUSE mount (fs.Mount).
type fsMount interface {
	Dir() string
	Flush(ctx context.Context) error
	Unmount(ctx context.Context) error
}

// mountFunc mounts view on dir and returns once the mount is live.
type mountFunc func(ctx context.Context, dir string, view fs.Volume, log *slog.Logger) (fsMount, error)

// volState is the daemon's in-memory state of one volume. mu is the volume's lock, held across
// slow work. The reference fields are written with both mu and Daemon.mu held, so readers may
// hold either.
type volState struct {
	mu    sync.Mutex
	users int // goroutines holding or waiting for mu; guarded by Daemon.mu

	mnt   fsMount              // the FUSE mount of the live state, nil when not mounted
	refs  map[string]int       // Docker mount ID -> references
	binds map[string]bool      // directories volctl bind-mounted the live mount on
	snaps map[string]snapMount // volctl snapshot mounts, by directory
}

type snapMount struct {
	snapshot string
	mnt      fsMount
}

// liveRefs is the number of references to the live mount.
func (v *volState) liveRefs() int {
	n := len(v.binds)
	for _, c := range v.refs {
		n += c
	}
	return n
}

func (v *volState) idle() bool {
	return v.users == 0 && v.mnt == nil && len(v.refs) == 0 && len(v.binds) == 0 && len(v.snaps) == 0
}

// lockVolume takes name's lock, creating its state on first use.
func (d *Daemon) lockVolume(name string) *volState {
	d.mu.Lock()
	v := d.vols[name]
	if v == nil {
		v = &volState{refs: map[string]int{}, binds: map[string]bool{}, snaps: map[string]snapMount{}}
		d.vols[name] = v
	}
	v.users++
	d.mu.Unlock()
	v.mu.Lock()
	return v
}

// unlockVolume releases name's lock and forgets its state when nothing refers to it.
func (d *Daemon) unlockVolume(name string, v *volState) {
	v.mu.Unlock()
	d.mu.Lock()
	v.users--
	if v.idle() {
		delete(d.vols, name)
	}
	d.mu.Unlock()
}

// update applies a change to reference fields; the caller holds the volume's lock.
func (d *Daemon) update(fn func()) {
	d.mu.Lock()
	fn()
	d.mu.Unlock()
}

// volumeMounts is a consistent copy of a volume's mount state, for reporting.
type volumeMounts struct {
	mounted bool
	refs    map[string]int
	dirs    []string
}

func (d *Daemon) mountsOf(name string) volumeMounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vols[name]
	if v == nil {
		return volumeMounts{}
	}
	out := volumeMounts{mounted: v.mnt != nil}
	if len(v.refs) > 0 {
		out.refs = make(map[string]int, len(v.refs))
		for id, n := range v.refs {
			out.refs[id] = n
		}
	}
	for dir := range v.binds {
		out.dirs = append(out.dirs, dir)
	}
	for dir := range v.snaps {
		out.dirs = append(out.dirs, dir)
	}
	sort.Strings(out.dirs)
	return out
}

// mountLive makes sure the volume's live state is mounted at its mount directory and returns
// that directory. The caller holds the volume's lock and adds its reference afterwards, so a
// failed mount changes no count.
func (d *Daemon) mountLive(ctx context.Context, st *backend.Store, name string, v *volState) (string, error) {
	dir := d.mountDir(name)
	if v.mnt != nil {
		return dir, nil
	}
	view, err := st.OpenVolume(ctx, name)
	if err != nil {
		return "", fmt.Errorf("volume %s: %w", name, err)
	}
	// Nothing of ours is mounted there, so whatever is (a dead mount this daemon did not
	// clean at start, a detached mount's leftovers) is stale.
	if mounted, err := isMounted(dir); err == nil && mounted {
		d.log.Warn("detaching a stale mount before mounting", "volume", name, "dir", dir)
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return "", fmt.Errorf("volume %s: detach stale mount at %s: %w", name, dir, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("volume %s: create mount point: %w", name, err)
	}
	m, err := d.mount(ctx, dir, view, d.log.With("volume", name))
	if err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("volume %s: mount: %w", name, err)
	}
	d.update(func() { v.mnt = m })
	d.log.Info("mounted", "volume", name, "dir", dir)
	return dir, nil
}

// releaseLive unmounts the live state when no reference is left. On failure the mount stays in
// place (and is reused by the next Mount), so no dirty data is thrown away.
func (d *Daemon) releaseLive(ctx context.Context, name string, v *volState) error {
	if v.mnt == nil || v.liveRefs() > 0 {
		return nil
	}
	if err := v.mnt.Flush(ctx); err != nil {
		return fmt.Errorf("volume %s: flush before unmount: %w", name, err)
	}
	if err := d.unmountBounded(ctx, v.mnt); err != nil {
		return fmt.Errorf("volume %s: unmount: %w", name, err)
	}
	d.update(func() { v.mnt = nil })
	os.Remove(d.mountDir(name))
	d.log.Info("unmounted", "volume", name)
	return nil
}

// releaseWait bounds how long an unmount may keep the volume's lock. The FUSE server of a mount
// that another mount namespace still holds only stops when that namespace lets go.
const releaseWait = 20 * time.Second

// unmountBounded unmounts m, waiting at most releaseWait. When the wait runs out but the mount
// point is already gone from this namespace, the volume counts as unmounted and the server
// finishes in the background; otherwise the unmount failed.
func (d *Daemon) unmountBounded(ctx context.Context, m fsMount) error {
	done := make(chan error, 1)
	go func() { done <- m.Unmount(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-time.After(releaseWait):
	}
	if mounted, err := isMounted(m.Dir()); err != nil || mounted {
		return fmt.Errorf("%s still mounted after %v", m.Dir(), releaseWait)
	}
	d.log.Warn("unmounted, but the filesystem is still in use elsewhere; its server stops when released", "dir", m.Dir())
	return nil
}

// flushLive writes a mounted volume's dirty data to the store, so that a snapshot, diff or fsck
// sees what applications wrote. The caller holds the volume's lock.
func (d *Daemon) flushLive(ctx context.Context, name string, v *volState) error {
	if v.mnt == nil {
		return nil
	}
	if err := v.mnt.Flush(ctx); err != nil {
		return fmt.Errorf("volume %s: flush: %w", name, err)
	}
	return nil
}

// errInUse says who holds a volume.
func errInUse(name string, v *volState) error {
	ids, binds, snaps := 0, len(v.binds), len(v.snaps)
	for _, n := range v.refs {
		ids += n
	}
	return fmt.Errorf("volume %s is in use (%d container mount(s), %d volctl mount(s), %d snapshot mount(s)): %w",
		name, ids, binds, snaps, backend.ErrInUse)
}

// inUse reports whether anything holds the volume or one of its snapshots mounted.
func (v *volState) inUse() bool { return v.mnt != nil || v.liveRefs() > 0 || len(v.snaps) > 0 }
