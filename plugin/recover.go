package plugin

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
		_, statErr := os.Stat(m)
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			d.log.Warn("stale mount not removed", "dir", m, "err", err)
			continue
		}
		d.log.Info("stale mount removed", "dir", m, "stat", errString(statErr))
		os.Remove(m)
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// mountsUnder returns the mount points strictly under root, deepest first.
func mountsUnder(root string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	prefix := filepath.Clean(root) + "/"
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if strings.HasPrefix(mp, prefix) {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
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

// unmountAll flushes and unmounts everything at shutdown. A volume whose lock is still held by a
// stuck request past the deadline is unmounted anyway: the process is about to exit.
func (d *Daemon) unmountAll(ctx context.Context) {
	for _, name := range d.volumeNames() {
		d.mu.Lock()
		v := d.vols[name]
		d.mu.Unlock()
		if v == nil {
			continue
		}
		locked := lockBefore(ctx, v)
		for dir, s := range v.snaps {
			if err := s.mnt.Unmount(ctx); err != nil {
				d.log.Error("unmount snapshot at shutdown", "dir", dir, "err", err)
			}
		}
		for dir := range v.binds {
			if err := unmountBind(dir); err != nil {
				d.log.Error("unmount at shutdown", "dir", dir, "err", err)
			}
		}
		if v.mnt != nil {
			if err := v.mnt.Flush(ctx); err != nil {
				d.log.Error("flush at shutdown", "volume", name, "err", err)
			}
			if err := v.mnt.Unmount(ctx); err != nil {
				d.log.Error("unmount at shutdown", "volume", name, "err", err)
			}
		}
		d.update(func() {
			v.mnt = nil
			clear(v.refs)
			clear(v.binds)
			clear(v.snaps)
		})
		if locked {
			v.mu.Unlock()
		}
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
