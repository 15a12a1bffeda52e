package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// listenSocket creates the unix socket with mode 0660 and group gid (-1 = leave as is). A stale
// socket file is replaced, but a socket another process still answers on is an error.
func listenSocket(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another daemon is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := setSocketPerm(path, gid); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func setSocketPerm(path string, gid int) error {
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			return fmt.Errorf("socket %s: set group %d: %w", path, gid, err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("socket %s: chmod: %w", path, err)
	}
	return nil
}

// lookupGroup resolves --group (a name or a numeric gid); "" gives -1 (root only).
func lookupGroup(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}

// peer is the process at the other end of a connection, from SO_PEERCRED.
type peer struct {
	pid      int32
	uid, gid uint32
	known    bool
}

type peerKey struct{}

// withPeer records the connecting process's credentials in the connection's context.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, peer{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid, known: true})
}

// Who may use what. The socket's mode (0660, group --group) is the first gate; these checks
// hold even when it is loosened (checkPeer applies them to every request):
//   - the control API: root and members of --group (allowed);
//   - Docker's protocol, Plugin.Activate and any other path: root only (rootOnly). dockerd runs
//     as root, and its Mount and Unmount act on the mounts running containers use.

// peerOf is the process that sent the request, from SO_PEERCRED.
func peerOf(ctx context.Context) (peer, error) {
	p, _ := ctx.Value(peerKey{}).(peer)
	if !p.known {
		return p, errors.New("cannot identify the calling process (SO_PEERCRED)")
	}
	return p, nil
}

// rootOnly refuses every peer but root.
func rootOnly(ctx context.Context) error {
	p, err := peerOf(ctx)
	if err != nil {
		return err
	}
	if p.uid != 0 {
		return fmt.Errorf("uid %d is not root (Docker's protocol serves only root)", p.uid)
	}
	return nil
}

// allowed reports whether the peer may use the control API: root, or a member of the socket's
// group (primary or supplementary).
func (d *Daemon) allowed(ctx context.Context) error {
	p, err := peerOf(ctx)
	if err != nil {
		return err
	}
	if p.uid == 0 {
		return nil
	}
	if d.gid >= 0 {
		if p.gid == uint32(d.gid) {
			return nil
		}
		if groups, err := supplementaryGroups(p.pid); err == nil && slices.Contains(groups, d.gid) {
			return nil
		}
		return fmt.Errorf("uid %d is neither root nor in the socket's group (gid %d)", p.uid, d.gid)
	}
	return fmt.Errorf("uid %d is not root (the daemon runs without --group)", p.uid)
}

// supplementaryGroups reads the "Groups:" line of /proc/PID/status.
func supplementaryGroups(pid int32) ([]int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []int
		for _, s := range strings.Fields(rest) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no Groups line in /proc/%d/status", pid)
}
