package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stale-mount recovery and shutdown of the mount table. Mount references live in memory only:
// a restarted daemon starts with none, removes the dead mounts its predecessor left under the
// root, and treats a Docker unmount of an unknown ID as done.

// cleanStale lazily detaches every mount under the root. Run before the store opens, when this
// process holds no mount yet, so anything found there was left by a daemon that died (its FUSE
// connection is gone and the path answers ENOTCONN).
func (t *mountTable) cleanStale(keep map[string]bool) {
	table, err := t.sys.Mounts()
	if err != nil {
		t.log.Warn("cannot read the mount table; stale mounts not cleaned", "err", err)
		return
	}
	for _, m := range table.Under(t.root) {
		if keep[m] {
			continue // a live mount the fd keeper held across the restart
		}
		statErr := t.sys.Statfs(m)
		if err := t.sys.Unmount(m, true); err != nil && !errors.Is(err, unix.EINVAL) {
			t.log.Warn("stale mount not removed", "dir", m, "err", err)
			continue
		}
		t.log.Info("stale mount removed", "dir", m, "statfs", errString(statErr))
		os.Remove(m)
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// detachStale detaches whatever is mounted on volume name's live mount directory dir. Nothing of
// ours is mounted there (the caller holds the volume's lock and it has no live mount), so
// whatever is (a dead mount not cleaned at start, a detached mount's leftovers) is stale.
func (t *mountTable) detachStale(name, dir string) error {
	if mounted, err := t.isMounted(dir); err != nil || !mounted {
		return nil
	}
	t.log.Warn("detaching a stale mount before mounting", "volume", name, "dir", dir)
	if err := t.sys.Unmount(dir, true); err != nil {
		return fmt.Errorf("volume %s: detach stale mount at %s: %w", name, dir, err)
	}
	return nil
}

// detachDead detaches dir when it holds a fusevol mount whose server is gone (statfs answers
// ENOTCONN): a volctl mount made by a daemon that died. It reports whether it did.
func (t *mountTable) detachDead(dir string) (bool, error) {
	table, err := t.sys.Mounts()
	if err != nil {
		return false, err
	}
	if e, _ := table.Find(dir); e.FSType != "fuse.fusevol" {
		t.log.Debug("not a fusevol mount", "dir", dir)
		return false, nil
	}
	if err := t.sys.Statfs(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.log.Debug("fusevol mount still answers", "dir", dir, "statfs", errString(err))
		return false, nil
	}
	if err := t.sys.Unmount(dir, true); err != nil {
		return false, fmt.Errorf("detach dead mount %s: %w", dir, err)
	}
	t.log.Info("dead mount of an earlier daemon detached", "dir", dir)
	return true, nil
}

// isMounted reports whether dir is a mount point in this mount namespace.
func (t *mountTable) isMounted(dir string) (bool, error) {
	table, err := t.sys.Mounts()
	if err != nil {
		return false, err
	}
	_, ok := table.Find(dir)
	return ok, nil
}

// unmountAll flushes every mount, then unmounts them all, within ctx. Flushing comes first and
// for every volume, so data is committed even when a mount still busy in a container's mount
// namespace makes its unmount wait. A volume whose lock is still held by a stuck request past
// the deadline is handled anyway: the process is about to exit.
func (t *mountTable) unmountAll(ctx context.Context) {
	all := t.flushForShutdown(ctx)
	// Everything is committed now; a busy mount's unmount is only waited on briefly.
	uctx, cancel := context.WithTimeout(ctx, busyUnmountWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, h := range all {
		for dir, s := range h.v.snaps {
			wg.Go(func() { t.unmountWithin(uctx, dir, s.mnt) })
		}
		for dir := range h.v.binds {
			if err := t.unmountBind(dir); err != nil {
				t.log.Error("unmount at shutdown", "dir", dir, "err", err)
			}
		}
		if m := h.v.mnt; m != nil {
			wg.Go(func() { t.unmountWithin(uctx, m.Dir(), m) })
		}
	}
	wg.Wait()
	for _, h := range all {
		t.update(func() {
			h.v.mnt = nil
			clear(h.v.refs)
			clear(h.v.binds)
			clear(h.v.snaps)
		})
		if h.locked {
			h.v.mu.Unlock()
		}
	}
}

// heldVolume is a volume taken over for shutdown; locked says whether its lock was obtained.
type heldVolume struct {
	v      *volState
	locked bool
}

// flushForShutdown takes every volume's lock (waiting until ctx ends at most) and flushes its
// live mount.
func (t *mountTable) flushForShutdown(ctx context.Context) []heldVolume {
	var all []heldVolume
	for _, name := range t.names() {
		t.mu.Lock()
		v := t.vols[name]
		t.mu.Unlock()
		if v == nil {
			continue
		}
		all = append(all, heldVolume{v: v, locked: lockBefore(ctx, v)})
		if v.mnt != nil {
			if err := v.mnt.Flush(ctx); err != nil {
				t.log.Error("flush at shutdown", "volume", name, "err", err)
			}
		}
	}
	return all
}

// unmountWithin unmounts m, giving up when ctx ends: a mount still held in another mount
// namespace (a running container) keeps its server busy until that namespace lets go.
func (t *mountTable) unmountWithin(ctx context.Context, dir string, m fsMount) {
	done := make(chan error, 1)
	go func() { done <- m.Unmount(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.log.Error("unmount at shutdown", "dir", dir, "err", err)
		}
	case <-ctx.Done():
		t.log.Warn("mount still in use at shutdown; leaving it detached", "dir", dir)
	}
}

// lockBefore takes v's lock unless ctx ends first.
func lockBefore(ctx context.Context, v *volState) bool {
	for !v.mu.TryLock() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}
