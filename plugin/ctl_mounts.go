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

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

// The control API's volctl mount endpoints; the bookkeeping is the mount table's (mounts.go).

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
	if err := d.mounts.mountAt(ctx, st, vol, snap, dir); err != nil {
		return nil, err
	}
	return api.Mount{Source: req.Source, Volume: vol, Snapshot: snap, Dir: dir, ReadOnly: snap != ""}, nil
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
	err = d.mounts.unmountAt(ctx, dir)
	if errors.Is(err, errNotVolctlMount) {
		return nil, api.Errorf(api.CodeNotFound, "%s is not a volctl mount", dir)
	}
	if err != nil {
		return nil, err
	}
	return noContent{}, nil
}

func (d *Daemon) ctlMountList(ctx context.Context, r *http.Request) (any, error) {
	return d.mounts.list(), nil
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
