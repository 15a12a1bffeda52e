package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
	"github.com/fusevol/fusevol/fs/mountinfo"
	"github.com/fusevol/fusevol/plugin/api"
)

// mountTable is the daemon's mount bookkeeping: which volumes are mounted, who holds them
// (Docker mount IDs, volctl bind and snapshot mounts) and the locks that order that work. It
// makes every mount and unmount through a mounter, so tests drive it without FUSE.
//
// A volume's live state has at most one FUSE mount, at <root>/<name>; Docker's mount IDs and
// volctl's bind mounts are references to it, and the last reference unmounts it. A volctl
// snapshot mount is a FUSE mount of its own on the volctl directory.
type mountTable struct {
	root string // MountRoot
	sys  mounter
	log  *slog.Logger
	keep *keptMounts // nil: live restart off

	mu   sync.Mutex // guards vols and dirs; never held across I/O
	vols map[string]*volState
	dirs map[string]string // volctl mount directory -> volume name
}

func newMountTable(root string, sys mounter, log *slog.Logger) *mountTable {
	return &mountTable{root: root, sys: sys, log: log, vols: map[string]*volState{}, dirs: map[string]string{}}
}

// volState is the table's state of one volume. mu is the volume's lock, held across slow work.
// The reference fields are written with both mu and mountTable.mu held, so readers may hold
// either.
type volState struct {
	mu    sync.Mutex
	users int // goroutines holding or waiting for mu; guarded by mountTable.mu

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

// inUse reports whether anything holds the volume or one of its snapshots mounted.
func (v *volState) inUse() bool { return v.mnt != nil || v.liveRefs() > 0 || len(v.snaps) > 0 }

// errInUse says who holds a volume.
func errInUse(name string, v *volState) error {
	ids, binds, snaps := 0, len(v.binds), len(v.snaps)
	for _, n := range v.refs {
		ids += n
	}
	return fmt.Errorf("volume %s is in use (%d container mount(s), %d volctl mount(s), %d snapshot mount(s)): %w",
		name, ids, binds, snaps, backend.ErrInUse)
}

// dir is where the live state of volume name is mounted. Names are validated before use, so the
// result always lies directly under the root.
func (t *mountTable) dir(name string) string { return filepath.Join(t.root, name) }

// lock takes name's lock, creating its state on first use.
func (t *mountTable) lock(name string) *volState {
	t.mu.Lock()
	v := t.vols[name]
	if v == nil {
		v = &volState{refs: map[string]int{}, binds: map[string]bool{}, snaps: map[string]snapMount{}}
		t.vols[name] = v
	}
	v.users++
	t.mu.Unlock()
	v.mu.Lock()
	return v
}

// unlock releases name's lock and forgets its state when nothing refers to it.
func (t *mountTable) unlock(name string, v *volState) {
	t.keep.sync(t.dir(name), v.mnt != nil, v.refs, v.binds)
	v.mu.Unlock()
	t.mu.Lock()
	v.users--
	if v.idle() {
		delete(t.vols, name)
	}
	t.mu.Unlock()
}

// update applies a change to reference fields; the caller holds the volume's lock.
func (t *mountTable) update(fn func()) {
	t.mu.Lock()
	fn()
	t.mu.Unlock()
}

// volumeMounts is a consistent copy of a volume's mount state, for reporting.
type volumeMounts struct {
	mounted bool
	refs    map[string]int
	dirs    []string
}

func (t *mountTable) report(name string) volumeMounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	v := t.vols[name]
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

// addRef adds a Docker reference for mount ID id, mounting the volume on the first one, and
// returns the mount point. The same ID may arrive more than once (docker cp on a running
// container, a container restarted after dockerd restarted) and every arrival counts.
func (t *mountTable) addRef(ctx context.Context, st *backend.Store, name, id string) (string, error) {
	v := t.lock(name)
	defer t.unlock(name, v)
	dir, err := t.mountLive(ctx, st, name, v)
	if err != nil {
		return "", err
	}
	t.update(func() { v.refs[id]++ })
	t.log.Debug("mount reference added", "volume", name, "id", id, "refs", v.liveRefs())
	return dir, nil
}

// dropRef drops one reference of mount ID id, unmounting after the last; an unknown ID is a
// no-op (dockerd may send it after a failed Mount, or for a mount made before this daemon
// started).
func (t *mountTable) dropRef(ctx context.Context, name, id string) error {
	v := t.lock(name)
	defer t.unlock(name, v)
	if v.refs[id] == 0 {
		t.log.Info("unmount of an unknown mount ID ignored", "volume", name, "id", id)
		return nil
	}
	t.update(func() {
		if v.refs[id]--; v.refs[id] == 0 {
			delete(v.refs, id)
		}
	})
	return t.releaseLive(ctx, name, v)
}

// mountLive makes sure the volume's live state is mounted at its mount directory and returns
// that directory. The caller holds the volume's lock and adds its reference afterwards, so a
// failed mount changes no count.
func (t *mountTable) mountLive(ctx context.Context, st *backend.Store, name string, v *volState) (string, error) {
	dir := t.dir(name)
	if v.mnt != nil {
		return dir, nil
	}
	view, err := st.OpenVolume(ctx, name)
	if err != nil {
		return "", fmt.Errorf("volume %s: %w", name, err)
	}
	if err := t.detachStale(name, dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("volume %s: create mount point: %w", name, err)
	}
	m, err := t.sys.Mount(ctx, dir, view, t.log.With("volume", name))
	if err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("volume %s: mount: %w", name, err)
	}
	t.update(func() { v.mnt = m })
	t.log.Info("mounted", "volume", name, "dir", dir)
	return dir, nil
}

