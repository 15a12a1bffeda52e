package plugin

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/fs/mountinfo"
)

// The access tests attack the daemon as real non-root users (made with useradd for the test).
// The daemon runs in a private mount namespace (unshare -m --propagation private): a mount the
// checks fail to refuse lands there, never on the host, and the tests read that namespace's
// mount table to see whether it did.

// accessEnv is a `volctl daemon --group` in its own mount namespace, a member of the group and
// an outsider.
type accessEnv struct {
	t         *testing.T
	base      string // world-traversable scratch directory
	volctl    string
	sock      string
	root      string
	daemon    *fusetest.Process
	group     string
	member    testUser
	outsider  testUser
	memberDir string // owned by member: where member's mounts go
}

type testUser struct {
	name     string
	uid, gid int
}

func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	fusetest.Require(t)
	for _, tool := range []string{"useradd", "groupadd", "setpriv", "unshare", "nsenter", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			fusetest.Missing(t, "needs "+tool)
		}
	}
	base := fusetest.TempRoot(t, "fvacc-")
	e := &accessEnv{t: t, base: base, volctl: fusetest.BuildVolctl(t, base),
		root: filepath.Join(base, "daemon"), group: fmt.Sprintf("fvacc%d", os.Getpid())}
	e.sock = filepath.Join(e.root, "fusevol.sock")
	addGroup(t, e.group)
	e.member = addUser(t, e.group+"m", e.group)
	e.outsider = addUser(t, e.group+"o", "")
	e.memberDir = e.dir("member", e.member.uid)
	if err := os.MkdirAll(e.root, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", e.volctl, "daemon",
		"--root", e.root, "--socket", e.sock, "--group", e.group, "--log-level", "info")
	e.daemon = fusetest.StartProcess(t, cmd, filepath.Join(base, "daemon.log"))
	e.daemon.WaitReady(t, e.sock)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.daemon.LogTail())
		}
	})
	// Loosened so that only the daemon's own check stands between the outsider and the API.
	if err := os.Chmod(e.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	return e
}

// dir makes base/name owned by uid and returns its path.
func (e *accessEnv) dir(name string, uid int) string {
	e.t.Helper()
	p := filepath.Join(e.base, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chown(p, uid, uid); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// as runs argv as u (nil: root), with u's groups from the group database.
func (e *accessEnv) as(u *testUser, argv ...string) (string, error) {
	if u != nil {
		argv = append([]string{"setpriv", "--reuid", strconv.Itoa(u.uid), "--regid", strconv.Itoa(u.gid),
			"--init-groups", "--"}, argv...)
	}
	return fusetest.Output(time.Minute, nil, argv[0], argv[1:]...)
}

// volctlAs runs volctl against the daemon as u.
func (e *accessEnv) volctlAs(u *testUser, args ...string) (string, error) {
	return e.as(u, append([]string{e.volctl, "--socket", e.sock}, args...)...)
}

// dockerAs POSTs body to a Docker protocol endpoint as u and returns the HTTP status and body.
func (e *accessEnv) dockerAs(u *testUser, endpoint, body string) (int, string) {
	e.t.Helper()
	out, err := e.as(u, "curl", "-sS", "--unix-socket", e.sock, "-X", "POST", "-d", body,
		"-w", "\n%{http_code}", "http://plugin/"+endpoint)
	if err != nil {
		e.t.Fatalf("curl %s: %v\n%s", endpoint, err, out)
	}
	i := strings.LastIndexByte(out, '\n')
	status, err := strconv.Atoi(out[i+1:])
	if err != nil {
		e.t.Fatalf("curl %s: no status in %q", endpoint, out)
	}
	return status, out[:i]
}

// mountedInDaemon reports whether a fusevol volume is mounted on dir in the daemon's mount
// namespace.
func (e *accessEnv) mountedInDaemon(dir string) bool {
	e.t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", e.daemon.Cmd.Process.Pid))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || mountinfo.Unescape(fields[4]) != dir {
			continue
		}
		if i := slices.Index(fields, "-"); i > 0 && i+1 < len(fields) && fields[i+1] == "fuse.fusevol" {
			return true
		}
	}
	return false
}

