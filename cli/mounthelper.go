package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/mountinfo"
	"github.com/fusevol/fusevol/plugin"
	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// volctl as mount(8)'s helper. `mount -t fuse.fusevol VOLUME[@SNAPSHOT] DIR -o OPTS` (or an
// fstab line of that type) runs /sbin/mount.fuse.fusevol, a symlink to volctl, as
//
//	mount.fuse.fusevol SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t fuse.fusevol]
//
// (util-linux's helper convention), and the helper asks the running daemon for the same mount
// `volctl mount` makes. Unmounting is plain `umount DIR`: the daemon notices the mount is gone.
// Exit status follows mount(8): 1 for a bad command line, 32 when the mount failed.

// mountHelperName is the name mount(8) runs the helper under.
const mountHelperName = "mount.fuse.fusevol"

const (
	helperUsage  = 1
	helperFailed = 32
)

// mountHelperArgs reports whether args (args[0] the program name) run volctl as the mount helper,
// by name or as `volctl mount-helper` (for tests and by hand), and returns the helper's arguments.
func mountHelperArgs(args []string) ([]string, bool) {
	if len(args) > 0 && filepath.Base(args[0]) == mountHelperName {
		return args[1:], true
	}
	if len(args) > 1 && args[1] == "mount-helper" {
		return args[2:], true
	}
	return nil, false
}

// helperRequest is a parsed helper command line.
type helperRequest struct {
	source  string // VOLUME or VOLUME@SNAPSHOT
	dir     string
	socket  string
	fake    bool // -f: check everything, mount nothing
	verbose bool
	flags   uintptr // per-mount flags (MS_RDONLY, MS_NOEXEC, ...)
	remount bool    // -o remount: change the flags of an existing mount
}

// mountHelper runs the helper with args (after the program name) and returns its exit status.
func mountHelper(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	req, err := parseHelperArgs(args, os.Getenv("FUSEVOL_SOCKET"), baseFlags(os.Geteuid()))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\nUsage: mount -t fuse.fusevol VOLUME[@SNAPSHOT] DIR [-o OPTIONS]\n", mountHelperName, err)
		return helperUsage
	}
	if req.fake {
		return 0
	}
	if req.remount {
		// mount -o remount changes the flags of a mount made before; the daemon has no part.
		if err := setFlags(req); err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", mountHelperName, err)
			return helperFailed
		}
		return 0
	}
	c := client.New(req.socket)
	m, err := c.MountWith(ctx, api.MountRequest{Source: req.source, Dir: req.dir, Atime: helperAtime(req.flags)})
	if err != nil {
		msg := oneLine(err.Error())
		if errors.Is(err, client.ErrUnreachable) {
			msg += " (is the daemon running? the socket is -o socket=PATH, else $FUSEVOL_SOCKET, else " + plugin.DefaultSocket + ")"
		}
		fmt.Fprintf(stderr, "%s: mount %s on %s: %s\n", mountHelperName, req.source, req.dir, msg)
		return helperFailed
	}
	err = visible(req.dir)
	if err == nil {
		err = setFlags(req)
	}
	if err != nil {
		if uerr := c.Unmount(ctx, req.dir); uerr != nil {
			err = errors.Join(err, uerr)
		}
		fmt.Fprintf(stderr, "%s: mount %s on %s: %s\n", mountHelperName, req.source, req.dir, oneLine(err.Error()))
		return helperFailed
	}
	if req.verbose {
		fmt.Fprintf(stdout, "%s: mounted %s on %s\n", mountHelperName, m.Source, m.Dir)
	}
	return 0
}

// parseHelperArgs parses SPEC DIR and the flags mount(8) passes, in any order after them; the
// per-mount flags start from base.
func parseHelperArgs(args []string, envSocket string, base uintptr) (helperRequest, error) {
	req := helperRequest{socket: plugin.DefaultSocket}
	if envSocket != "" {
		req.socket = envSocket
	}
	var pos []string
	var opts []string
	sloppy := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 == len(args) {
				return req, fmt.Errorf("option %s needs a value", a)
			}
			i++
			switch a {
			case "-o":
				opts = append(opts, args[i])
			case "-t":
				if t := args[i]; t != "fuse.fusevol" && t != "fusevol" {
					return req, fmt.Errorf("type %q: this helper mounts fuse.fusevol only", t)
				}
			case "-N":
				return req, errors.New("-N: the daemon mounts in its own mount namespace; run mount there")
			}
		case len(a) > 1 && a[0] == '-' && strings.Trim(a[1:], "sfnv") == "":
			sloppy = sloppy || strings.Contains(a, "s")
			req.fake = req.fake || strings.Contains(a, "f")
			req.verbose = req.verbose || strings.Contains(a, "v")
		case strings.HasPrefix(a, "-"):
			return req, fmt.Errorf("unknown option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return req, fmt.Errorf("need VOLUME[@SNAPSHOT] and DIR, got %d arguments", len(pos))
	}
	// The mount table shows a volume as fusevol:NAME; accepting that spelling lets what
	// findmnt prints be mounted again.
	req.source = strings.TrimPrefix(pos[0], "fusevol:")
	dir, err := filepath.Abs(pos[1])
	if err != nil {
		return req, err
	}
	req.dir = dir
	return req, applyMountOptions(&req, strings.Join(opts, ","), base, sloppy)
}