// releaseLive unmounts the live state when no reference is left. On failure the mount stays in
// place (and is reused by the next mount), so no dirty data is thrown away.
func (t *mountTable) releaseLive(ctx context.Context, name string, v *volState) error {
	if v.mnt == nil || v.liveRefs() > 0 {
		return nil
	}
	if err := v.mnt.Flush(ctx); err != nil {
		return fmt.Errorf("volume %s: flush before unmount: %w", name, err)
	}
	if err := t.unmountBounded(ctx, v.mnt); err != nil {
		return fmt.Errorf("volume %s: unmount: %w", name, err)
	}
	t.update(func() { v.mnt = nil })
	os.Remove(t.dir(name))
	t.log.Info("unmounted", "volume", name)
	return nil
}

// releaseWait bounds how long an unmount may keep the volume's lock. The FUSE server of a mount
// that another mount namespace still holds only stops when that namespace lets go.
const releaseWait = 20 * time.Second

// unmountBounded unmounts m, waiting at most releaseWait. When the wait runs out but the mount
// point is already gone from this namespace, the volume counts as unmounted and the server
// finishes in the background; otherwise the unmount failed.
func (t *mountTable) unmountBounded(ctx context.Context, m fsMount) error {
	done := make(chan error, 1)
	go func() { done <- m.Unmount(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-time.After(releaseWait):
	}
	if mounted, err := t.isMounted(m.Dir()); err != nil || mounted {
		return fmt.Errorf("%s still mounted after %v", m.Dir(), releaseWait)
	}
	t.log.Warn("unmounted, but the filesystem is still in use elsewhere; its server stops when released", "dir", m.Dir())
	return nil
}

// flushLive writes a mounted volume's dirty data to the store, so that a snapshot, diff or fsck
// sees what applications wrote. The caller holds the volume's lock.
func (t *mountTable) flushLive(ctx context.Context, name string, v *volState) error {
	if v.mnt == nil {
		return nil
	}
	if err := v.mnt.Flush(ctx); err != nil {
		return fmt.Errorf("volume %s: flush: %w", name, err)
	}
	return nil
}

// flush flushes volume name's live mount, if it has one.
func (t *mountTable) flush(ctx context.Context, name string) error {
	v := t.lock(name)
	defer t.unlock(name, v)
	return t.flushLive(ctx, name, v)
}

// flushAll flushes every mounted volume, one volume lock at a time.
func (t *mountTable) flushAll(ctx context.Context) error {
	for _, name := range t.names() {
		if err := t.flush(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// names lists the volumes the table holds state for.
func (t *mountTable) names() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.vols))
	for name := range t.vols {
		names = append(names, name)
	}
	return names
}

// liveMounts counts the FUSE mounts the table holds.
func (t *mountTable) liveMounts() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, v := range t.vols {
		if v.mnt != nil {
			n++
		}
		n += len(v.snaps)
	}
	return n
}

