package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin"
	"github.com/fusevol/fusevol/plugin/client"
)

func TestParseHelperArgs(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     string
		root    bool // flags start from mount(8)'s defaults, not the daemon's
		want    helperRequest
		wantErr string
	}{
		{name: "what mount(8) passes", args: []string{"v", "/m", "-o", "rw"},
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: daemonFlags}},
		{name: "socket from the environment", args: []string{"v", "/m"}, env: "/e.sock",
			want: helperRequest{source: "v", dir: "/m", socket: "/e.sock", flags: daemonFlags}},
		{name: "socket option beats the environment", args: []string{"v", "/m", "-o", "rw,socket=/o.sock"}, env: "/e.sock",
			want: helperRequest{source: "v", dir: "/m", socket: "/o.sock", flags: daemonFlags}},
		{name: "the source as the mount table shows it", args: []string{"fusevol:v@s", "/m", "-o", "ro"},
			want: helperRequest{source: "v@s", dir: "/m", socket: plugin.DefaultSocket, flags: daemonFlags | unix.MS_RDONLY}},
		{name: "flags and type", args: []string{"v", "/m", "-nfv", "-t", "fuse.fusevol"},
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, fake: true, verbose: true, flags: daemonFlags}},
		{name: "generic and FUSE options", args: []string{"v", "/m", "-o", "defaults,noauto,_netdev,nofail,user,nosuid,nodev,noexec,x-systemd.automount,allow_other,default_permissions"},
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: daemonFlags | unix.MS_NOEXEC}},
		{name: "snapshot ignores rw", args: []string{"v@s", "/m", "-o", "rw"},
			want: helperRequest{source: "v@s", dir: "/m", socket: plugin.DefaultSocket, flags: daemonFlags}},
		{name: "sloppy ignores unknown options", args: []string{"v", "/m", "-s", "-o", "bogus"},
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: daemonFlags}},
		{name: "per-mount flags", args: []string{"v", "/m", "-o", "rw,ro,noexec,suid,noatime,nodiratime"},
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: unix.MS_RDONLY | unix.MS_NOEXEC | unix.MS_NODEV | unix.MS_NOATIME | unix.MS_NODIRATIME}},
		{name: "as root: mount(8)'s defaults", args: []string{"v", "/m", "-o", "rw"}, root: true,
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: unix.MS_RELATIME}},
		{name: "as root: nodev,nosuid,noatime", args: []string{"v", "/m", "-o", "rw,nodev,nosuid,noatime"}, root: true,
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOATIME}},
		{name: "remount", args: []string{"fusevol:v", "/m", "-o", "remount,ro,user_id=0,group_id=0,max_read=262144"},
			want: helperRequest{source: "v", dir: "/m", socket: plugin.DefaultSocket, flags: daemonFlags | unix.MS_RDONLY, remount: true}},
		{name: "unknown option", args: []string{"v", "/m", "-o", "rw,bogus,uid=3,lazytime,max_read=4096"}, wantErr: "unsupported mount option(s) max_read=4096,bogus,uid=3,lazytime"},
		{name: "other type", args: []string{"v", "/m", "-t", "ext4"}, wantErr: `type "ext4"`},
		{name: "namespace", args: []string{"v", "/m", "-N", "/proc/1/ns/mnt"}, wantErr: "-N"},
		{name: "unknown flag", args: []string{"v", "/m", "-x"}, wantErr: "unknown option -x"},
		{name: "missing value", args: []string{"v", "/m", "-o"}, wantErr: "-o needs a value"},
		{name: "one argument", args: []string{"v"}, wantErr: "got 1 arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var base uintptr = daemonFlags
			if tc.root {
				base = baseFlags(0)
			}
			got, err := parseHelperArgs(tc.args, tc.env, base)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The atime mode the helper asks the daemon for follows mount(8)'s options, as parsed.
func TestHelperAtime(t *testing.T) {
	for _, tc := range []struct {
		opts, want string
	}{
		{"rw", "relatime"},
		{"relatime", "relatime"},
		{"strictatime", "strictatime"},
		{"noatime", "noatime"},
		{"strictatime,noatime", "noatime"},
		{"noatime,strictatime", "strictatime"},
		{"ro,strictatime", "noatime"},
	} {
		req, err := parseHelperArgs([]string{"v", "/m", "-o", tc.opts}, "", baseFlags(0))
		if err != nil {
			t.Fatal(err)
		}
		if got := helperAtime(req.flags); got != tc.want {
			t.Errorf("-o %s: atime %s, want %s", tc.opts, got, tc.want)
		}
	}
}

func TestMountHelperArgs(t *testing.T) {
	cases := []struct {
		args []string
		want []string
		ok   bool
	}{
		{args: []string{"/sbin/mount.fuse.fusevol", "v", "/m"}, want: []string{"v", "/m"}, ok: true},
		{args: []string{"volctl", "mount-helper", "v", "/m"}, want: []string{"v", "/m"}, ok: true},
		{args: []string{"volctl", "mount", "v", "/m"}},
		{args: []string{"volctl"}},
	}
	for _, tc := range cases {
		got, ok := mountHelperArgs(tc.args)
		if ok != tc.ok || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("mountHelperArgs(%q) = %q, %v; want %q, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}

// helperPath is where mount(8) looks for the helper: util-linux searches /sbin, /sbin/fs.d and
// /sbin/fs only, with no way to point it elsewhere.
const helperPath = "/sbin/" + mountHelperName

// installMountHelper makes /sbin/mount.fuse.fusevol the volctl binary bin for the test. The test
// writes to /sbin only when the helper is absent (removing it again after) or when CI=true (a
// throwaway machine: an installed helper is moved aside and put back); elsewhere an installed
// helper is left alone and the test skipped. A lock serialises the tests that use it.
func installMountHelper(t *testing.T, bin string) {
	t.Helper()
	lockMountHelper(t)
	_, err := os.Lstat(helperPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		t.Fatal(err)
	case os.Getenv("CI") != "true":
		t.Skipf("%s is installed; this test replaces it only when CI=true", helperPath)
	default:
		aside := helperPath + ".fusevol-test"
		if err := os.Rename(helperPath, aside); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Rename(aside, helperPath) })
	}
	if err := os.Symlink(bin, helperPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(helperPath) })
}

// lockMountHelper serialises the tests that install the helper across test processes (two
// go test runs of this package at once would otherwise swap and remove each other's helper
// mid-run); the lock is released when the test ends, after the helper is put back.
func lockMountHelper(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "fusevol-mount-helper-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// needMount checks the prerequisites of running mount(8) with the helper.
func needMount(t *testing.T) {
	t.Helper()
	fusetest.Require(t)
	fusetest.RequireRoot(t, "mount(8) runs the helper as root")
	for _, prog := range []string{"mount", "umount", "findmnt"} {
		if _, err := exec.LookPath(prog); err != nil {
			fusetest.Missing(t, prog+" not installed (util-linux)")
		}
	}
}

// sysRun runs a system command with FUSEVOL_SOCKET set to socket ("" leaves it unset).
func sysRun(t *testing.T, socket string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = os.Environ()
	if socket != "" {
		cmd.Env = append(cmd.Env, "FUSEVOL_SOCKET="+socket)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// TestMountHelperWithMount runs real mount(8) and umount(8) against a daemon through the helper:
// a volume and a snapshot, the socket from the environment and from -o socket=, an fstab line
// (mount -T with a temporary fstab; /etc/fstab is never touched), the errors, and a directory
// unmounted with umount mounted again (the daemon reconciles its table).
func TestMountHelperWithMount(t *testing.T) {
	needMount(t)
	installMountHelper(t, buildVolctl(t))
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	d1 := td.mkdir(t, "d1")
	sysRun(t, td.socket, "mount", "-t", "fuse.fusevol", "v", d1).ok(t)
	if err := os.WriteFile(filepath.Join(d1, "file"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	// mount(8)'s defaults: as for any filesystem root mounts, no nosuid or nodev unless asked.
	if out := sysRun(t, "", "findmnt", "-rno", "SOURCE,FSTYPE,VFS-OPTIONS", d1).ok(t).stdout; out != "fusevol:v fuse.fusevol rw,relatime\n" {
		t.Errorf("findmnt %s = %q", d1, out)
	}
	td.run(t, "snapshot", "create", "v", "s").ok(t)

	fstab := filepath.Join(td.dir, "fstab")
	line := "v@s " + td.mkdir(t, "tab") + " fuse.fusevol noauto,nofail,x-test,socket=" + td.socket + " 0 0\n"
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		env     bool // FUSEVOL_SOCKET set
		args    []string
		code    int    // mount(8) passes the helper's status on
		errWant string // in stderr
		file    string // read from the mount when it succeeds
		opts    string // its per-mount options as findmnt shows them, when not the daemon's
	}{
		{name: "snapshot, socket from the environment", env: true, args: []string{"-t", "fuse.fusevol", "v@s", "snap"}, file: "hello"},
		{name: "volume as findmnt names it, socket option", args: []string{"-t", "fuse.fusevol", "-o", "socket=" + td.socket + ",nosuid", "fusevol:v", "live"}, file: "hello"},
		{name: "fstab line", args: []string{"-T", fstab, filepath.Join(td.dir, "tab")}, file: "hello"},
		{name: "ro and noexec on a live volume", env: true, args: []string{"-t", "fuse.fusevol", "-o", "ro,noexec", "v", "ro"}, file: "hello", opts: "ro,noexec,relatime"},
		{name: "unknown option", env: true, args: []string{"-t", "fuse.fusevol", "-o", "uid=5", "v", "bad"}, code: 1, errWant: "unsupported mount option(s) uid=5"},
		{name: "no such volume", env: true, args: []string{"-t", "fuse.fusevol", "nope", "bad"}, code: 32, errWant: "nope"},
		{name: "no daemon", args: []string{"-t", "fuse.fusevol", "-o", "socket=" + td.dir + "/none.sock", "v", "bad"}, code: 32, errWant: "is the daemon running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if last := args[len(args)-1]; !filepath.IsAbs(last) {
				args = append(args[:len(args)-1:len(args)-1], td.mkdir(t, last))
			}
			dir := args[len(args)-1]
			socket := ""
			if tc.env {
				socket = td.socket
			}
			r := sysRun(t, socket, "mount", args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.errWant) {
				t.Fatalf("mount %q: exit %d, stderr %q; want %d and %q", args, r.code, r.stderr, tc.code, tc.errWant)
			}
			if tc.code != 0 {
				return
			}
			got, err := os.ReadFile(filepath.Join(dir, "file"))
			if err != nil || string(got) != tc.file {
				t.Errorf("read %s/file = %q, %v; want %q", dir, got, err, tc.file)
			}
			if tc.opts != "" {
				if got := sysRun(t, "", "findmnt", "-rno", "VFS-OPTIONS", dir).ok(t).stdout; got != tc.opts+"\n" {
					t.Errorf("findmnt -o VFS-OPTIONS %s = %q, want %q", dir, got, tc.opts)
				}
				if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
					t.Errorf("create on the read-only mount: %v, want EROFS", err)
				}
				// The flags are that mount's: the volume stays writable elsewhere.
				sysRun(t, "", "mount", "-o", "remount,rw", dir).ok(t)
				if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); err != nil {
					t.Errorf("create after remount,rw: %v", err)
				}
			}
			sysRun(t, "", "umount", dir).ok(t)
		})
	}

	// d1 is unmounted behind the daemon's back: its list forgets it, and d1 mounts again.
	sysRun(t, "", "umount", d1).ok(t)
	mounts, err := client.New(td.socket).Mounts(context.Background())
	if err != nil || len(mounts) != 0 {
		t.Errorf("the daemon lists %+v (%v) after umount, want nothing", mounts, err)
	}
	sysRun(t, td.socket, "mount", "-t", "fuse.fusevol", "v", d1).ok(t)
	td.run(t, "unmount", d1).ok(t)
}
