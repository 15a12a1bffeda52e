package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
	"github.com/fusevol/fusevol/fs/mountinfo"
	"github.com/fusevol/fusevol/plugin/api"
)

// The control API's volctl mount endpoints; the bookkeeping is the mount table's (mounts.go).

func (d *Daemon) ctlMount(ctx context.Context, r *http.Request) (any, error) {
	req, err := body[api.MountRequest](r)
	if err != nil {
		return nil, err
	}
	vol, snap, _ := strings.Cut(req.Source, "@")
	caller, err := peerOf(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := d.checkMountTarget(req.Dir, caller.uid)
	if err != nil {
		return nil, err
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
	if _, err := fs.ParseAtime(req.Atime); err != nil {
		return nil, invalid("%v", err)
	}
	if err := d.mounts.mountAt(ctx, st, vol, snap, dir, req.Atime); err != nil {
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
	return d.mounts.list(ctx), nil
}

// volctl mount targets. The daemon mounts as root for callers that may not be: a member of
// --group must not get a mount where it could not make one itself. So a target is
//   - resolved first (symlinks and ".."), and every check is on the resolved path;
//   - never a system directory or one of the daemon's own (reservedDir), for root too;
//   - owned by the caller, unless the caller is root;
//   - not a mount point already.
// Owner, type and mount point are read from the directory opened without following symlinks
// (openNoSymlinks), and the bind mount goes through such an open again (sysMounter.Bind): a
// symlink swapped in after the check makes the mount fail instead of landing elsewhere.

// checkMountTarget checks dir as a volctl mount target for the caller uid and returns it resolved.
func (d *Daemon) checkMountTarget(dir string, uid uint32) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", invalid("mount directory %q: must be an absolute path", dir)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", invalid("mount directory %s: %v", dir, err)
	}
	name := dir
	if real != filepath.Clean(dir) {
		name = fmt.Sprintf("%s (resolved: %s)", dir, real)
	}
	if why := d.reservedDir(real); why != "" {
		return "", api.Errorf(api.CodeForbidden, "mount directory %s: %s", name, why)
	}
	fd, err := openNoSymlinks(real)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) {
		return "", invalid("mount directory %s: changed while it was checked; try again", name)
	}
	if err != nil {
		return "", invalid("mount directory %s: %v", name, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("mount directory %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", invalid("mount directory %s: not a directory", name)
	}
	if uid != 0 && st.Uid != uid {
		return "", api.Errorf(api.CodeForbidden, "mount directory %s: owned by uid %d, not by the caller (uid %d); "+
			"only root may mount on a directory it does not own", name, st.Uid, uid)
	}
	if fstype, ok := mountPoint(fd, real); ok {
		return "", invalid("mount directory %s: already a mount point (%s); unmount it first", name, fstype)
	}
	return real, nil
}

// mountPoint reports whether the directory open as fd, at path, is a mount point, and the type
// of what is mounted there: by the mount table (fs/mountinfo) or by statx on the descriptor.
func mountPoint(fd int, path string) (string, bool) {
	if table, err := mountinfo.Read(); err == nil {
		if e, ok := table.Find(path); ok {
			return e.FSType, true
		}
	}
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &stx)
	if err == nil && stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return "unknown type", true
	}
	return "", false
}

// systemTrees are refused as mount targets with everything below them: the system's programs,
// libraries, configuration and kernel interfaces, and Docker's state. Top-level directories
// named lib* (lib32, lib64, libx32, ...) are refused with them.
var systemTrees = []string{"/bin", "/boot", "/dev", "/etc", "/proc", "/sbin", "/sys", "/usr",
	"/run/docker", "/var/lib/docker"}

// systemDirs are refused as mount targets themselves; what is below them may be anyone's.
var systemDirs = []string{"/", "/home", "/media", "/opt", "/root", "/run", "/run/user", "/srv", "/tmp",
	"/var", "/var/cache", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/tmp"}

// reservedDir says why the resolved path dir may not be mounted on ("" when it may): a system
// directory, or one holding the daemon's own files: its root and mount root and what is below
// them, its socket's directory, and any directory above those, which would hide them.
func (d *Daemon) reservedDir(dir string) string {
	for _, s := range systemTrees {
		if within(dir, s) {
			return fmt.Sprintf("%s is a system directory; fusevol never mounts on it or below it", s)
		}
	}
	if top, _, _ := strings.Cut(strings.TrimPrefix(dir, "/"), "/"); strings.HasPrefix(top, "lib") {
		return fmt.Sprintf("/%s is a system directory; fusevol never mounts on it or below it", top)
	}
	if slices.Contains(systemDirs, dir) {
		return "a system directory; fusevol never mounts on it"
	}
	for _, own := range []struct {
		what, path string
		below      bool // what lies below is the daemon's too
	}{
		{"root", d.cfg.Root, true}, {"mount root", d.cfg.MountRoot, true},
		{"socket directory", filepath.Dir(d.cfg.Socket), false},
	} {
		p := own.path
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if own.below && within(dir, p) || within(p, dir) {
			return fmt.Sprintf("holds the daemon's own files (its %s %s)", own.what, own.path)
		}
	}
	return ""
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

func sortVolumeUsage(v []api.VolumeUsage) {
	sort.Slice(v, func(i, j int) bool { return v[i].Name < v[j].Name })
}