// volctl mounts: a volume's live state is bind-mounted from its one FUSE mount under the root
// (so Docker and volctl never hold two caches of the same volume); a snapshot gets its own
// read-only FUSE mount on the directory.

// mountAt mounts volume vol (snap == "") or its snapshot snap on the volctl directory dir.
// mountAt mounts vol (or its snapshot snap) on dir; atime, when not "", is the live volume's
// atime mode from now on (checked by the caller).
func (t *mountTable) mountAt(ctx context.Context, st *backend.Store, vol, snap, dir, atime string) error {
	t.reconcile(ctx)
	v := t.lock(vol)
	defer t.unlock(vol, v)
	if !t.claimDir(dir, vol) {
		return invalid("%s is already a volctl mount", dir)
	}
	var err error
	if snap != "" {
		err = t.mountSnapshot(ctx, st, vol, snap, dir, v)
	} else {
		err = t.bindLive(ctx, st, vol, dir, v, atime)
	}
	if err != nil {
		t.update(func() { delete(t.dirs, dir) })
	}
	return err
}

// claimDir reserves dir for a mount of vol; false when another volctl mount holds it.
func (t *mountTable) claimDir(dir, vol string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, taken := t.dirs[dir]; taken {
		return false
	}
	t.dirs[dir] = vol
	return true
}

func (t *mountTable) mountSnapshot(ctx context.Context, st *backend.Store, vol, snap, dir string, v *volState) error {
	view, err := st.OpenSnapshot(ctx, vol, snap)
	if err != nil {
		return err // it names the snapshot
	}
	m, err := t.sys.Mount(ctx, dir, view, t.log.With("volume", vol, "snapshot", snap))
	if err != nil {
		return fmt.Errorf("mount %s@%s on %s: %w", vol, snap, dir, err)
	}
	t.update(func() { v.snaps[dir] = snapMount{snapshot: snap, mnt: m} })
	t.log.Info("snapshot mounted", "volume", vol, "snapshot", snap, "dir", dir)
	return nil
}

func (t *mountTable) bindLive(ctx context.Context, st *backend.Store, vol, dir string, v *volState, atime string) error {
	src, err := t.mountLive(ctx, st, vol, v)
	if err != nil {
		return err
	}
	if a, err := fs.ParseAtime(atime); err == nil && atime != "" {
		v.mnt.SetAtime(a)
	}
	if err := t.sys.Bind(src, dir); err != nil {
		err = fmt.Errorf("bind %s on %s: %w", src, dir, err)
		if rerr := t.releaseLive(ctx, vol, v); rerr != nil {
			t.log.Warn("release after failed bind", "volume", vol, "err", rerr)
		}
		return err
	}
	t.update(func() { v.binds[dir] = true })
	t.log.Info("volume mounted", "volume", vol, "dir", dir)
	return nil
}

// errNotVolctlMount: the directory holds no volctl mount of this daemon.
var errNotVolctlMount = errors.New("not a volctl mount")

// unmountAt undoes the volctl mount on dir (a clean path without symlinks). A directory this
// daemon did not mount is errNotVolctlMount, unless it holds a dead mount of an earlier daemon,
// which is detached.
func (t *mountTable) unmountAt(ctx context.Context, dir string) error {
	t.reconcile(ctx)
	t.mu.Lock()
	vol, ok := t.dirs[dir]
	t.mu.Unlock()
	if !ok {
		if dead, err := t.detachDead(dir); dead || err != nil {
			return err
		}
		return errNotVolctlMount
	}
	v := t.lock(vol)
	defer t.unlock(vol, v)
	if s, ok := v.snaps[dir]; ok {
		if err := s.mnt.Unmount(ctx); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		t.update(func() { delete(v.snaps, dir); delete(t.dirs, dir) })
		return nil
	}
	if !v.binds[dir] {
		// Raced with a forced volume removal that already dropped it.
		return errNotVolctlMount
	}
	if err := t.unmountBind(dir); err != nil {
		return err
	}
	t.update(func() { delete(v.binds, dir); delete(t.dirs, dir) })
	return t.releaseLive(ctx, vol, v)
}

