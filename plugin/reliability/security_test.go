package reliability

import (
	"context"
	"errors"
	"github.com/fusevol/fusevol/fs/fusetest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/plugin/api"
)

// hostileNames are volume names that would reach outside the mount root (or confuse paths) if
// they were used as given.
var hostileNames = []string{
	"../x", "a/../../b", "/abs", "/tmp/fusevol-escape", "..", ".", "x/y", "a\x00b", "a\\b",
	"~root", "-rf", " lead", "trail/", strings.Repeat("n", 300), "",
}

// TestVolumeNamesStayInside sends hostile names through every entry point: each is refused with
// an error that talks about the name, nothing is listed, and nothing appears outside the
// daemon's own files.
func TestVolumeNamesStayInside(t *testing.T) {
	fusetest.Require(t)
	base := fusetest.TempRoot(t, "fvrel-")
	root := filepath.Join(base, "r", "daemon")
	d := newDaemon(t, root)
	ctx := context.Background()
	d.mustDocker("VolumeDriver.Create", map[string]string{"Name": "good"})
	dir := filepath.Join(base, "mnt")
	os.Mkdir(dir, 0o755)
	for _, name := range hostileNames {
		for _, ep := range []string{"Create", "Get", "Path", "Mount", "Remove"} {
			r, err := d.docker("VolumeDriver."+ep, map[string]any{"Name": name, "ID": "hostile", "Opts": nil})
			if err != nil {
				t.Fatalf("%s %q: %v", ep, name, err)
			}
			if r.Status == 200 || !strings.Contains(r.Err, "name") {
				t.Errorf("Docker %s %q: status %d, Err %q; want refused with an error about the name", ep, name, r.Status, r.Err)
			}
		}
		if _, err := d.client.CreateVolume(ctx, name, nil); !api.HasCode(err, api.CodeInvalid) || !strings.Contains(err.Error(), "name") {
			t.Errorf("control create %q: %v; want %s about the name", name, err, api.CodeInvalid)
		}
		if _, err := d.client.Mount(ctx, name, dir); !api.HasCode(err, api.CodeInvalid) {
			t.Errorf("control mount %q: %v; want %s", name, err, api.CodeInvalid)
		}
		if _, err := d.client.Mount(ctx, "good@"+name, dir); !api.HasCode(err, api.CodeInvalid) {
			t.Errorf("control mount good@%q: %v; want %s", name, err, api.CodeInvalid)
		}
		if _, err := d.client.CreateSnapshot(ctx, "good", name); !api.HasCode(err, api.CodeInvalid) {
			t.Errorf("control snapshot good@%q: %v; want %s", name, err, api.CodeInvalid)
		}
		if strings.ContainsRune(name, 0) {
			continue // not representable in a URL path
		}
		for what, err := range map[string]error{
			"inspect":  func() error { _, err := d.client.InspectVolume(ctx, name); return err }(),
			"remove":   d.client.RemoveVolume(ctx, name, true),
			"schedule": func() error { _, err := d.client.Schedule(ctx, name); return err }(),
			"set schedule": func() error {
				_, err := d.client.SetSchedule(ctx, name, api.Schedule{Every: "1h", Keep: 1})
				return err
			}(),
			"schedule off": d.client.RemoveSchedule(ctx, name),
		} {
			if !api.HasCode(err, api.CodeInvalid) && !api.HasCode(err, api.CodeNotFound) {
				t.Errorf("control %s %q: %v; want refused", what, name, err)
			}
		}
		if out, err := d.volctl("volume", "create", name); err == nil {
			t.Errorf("volctl volume create %q succeeded: %s", name, out)
		}
	}
	vols, err := d.client.ListVolumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0].Name != "good" {
		t.Errorf("volumes after hostile names: %+v, want only good", vols)
	}
	r := d.mustDocker("VolumeDriver.List", "{}")
	if len(r.Volumes) != 1 || r.Volumes[0].Name != "good" {
		t.Errorf("Docker List after hostile names: %s", r.raw)
	}
	wantEntries(t, base, "mnt", "r")
	wantEntries(t, filepath.Join(base, "r"), "daemon")
	wantEntries(t, root, "daemon.log", "fusevol.sock", "mounts", "store")
	wantEntries(t, d.mountRoot())
	wantEntries(t, dir)
	for _, p := range []string{"/abs", "/tmp/fusevol-escape"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

// servedMarker is the file plugin/marker.go keeps in the mount root.
const servedMarker = ".fusevol-served"

// wantEntries checks that dir holds exactly want; in a mount root (a directory named "mounts")
// the served marker is left out.
func wantEntries(t testing.TB, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.HasSuffix(dir, "mounts") {
		// The daemon's served-before marker (plugin/marker.go) lives in its mount root once a
		// volume exists; nothing else may.
		got = slices.DeleteFunc(got, func(n string) bool { return n == servedMarker })
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

// TestSnapshotsReadOnly tries every kind of change under <mount>/.snapshots/NAME and on a
// snapshot mounted on its own: each fails with EROFS and the snapshot keeps its data.
func TestSnapshotsReadOnly(t *testing.T) {
	d, base := setup(t)
	live, snapDir := subdir(base, "live"), subdir(base, "snap")
	d.mustVolctl("volume", "create", "ro")
	d.mustVolctl("mount", "ro", live)
	must(t, os.WriteFile(filepath.Join(live, "f"), []byte("v1"), 0o644))
	must(t, os.Mkdir(filepath.Join(live, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(live, "d", "g"), []byte("g"), 0o644))
	d.mustVolctl("snapshot", "create", "ro", "s1")
	must(t, os.WriteFile(filepath.Join(live, "f"), []byte("v2"), 0o644))
	d.mustVolctl("mount", "ro@s1", snapDir)

	for _, dir := range []string{filepath.Join(live, ".snapshots", "s1"), snapDir} {
		for _, op := range changes(live) {
			if op.crossesMounts && dir == snapDir {
				continue // EXDEV from the kernel: a rename cannot cross mounts
			}
			if err := op.fn(dir); !errorsIsErrno(err, syscall.EROFS) {
				t.Errorf("%s in %s: %v, want EROFS", op.name, dir, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "v1" {
			t.Errorf("%s/f after the attempts: %q %v, want v1", dir, b, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "d", "g")); err != nil || string(b) != "g" {
			t.Errorf("%s/d/g after the attempts: %q %v, want g", dir, b, err)
		}
	}
	if err := os.Mkdir(filepath.Join(live, ".snapshots", "new"), 0o755); !errorsIsErrno(err, syscall.EROFS) {
		t.Errorf("mkdir .snapshots/new: %v, want EROFS", err)
	}
	if err := os.Rename(filepath.Join(live, "d"), filepath.Join(live, ".snapshots", "d")); !errorsIsErrno(err, syscall.EROFS) {
		t.Errorf("rename d into .snapshots: %v, want EROFS", err)
	}
	if err := os.RemoveAll(filepath.Join(live, ".snapshots", "s1")); !errorsIsErrno(err, syscall.EROFS) {
		t.Errorf("rm -r .snapshots/s1: %v, want EROFS", err)
	}
	d.mustVolctl("unmount", snapDir)
	d.mustVolctl("unmount", live)
	if out, err := d.volctl("fsck"); err != nil {
		t.Errorf("fsck: %v\n%s", err, out)
	}
}

type change struct {
	name          string
	fn            func(dir string) error
	crossesMounts bool // renames between the snapshot directory and live
}

// changes are the ways to modify a directory tree holding file f and directory d/g; live is a
// writable directory on the same mount.
func changes(live string) []change {
	p := filepath.Join
	return []change{
		{"open f for writing", func(dir string) error {
			f, err := os.OpenFile(p(dir, "f"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}, false},
		{"create", func(dir string) error { return os.WriteFile(p(dir, "new"), []byte("x"), 0o644) }, false},
		{"truncate", func(dir string) error { return os.Truncate(p(dir, "f"), 0) }, false},
		{"unlink", func(dir string) error { return os.Remove(p(dir, "f")) }, false},
		{"rmdir", func(dir string) error { return unix.Rmdir(p(dir, "d")) }, false},
		{"rename inside", func(dir string) error { return os.Rename(p(dir, "f"), p(dir, "f2")) }, false},
		{"rename in from live", func(dir string) error { return os.Rename(p(live, "f"), p(dir, "in")) }, true},
		{"rename out to live", func(dir string) error { return os.Rename(p(dir, "d", "g"), p(live, "out")) }, true},
		{"mkdir", func(dir string) error { return os.Mkdir(p(dir, "nd"), 0o755) }, false},
		{"symlink", func(dir string) error { return os.Symlink("f", p(dir, "sl")) }, false},
		{"link", func(dir string) error { return os.Link(p(dir, "f"), p(dir, "hl")) }, false},
		{"mknod fifo", func(dir string) error { return unix.Mkfifo(p(dir, "fifo"), 0o644) }, false},
		{"chmod", func(dir string) error { return os.Chmod(p(dir, "f"), 0o777) }, false},
		{"chown", func(dir string) error { return os.Chown(p(dir, "f"), 1000, 1000) }, false},
		{"utimes", func(dir string) error { return unix.UtimesNano(p(dir, "f"), []unix.Timespec{{}, {}}) }, false},
		{"setxattr", func(dir string) error { return unix.Setxattr(p(dir, "f"), "user.x", []byte("1"), 0) }, false},
		{"removexattr", func(dir string) error { return unix.Removexattr(p(dir, "f"), "user.x") }, false},
	}
}

func errorsIsErrno(err error, want syscall.Errno) bool {
	var en syscall.Errno
	return errors.As(err, &en) && en == want
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSocketAndPeers checks the socket's mode and group, and that the control API serves the
// group and refuses everyone else even when the socket's mode lets them connect.
func TestSocketAndPeers(t *testing.T) {
	d, _ := setup(t, "--group", "4242")
	os.Chmod(d.root, 0o755)
	fi, err := os.Stat(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 || st.Gid != 4242 || st.Uid != 0 {
		t.Fatalf("socket %v uid %d gid %d, want a 0660 socket owned by root, group 4242", fi.Mode(), st.Uid, st.Gid)
	}
	if got := asUser(t, 65534, 65534, "status", d.sock); got != "EACCES" {
		t.Errorf("uid 65534 connecting to the 0660 socket: %s, want EACCES", got)
	}
	if got := asUser(t, 1000, 4242, "status", d.sock); got != "ok" {
		t.Errorf("uid 1000 in group 4242: %s, want ok", got)
	}
	// With the mode opened up only the peer check stands between uid 65534 and the API.
	must(t, os.Chmod(d.sock, 0o666))
	if got := asUser(t, 65534, 65534, "status", d.sock); got != api.CodeForbidden {
		t.Errorf("uid 65534 on a 0666 socket: %s, want %s", got, api.CodeForbidden)
	}
	if got := asUser(t, 0, 0, "status", d.sock); got != "ok" {
		t.Errorf("root: %s, want ok", got)
	}
}

// TestPermissionsAndSetuid checks that the mount enforces permission bits for other uids and
// that a non-root write clears setuid and setgid bits.
func TestPermissionsAndSetuid(t *testing.T) {
	d, mnt := setupMounted(t, "perm", "mode=0777")
	p := func(name string) string { return filepath.Join(mnt, name) }

	must(t, os.WriteFile(p("secret"), []byte("uid 1000 only"), 0o600))
	must(t, os.Chown(p("secret"), 1000, 1000))
	must(t, os.Chmod(p("secret"), 0o600))
	must(t, os.Mkdir(p("private"), 0o700))
	must(t, os.Chown(p("private"), 1000, 1000))
	for _, c := range []struct {
		uid      uint32
		op, path string
		want     string
	}{
		{1000, "try-read", p("secret"), "ok"},
		{65534, "try-read", p("secret"), "EACCES"},
		{65534, "try-append", p("secret"), "EACCES"},
		{65534, "try-create", p("private/x"), "EACCES"},
		{1000, "try-create", p("private/x"), "ok"},
		{65534, "try-create", p("public"), "ok"},
	} {
		if got := asUser(t, c.uid, c.uid, c.op, c.path); got != c.want {
			t.Errorf("uid %d %s %s: %s, want %s", c.uid, c.op, c.path, got, c.want)
		}
	}

	for _, c := range []struct {
		name      string
		owner     uint32
		mode      os.FileMode // permission bits besides setuid and setgid
		writerUID uint32
	}{
		{"owned-by-writer", 1000, 0o755, 1000},
		{"root-owned-world-writable", 0, 0o777, 65534},
	} {
		path := p(c.name)
		must(t, os.WriteFile(path, []byte("#!/bin/sh\n"), 0o644))
		must(t, os.Chown(path, int(c.owner), int(c.owner)))
		must(t, os.Chmod(path, c.mode|os.ModeSetuid|os.ModeSetgid))
		fi, err := os.Stat(path)
		if err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != os.ModeSetuid|os.ModeSetgid {
			t.Fatalf("%s: setuid and setgid not set before the write: %v %v", c.name, fi.Mode(), err)
		}
		if got := asUser(t, c.writerUID, c.writerUID, "try-append", path); got != "ok" {
			t.Fatalf("%s: uid %d append: %s", c.name, c.writerUID, got)
		}
		fi, err = os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != c.mode {
			t.Errorf("%s after a write by uid %d: mode %v, want %v without setuid/setgid", c.name, c.writerUID, fi.Mode(), c.mode)
		}
		if b, _ := os.ReadFile(path); !strings.Contains(string(b), "appended by another user") {
			t.Errorf("%s: the write is missing: %q", c.name, b)
		}
	}
	d.mustVolctl("unmount", mnt)
}