// TestMountTargetChecks: volctl mount refuses, for a group member and for root alike, targets
// that would let the caller cover what is not theirs, and the refused mount never happens.
func TestMountTargetChecks(t *testing.T) {
	e := newAccessEnv(t)
	m := &e.member
	if out, err := e.volctlAs(m, "volume", "create", "mine"); err != nil {
		t.Fatalf("member creates a volume: %v\n%s", err, out)
	}
	if out, err := e.volctlAs(m, "snapshot", "create", "mine", "s"); err != nil {
		t.Fatalf("member snapshots it: %v\n%s", err, out)
	}
	rootDir := e.dir("rootdir", 0)
	otherDir := e.dir("other", e.outsider.uid)
	busy := filepath.Join(e.memberDir, "busy")
	link := filepath.Join(e.memberDir, "etc-link")
	for _, p := range []string{busy, filepath.Join(e.memberDir, "ok")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, m.uid, m.gid)
	}
	if err := os.Symlink("/etc", link); err != nil {
		t.Fatal(err)
	}
	os.Lchown(link, m.uid, m.gid)
	// Something mounted there already, in the daemon's namespace, owned by the member too.
	if out, err := e.as(nil, "nsenter", "-t", strconv.Itoa(e.daemon.Cmd.Process.Pid), "-m", "--",
		"mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=1m,uid=%d,gid=%d", m.uid, m.gid), "tmpfs", busy); err != nil {
		t.Fatalf("tmpfs on %s: %v\n%s", busy, err, out)
	}
	for _, tc := range []struct {
		name string
		as   *testUser
		src  string // "" = mine
		dir  string
		want string // "" = mounts
		at   string // where the mount would land
	}{
		{"member over /etc", m, "", "/etc", "system directory", "/etc"},
		{"member through a symlink to /etc", m, "", link, "system directory", "/etc"},
		{"member over root's directory", m, "", rootDir, "owned by uid 0", rootDir},
		{"member over another user's directory", m, "", otherDir, fmt.Sprintf("owned by uid %d", e.outsider.uid), otherDir},
		{"member over a mount point", m, "", busy, "already a mount point", busy},
		{"member over /", m, "", "/", "system directory", "/"},
		{"member's snapshot over /etc", m, "mine@s", "/etc", "system directory", "/etc"},
		{"member's snapshot through a symlink to /etc", m, "mine@s", link, "system directory", "/etc"},
		{"member's snapshot over root's directory", m, "mine@s", rootDir, "owned by uid 0", rootDir},
		{"root over /usr/lib", nil, "", "/usr/lib", "system directory", "/usr/lib"},
		{"root over /proc", nil, "", "/proc", "system directory", "/proc"},
		{"root over the store", nil, "", filepath.Join(e.root, "store"), "daemon's own", filepath.Join(e.root, "store")},
		{"root over the daemon's parent", nil, "", e.base, "daemon's own", e.base},
		{"member on its own directory", m, "", filepath.Join(e.memberDir, "ok"), "", filepath.Join(e.memberDir, "ok")},
		{"root on root's directory", nil, "", rootDir, "", rootDir},
		{"member's snapshot on its own directory", m, "mine@s", filepath.Join(e.memberDir, "ok"), "", filepath.Join(e.memberDir, "ok")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := cmp.Or(tc.src, "mine")
			out, err := e.volctlAs(tc.as, "mount", src, tc.dir)
			if tc.want == "" {
				if err != nil || !e.mountedInDaemon(tc.at) {
					t.Fatalf("mount on %s: %v\n%s; want mounted", tc.dir, err, out)
				}
				if out, err := e.volctlAs(tc.as, "unmount", tc.dir); err != nil {
					t.Fatalf("unmount %s: %v\n%s", tc.dir, err, out)
				}
				return
			}
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("mount on %s: %v\n%s\nwant refused: %s", tc.dir, err, out, tc.want)
			}
			if e.mountedInDaemon(tc.at) {
				t.Errorf("%s is mounted after the refused mount", tc.at)
			}
		})
	}
}

