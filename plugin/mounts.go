package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

// volctl mounts: a volume's live state is bind-mounted from its one FUSE mount under MountRoot
// (so Docker and volctl never hold two caches of the same volume); a snapshot gets its own
// read-only FUSE mount on the directory.

func (d *Daemon) ctlMount(ctx context.Context, r *http.Request) (any, error) {
	req, err := body[api.MountRequest](r)
	if err != nil {
		return nil, err
	}
	vol, snap, _ := strings.Cut(req.Source, "@")
	dir, err := checkMountDir(req.Dir)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(dir+"/", d.cfg.MountRoot+"/") || strings.HasPrefix(d.cfg.MountRoot+"/", dir+"/") {
		return nil, invalid("mount directory %s overlaps the daemon's mount root %s", dir, d.cfg.MountRoot)
	}
	st, err := d.checkedStore(ctx, vol)
	if err != nil {
		return nil, err
	}
	if strings.Contains(req.Source, "@") {
		if err := backend.ValidateName(snap); err != nil {
			return nil, fmt.Errorf("snapshot name %q: %w", snap, err)
		}
	}
	v := d.lockVolume(vol)
	defer d.unlockVolume(vol, v)
	if !d.claimDir(dir, vol) {
		return nil, invalid("%s is already a volctl mount", dir)
	}
	out := api.Mount{Source: req.Source, Volume: vol, Snapshot: snap, Dir: dir, ReadOnly: snap != ""}
	if snap != "" {
		err = d.mountSnapshot(ctx, st, vol, snap, dir, v)
	} else {
		err = d.bindLive(ctx, st, vol, dir, v)
	}
	if err != nil {
		d.update(func() { delete(d.dirs, dir) })
		return nil, err
	}
	return out, nil
}

// claimDir reserves dir for a mount of vol; false when another volctl mount holds it.
func (d *Daemon) claimDir(dir, vol string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, taken := d.dirs[dir]; taken {
		return false
	}
	d.dirs[dir] = vol
	return true
}

func (d *Daemon) mountSnapshot(ctx context.Context, st *backend.Store, vol, snap, dir string, v *volState) error {
	view, err := st.OpenSnapshot(ctx, vol, snap)
	if err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", vol, snap, err)
	}
	m, err := d.mount(ctx, dir, view, d.log.With("volume", vol, "snapshot", snap))
	if err != nil {
		return fmt.Errorf("mount %s@%s on %s: %w", vol, snap, dir, err)
	}
	d.update(func() { v.snaps[dir] = snapMount{snapshot: snap, mnt: m} })
	d.log.Info("snapshot mounted", "volume", vol, "snapshot", snap, "dir", dir)
	return nil
}

func (d *Daemon) bindLive(ctx context.Context, st *backend.Store, vol, dir string, v *volState) error {
	src, err := d.mountLive(ctx, st, vol, v)
	if err != nil {
		return err
	}
	if err := unix.Mount(src, dir, "", unix.MS_BIND, ""); err != nil {
		err = fmt.Errorf("bind %s on %s: %w", src, dir, err)
		if rerr := d.releaseLive(ctx, vol, v); rerr != nil {
			d.log.Warn("release after failed bind", "volume", vol, "err", rerr)
		}
		return err
	}
	d.update(func() { v.binds[dir] = true })
	d.log.Info("volume mounted", "volume", vol, "dir", dir)
	return nil
}

func (d *Daemon) ctlUnmount(ctx context.Context, r *http.Request) (any, error) {
	req, err := body[api.UnmountRequest](r)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(req.Dir) {
		return nil, invalid("mount directory %q: must be an absolute path", req.Dir)
	}
	dir := filepath.Clean(req.Dir)
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	d.mu.Lock()
	vol, ok := d.dirs[dir]
	d.mu.Unlock()
	if !ok {
		if dead, err := d.detachDead(dir); dead || err != nil {
			return noContent{}, err
		}
		return nil, api.Errorf(api.CodeNotFound, "%s is not a volctl mount", dir)
	}
	v := d.lockVolume(vol)
	defer d.unlockVolume(vol, v)
	if s, ok := v.snaps[dir]; ok {
		if err := s.mnt.Unmount(ctx); err != nil {
			return nil, fmt.Errorf("unmount %s: %w", dir, err)
		}
		d.update(func() { delete(v.snaps, dir); delete(d.dirs, dir) })
		return noContent{}, nil
	}
	if !v.binds[dir] {
		// Raced with a forced volume removal that already dropped it.
		return nil, api.Errorf(api.CodeNotFound, "%s is not a volctl mount", dir)
	}
	if err := unmountBind(dir); err != nil {
		return nil, err
	}
	d.update(func() { delete(v.binds, dir); delete(d.dirs, dir) })
	if err := d.releaseLive(ctx, vol, v); err != nil {
		return nil, err
	}
	return noContent{}, nil
}

// unmountBind removes a bind mount, detaching it lazily when it is busy: the FUSE mount behind
// it keeps serving whoever still has files open.
func unmountBind(dir string) error {
	err := unix.Unmount(dir, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

func (d *Daemon) ctlMountList(ctx context.Context, r *http.Request) (any, error) {
	d.mu.Lock()
	out := []api.Mount{}
	for dir, vol := range d.dirs {
		v := d.vols[vol]
		if v == nil {
			continue
		}
		if s, ok := v.snaps[dir]; ok {
			out = append(out, api.Mount{Source: vol + "@" + s.snapshot, Volume: vol, Snapshot: s.snapshot, Dir: dir, ReadOnly: true})
		} else if v.binds[dir] {
			out = append(out, api.Mount{Source: vol, Volume: vol, Dir: dir})
		}
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, nil
}

// checkMountDir resolves a volctl mount target: an existing absolute directory.
func checkMountDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", invalid("mount directory %q: must be an absolute path", dir)
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(dir))
	if err != nil {
		return "", invalid("mount directory %s: %v", dir, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", invalid("mount directory %s: %v", dir, err)
	}
	if !fi.IsDir() {
		return "", invalid("mount directory %s: not a directory", dir)
	}
	return real, nil
}

func sortVolumeUsage(v []api.VolumeUsage) {
	sort.Slice(v, func(i, j int) bool { return v[i].Name < v[j].Name })
}
