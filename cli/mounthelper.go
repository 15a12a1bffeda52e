package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/fusevol/fusevol/plugin"
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
}

// mountHelper runs the helper with args (after the program name) and returns its exit status.
func mountHelper(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	req, err := parseHelperArgs(args, os.Getenv("FUSEVOL_SOCKET"))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\nUsage: mount -t fuse.fusevol VOLUME[@SNAPSHOT] DIR [-o OPTIONS]\n", mountHelperName, err)
		return helperUsage
	}
	if req.fake {
		return 0
	}
	m, err := client.New(req.socket).Mount(ctx, req.source, req.dir)
	if err != nil {
		msg := oneLine(err.Error())
		if errors.Is(err, client.ErrUnreachable) {
			msg += " (is the daemon running? the socket is -o socket=PATH, else $FUSEVOL_SOCKET, else " + plugin.DefaultSocket + ")"
		}
		fmt.Fprintf(stderr, "%s: mount %s on %s: %s\n", mountHelperName, req.source, req.dir, msg)
		return helperFailed
	}
	if req.verbose {
		fmt.Fprintf(stdout, "%s: mounted %s on %s\n", mountHelperName, m.Source, m.Dir)
	}
	return 0
}

// parseHelperArgs parses SPEC DIR and the flags mount(8) passes, in any order after them.
func parseHelperArgs(args []string, envSocket string) (helperRequest, error) {
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
	return req, applyMountOptions(&req, strings.Join(opts, ","), sloppy)
}

// genericOptions are mount(8)'s own options, which say nothing to the daemon, and the FUSE
// options the daemon always sets.
var genericOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "_netdev": true, "nofail": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"exec": true, "noexec": true, "suid": true, "nosuid": true, "dev": true, "nodev": true,
	"atime": true, "noatime": true, "relatime": true, "async": true,
	"allow_other": true, "default_permissions": true,
}

// applyMountOptions checks the comma-separated options and applies socket=PATH. A snapshot is
// read-only whatever they say; a live volume mounts read-write only (a read-only view of it is a
// snapshot), so ro on one is an error rather than a silently writable mount.
func applyMountOptions(req *helperRequest, opts string, sloppy bool) error {
	snapshot := strings.Contains(req.source, "@")
	var unknown []string
	for _, o := range strings.Split(opts, ",") {
		name, value, _ := strings.Cut(o, "=")
		switch {
		case o == "" || genericOptions[o] || strings.HasPrefix(o, "x-"):
		case name == "socket" && value != "":
			req.socket = value
		case o == "ro" && !snapshot:
			return fmt.Errorf("option ro: a live volume mounts read-write only; mount a snapshot (%s@SNAPSHOT) for a read-only view", req.source)
		case o == "ro" || o == "rw": // mount(8) passes rw unless told ro: a snapshot ignores it
		default:
			unknown = append(unknown, o)
		}
	}
	if len(unknown) > 0 && !sloppy {
		return fmt.Errorf("unsupported mount option(s) %s (fusevol takes socket=PATH, ro for a snapshot, and mount(8)'s generic options)",
			strings.Join(unknown, ","))
	}
	return nil
}