// TestDockerEndpointsRootOnly: with the socket's mode loosened, neither an outsider nor a member
// of --group may use Docker's protocol (it is dockerd's, and dockerd is root): they cannot
// create, mount or remove volumes, or see them. Root is served.
func TestDockerEndpointsRootOnly(t *testing.T) {
	e := newAccessEnv(t)
	if st, body := e.dockerAs(nil, "VolumeDriver.Create", `{"Name":"theirs"}`); st != 200 {
		t.Fatalf("root Create: %d %s", st, body)
	}
	for _, u := range []*testUser{&e.outsider, &e.member} {
		for _, c := range []struct{ endpoint, body string }{
			{"Plugin.Activate", ""},
			{"VolumeDriver.Capabilities", ""},
			{"VolumeDriver.List", "{}"},
			{"VolumeDriver.Get", `{"Name":"theirs"}`},
			{"VolumeDriver.Path", `{"Name":"theirs"}`},
			{"VolumeDriver.Create", `{"Name":"stolen"}`},
			{"VolumeDriver.Mount", `{"Name":"theirs","ID":"x"}`},
			{"VolumeDriver.Unmount", `{"Name":"theirs","ID":"x"}`},
			{"VolumeDriver.Remove", `{"Name":"theirs"}`},
			{"NoSuch.Endpoint", ""},
		} {
			st, body := e.dockerAs(u, c.endpoint, c.body)
			if st != 403 || !strings.Contains(body, "permission denied") {
				t.Errorf("%s %s: %d %s; want 403 permission denied", u.name, c.endpoint, st, body)
			}
		}
	}
	if e.mountedInDaemon(filepath.Join(e.root, "mounts", "theirs")) {
		t.Error("theirs was mounted by a refused Mount")
	}
	st, body := e.dockerAs(nil, "VolumeDriver.List", "{}")
	if st != 200 || !strings.Contains(body, `"theirs"`) || strings.Contains(body, "stolen") {
		t.Errorf("root List after the attempts: %d %s; want theirs only", st, body)
	}
	if st, body := e.dockerAs(nil, "VolumeDriver.Remove", `{"Name":"theirs"}`); st != 200 {
		t.Errorf("root Remove: %d %s", st, body)
	}
	// The control API still serves the group and refuses the outsider.
	if out, err := e.volctlAs(&e.member, "volume", "ls"); err != nil {
		t.Errorf("member volume ls: %v\n%s", err, out)
	}
	if out, err := e.volctlAs(&e.outsider, "volume", "ls"); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("outsider volume ls: %v\n%s; want permission denied", err, out)
	}
}

// addGroup creates group name for the test (replacing a leftover of an earlier run) and removes
// it at the end.
func addGroup(t *testing.T, name string) {
	t.Helper()
	userTool("groupdel", name)
	if out, err := userTool("groupadd", name); err != nil {
		t.Fatalf("groupadd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { userTool("groupdel", name) })
}

// addUser creates user name without a home, in group (if not ""), for the test, replacing a
// leftover of an earlier run, and removes it at the end.
func addUser(t *testing.T, name, group string) testUser {
	t.Helper()
	userTool("userdel", "-f", name)
	args := []string{"-M", "-s", "/usr/sbin/nologin", "-U"}
	if group != "" {
		args = append(args, "-G", group)
	}
	if out, err := userTool("useradd", append(args, name)...); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { userTool("userdel", "-f", name) })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return testUser{name: name, uid: uid, gid: gid}
}

// userTool runs a shadow-utils command, retrying while another process holds /etc/passwd's lock.
func userTool(name string, args ...string) (string, error) {
	for try := 0; ; try++ {
		out, err := fusetest.Output(time.Minute, nil, name, args...)
		if err == nil || !strings.Contains(out, "lock") || try == 20 {
			return out, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBindRefusesSymlink: the bind mount of a volctl mount refuses a target reached through a
// symlink (one swapped in after the checks) instead of following it.
func TestBindRefusesSymlink(t *testing.T) {
	fusetest.RequireRoot(t, "to bind-mount")
	base := fusetest.TempRoot(t, "fvbind-")
	src, target, link := filepath.Join(base, "src"), filepath.Join(base, "target"), filepath.Join(base, "link")
	for _, p := range []string{src, target, filepath.Join(target, "sub")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{link, link + "/.", filepath.Join(link, "sub")} {
		if err := (sysMounter{}).Bind(src, dir); err == nil {
			t.Errorf("Bind on %s succeeded; want refused", dir)
		}
		for _, p := range []string{target, filepath.Join(target, "sub")} {
			if isMountPoint(t, p) {
				t.Fatalf("Bind on %s mounted on %s", dir, p)
			}
		}
	}
	if err := (sysMounter{}).Bind(src, target); err != nil || !isMountPoint(t, target) {
		t.Fatalf("Bind on %s: %v; want mounted", target, err)
	}
}