// unmountBind removes a bind mount, detaching it lazily when it is busy: the FUSE mount behind
// it keeps serving whoever still has files open.
func (t *mountTable) unmountBind(dir string) error {
	err := t.sys.Unmount(dir, false)
	if errors.Is(err, unix.EBUSY) {
		err = t.sys.Unmount(dir, true)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// dropAll unmounts every mount of a volume and forgets its references. The caller holds the
// volume's lock.
func (t *mountTable) dropAll(ctx context.Context, name string, v *volState) error {
	for dir, s := range v.snaps {
		if err := s.mnt.Unmount(ctx); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		t.update(func() { delete(v.snaps, dir); delete(t.dirs, dir) })
	}
	for dir := range v.binds {
		if err := t.unmountBind(dir); err != nil {
			return err
		}
		t.update(func() { delete(v.binds, dir); delete(t.dirs, dir) })
	}
	t.update(func() { clear(v.refs) })
	return t.releaseLive(ctx, name, v)
}

// list is every volctl mount, sorted by directory.
func (t *mountTable) list(ctx context.Context) []api.Mount {
	t.reconcile(ctx)
	t.mu.Lock()
	out := []api.Mount{}
	for dir, vol := range t.dirs {
		v := t.vols[vol]
		if v == nil {
			continue
		}
		if s, ok := v.snaps[dir]; ok {
			out = append(out, api.Mount{Source: vol + "@" + s.snapshot, Volume: vol, Snapshot: s.snapshot, Dir: dir, ReadOnly: true})
		} else if v.binds[dir] {
			out = append(out, api.Mount{Source: vol, Volume: vol, Dir: dir})
		}
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out
}

// A volctl mount can be removed behind the daemon's back: `umount DIR` (as mount(8)'s helper,
// mount.fuse.fusevol, invites) is the kernel's alone. Until the table notices, it would refuse
// the next mount on DIR and keep the volume's live mount referenced, so every operation on
// volctl mounts first forgets the ones the mount table no longer shows.

// reconcile forgets the volctl mounts whose directory no longer holds a fusevol mount, releasing
// the live mount's reference of a bind and stopping the server of a snapshot mount. Failures are
// logged: the caller's own operation reports what matters to it.
func (t *mountTable) reconcile(ctx context.Context) {
	table, err := t.sys.Mounts()
	if err != nil {
		t.log.Warn("cannot read the mount table; volctl mounts not reconciled", "err", err)
		return
	}
	t.mu.Lock()
	var gone []string
	for dir := range t.dirs {
		if !fusevolMountOn(table, dir) {
			gone = append(gone, dir)
		}
	}
	t.mu.Unlock()
	for _, dir := range gone {
		if err := t.forgetGone(ctx, dir); err != nil {
			t.log.Warn("reconciling a volctl mount removed outside the daemon", "dir", dir, "err", err)
		}
	}
}

// forgetGone forgets the volctl mount on dir if, checked again under its volume's lock, the
// mount table still does not show it (a mount made meanwhile stays).
func (t *mountTable) forgetGone(ctx context.Context, dir string) error {
	t.mu.Lock()
	vol, ok := t.dirs[dir]
	t.mu.Unlock()
	if !ok {
		return nil
	}
	v := t.lock(vol)
	defer t.unlock(vol, v)
	table, err := t.sys.Mounts()
	if err != nil || fusevolMountOn(table, dir) {
		return err
	}
	if s, ok := v.snaps[dir]; ok {
		t.update(func() { delete(v.snaps, dir); delete(t.dirs, dir) })
		t.log.Info("snapshot mount removed outside the daemon; forgotten", "volume", vol, "snapshot", s.snapshot, "dir", dir)
		// Its server stops once the kernel drops the connection; Unmount waits for that.
		return s.mnt.Unmount(ctx)
	}
	if !v.binds[dir] {
		return nil
	}
	t.update(func() { delete(v.binds, dir); delete(t.dirs, dir) })
	t.log.Info("volume mount removed outside the daemon; forgotten", "volume", vol, "dir", dir)
	return t.releaseLive(ctx, vol, v)
}

// fusevolMountOn reports whether table holds a fusevol mount on dir, stacked under others or not.
func fusevolMountOn(table mountinfo.Table, dir string) bool {
	for _, e := range table {
		if e.Dir == dir && e.FSType == "fuse.fusevol" {
			return true
		}
	}
	return false
}