// genericOptions are mount(8)'s own options, which say nothing to the helper, and the FUSE
// options the daemon always sets.
var genericOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "_netdev": true, "nofail": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true, "async": true,
	"allow_other": true, "default_permissions": true,
}

// fuseShown are the FUSE options the mount table shows for the daemon's mounts: mount -o
// remount passes them back, and they stay as they are.
var fuseShown = map[string]bool{"user_id": true, "group_id": true, "max_read": true, "blksize": true}

// mountFlags are the per-mount flags the helper applies to the mount the daemon made (a
// remount of that mount alone: a live volume's other mounts keep theirs): set or clear bits.
var mountFlags = map[string]struct{ set, clear uintptr }{
	"ro": {set: unix.MS_RDONLY}, "rw": {clear: unix.MS_RDONLY},
	"nosuid": {set: unix.MS_NOSUID}, "suid": {clear: unix.MS_NOSUID},
	"nodev": {set: unix.MS_NODEV}, "dev": {clear: unix.MS_NODEV},
	"noexec": {set: unix.MS_NOEXEC}, "exec": {clear: unix.MS_NOEXEC},
	"noatime": {set: unix.MS_NOATIME, clear: atimeFlags}, "atime": {clear: unix.MS_NOATIME},
	"relatime": {set: unix.MS_RELATIME, clear: atimeFlags}, "norelatime": {clear: unix.MS_RELATIME},
	"strictatime": {set: unix.MS_STRICTATIME, clear: atimeFlags}, "nostrictatime": {clear: unix.MS_STRICTATIME},
	"nodiratime": {set: unix.MS_NODIRATIME}, "diratime": {clear: unix.MS_NODIRATIME},
}

const atimeFlags = unix.MS_NOATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// helperAtime is the atime mode the daemon is to serve a mount with these flags in: the kernel
// leaves atime to FUSE servers, which cannot tell which mount a read came through, so the
// daemon is told. A read-only mount updates no atime. (A later mount -o remount changes the
// flags alone.)
func helperAtime(flags uintptr) string {
	switch {
	case flags&(unix.MS_RDONLY|unix.MS_NOATIME) != 0:
		return "noatime"
	case flags&unix.MS_STRICTATIME != 0:
		return "strictatime"
	}
	return "relatime"
}

// daemonFlags are the per-mount flags of the daemon's mounts (fs.Mount's, and a bind's copy).
const daemonFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RELATIME

// baseFlags are the per-mount flags before the options. For root they are mount(8)'s: what is
// not asked for is not set (mount(8) passes no dev, suid or exec, only their absence), so a
// helper mount allows device nodes and setuid unless -o nodev,nosuid, as any filesystem root
// mounts. Anyone else cannot change a mount's flags and keeps the daemon's.
func baseFlags(euid int) uintptr {
	if euid == 0 {
		return unix.MS_RELATIME
	}
	return daemonFlags
}

// applyMountOptions checks the comma-separated options, applies socket=PATH and works out the
// per-mount flags from base. A snapshot is read-only whatever they say; ro on a live volume is
// a read-only mount of it there (the volume stays writable through its other mounts).
func applyMountOptions(req *helperRequest, opts string, base uintptr, sloppy bool) error {
	req.flags = base
	var unknown, shown []string
	for _, o := range strings.Split(opts, ",") {
		name, value, _ := strings.Cut(o, "=")
		f, isFlag := mountFlags[o]
		switch {
		case o == "" || genericOptions[o] || strings.HasPrefix(o, "x-"):
		case isFlag:
			req.flags = req.flags&^f.clear | f.set
		case o == "remount":
			req.remount = true
		case name == "socket" && value != "":
			req.socket = value
		case fuseShown[name]:
			shown = append(shown, o)
		default:
			unknown = append(unknown, o)
		}
	}
	if !req.remount {
		unknown = append(shown, unknown...)
	}
	if len(unknown) > 0 && !sloppy {
		return fmt.Errorf("unsupported mount option(s) %s (fusevol takes socket=PATH, mount(8)'s generic options and per-mount flags)",
			strings.Join(unknown, ","))
	}
	return nil
}

// visible checks that the daemon's mount on dir shows in this mount namespace: a daemon in a
// namespace of its own (a managed plugin, a unit with PrivateMounts) mounts where no one here
// would see it.
func visible(dir string) error {
	table, err := mountinfo.Read()
	if err != nil {
		return err
	}
	if e, ok := table.Find(dir); !ok || e.FSType != "fuse.fusevol" {
		return fmt.Errorf("the daemon mounted %s in its own mount namespace, not visible here", dir)
	}
	return nil
}

// setFlags gives the mount on dir the per-mount flags req asks for, unless they are the
// daemon's already.
func setFlags(req helperRequest) error {
	if req.flags == daemonFlags && !req.remount {
		return nil
	}
	if err := unix.Mount("", req.dir, "", unix.MS_REMOUNT|unix.MS_BIND|req.flags, ""); err != nil {
		return fmt.Errorf("set mount flags on %s: %w", req.dir, err)
	}
	return nil
}
