package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cleanStaleMounts lazily detaches every mount under MountRoot. Run before the store opens, when
// this process holds no mount yet, so anything found there was left by a daemon that died (its
// FUSE connection is gone and the path answers ENOTCONN).
func (d *Daemon) cleanStaleMounts() {
	mounts, err := mountsUnder(d.cfg.MountRoot)
	if err != nil {
		d.log.Warn("cannot read the mount table; stale mounts not cleaned", "err", err)
		return
	}
	for _, m := range mounts {
		var st unix.Statfs_t
		statErr := unix.Statfs(m, &st)
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			d.log.Warn("stale mount not removed", "dir", m, "err", err)
			continue
		}
		d.log.Info("stale mount removed", "dir", m, "statfs", errString(statErr))
		os.Remove(m)
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dir    string
	fstype string
}

// mountTable reads this process's mount table.
func mountTable() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		e := mountEntry{dir: unescapeMountPath(fields[4])}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				e.fstype = fields[i+1]
				break
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// mountsUnder returns the mount points strictly under root, deepest first.
func mountsUnder(root string) ([]string, error) {
	table, err := mountTable()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Clean(root) + "/"
	var out []string
	for _, e := range table {
		if strings.HasPrefix(e.dir, prefix) {
			out = append(out, e.dir)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// detachDead detaches dir when it holds a fusevol mount whose server is gone (statfs answers
// ENOTCONN): a volctl mount made by a daemon that died. It reports whether it did.
func (d *Daemon) detachDead(dir string) (bool, error) {
	table, err := mountTable()
	if err != nil {
		return false, err
	}
	fusevol := false
	for _, e := range table {
		if e.dir == dir {
			fusevol = e.fstype == "fuse.fusevol"
		}
	}
	if !fusevol {
		d.log.Debug("not a fusevol mount", "dir", dir)
		return false, nil
	}
	// statfs always reaches the server; stat may be answered from the kernel's attribute cache.
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); !errors.Is(err, syscall.ENOTCONN) {
		d.log.Debug("fusevol mount still answers", "dir", dir, "statfs", errString(err))
		return false, nil
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return false, fmt.Errorf("detach dead mount %s: %w", dir, err)
	}
	d.log.Info("dead mount of an earlier daemon detached", "dir", dir)
	return true, nil
}

// isMounted reports whether dir is a mount point in this mount namespace.
func isMounted(dir string) (bool, error) {
	m, err := mountsUnder(filepath.Dir(dir))
	if err != nil {
		return false, err
	}
	for _, p := range m {
		if p == dir {
			return true, nil
		}
	}
	return false, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return len(s) == 3
}

// unmountAll flushes every mount, then unmounts them all, within ctx. Flushing comes first and
// for every volume, so data is committed even when a mount still busy in a container's mount
// namespace makes its unmount wait. A volume whose lock is still held by a stuck request past
// the deadline is handled anyway: the process is about to exit.
func (d *Daemon) unmountAll(ctx context.Context) {
	all := d.flushForShutdown(ctx)
	// Everything is committed now; a busy mount's unmount is only waited on briefly.
	uctx, cancel := context.WithTimeout(ctx, busyUnmountWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, h := range all {
		for dir, s := range h.v.snaps {
			wg.Go(func() { d.unmountWithin(uctx, dir, s.mnt) })
		}
		for dir := range h.v.binds {
			if err := unmountBind(dir); err != nil {
				d.log.Error("unmount at shutdown", "dir", dir, "err", err)
			}
		}
		if m := h.v.mnt; m != nil {
			wg.Go(func() { d.unmountWithin(uctx, m.Dir(), m) })
		}
	}
	wg.Wait()
	for _, h := range all {
		d.update(func() {
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
func (d *Daemon) flushForShutdown(ctx context.Context) []heldVolume {
	var all []heldVolume
	for _, name := range d.volumeNames() {
		d.mu.Lock()
		v := d.vols[name]
		d.mu.Unlock()
		if v == nil {
			continue
		}
		all = append(all, heldVolume{v: v, locked: lockBefore(ctx, v)})
		if v.mnt != nil {
			if err := v.mnt.Flush(ctx); err != nil {
				d.log.Error("flush at shutdown", "volume", name, "err", err)
			}
		}
	}
	return all
}

// unmountWithin unmounts m, giving up when ctx ends: a mount still held in another mount
// namespace (a running container) keeps its server busy until that namespace lets go.
func (d *Daemon) unmountWithin(ctx context.Context, dir string, m fsMount) {
	done := make(chan error, 1)
	go func() { done <- m.Unmount(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			d.log.Error("unmount at shutdown", "dir", dir, "err", err)
		}
	case <-ctx.Done():
		d.log.Warn("mount still in use at shutdown; leaving it detached", "dir", dir)
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
