package plugin

import (
	"context"
	"errors"
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if !api.HasCode(err, code) {
		t.Fatalf("%s: got %v, want an error with code %s", what, err, code)
	}
}

func TestControlVolumes(t *testing.T) {
	td := startDaemon(t, "")
	c := client.New(td.sock)
	ctx := context.Background()

	fusetest.WaitReady(t, td.sock, nil)
	st, err := c.Status(ctx)
	if err != nil || !st.Ready || st.Socket != td.sock || st.API != api.Version {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	v, err := c.CreateVolume(ctx, "web", map[string]string{"size": "1GiB", "mode": "0750", "uid": "1000"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "web" || v.Options.Size != 1<<30 || v.Options.Mode != 0o750 || v.Options.UID != 1000 || v.ID == "" {
		t.Errorf("created %+v", v)
	}
	_, err = c.CreateVolume(ctx, "web", nil)
	wantCode(t, "create existing", err, api.CodeExists)
	_, err = c.CreateVolume(ctx, "bad/name", nil)
	wantCode(t, "create bad name", err, api.CodeInvalid)
	_, err = c.CreateVolume(ctx, "x", map[string]string{"nope": "1"})
	wantCode(t, "create unknown option", err, api.CodeInvalid)
	if _, err := c.CreateVolume(ctx, "db", nil); err != nil {
		t.Fatal(err)
	}
	vols, err := c.ListVolumes(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "db" || vols[1].Name != "web" {
		t.Fatalf("ListVolumes = %+v, %v", vols, err)
	}
	in, err := c.InspectVolume(ctx, "web")
	if err != nil || in.Usage == nil || in.Usage.Files < 1 || in.Mounted {
		t.Fatalf("InspectVolume = %+v, %v", in, err)
	}
	_, err = c.InspectVolume(ctx, "nothere")
	wantCode(t, "inspect missing", err, api.CodeNotFound)

	if _, err := c.CreateSnapshot(ctx, "web", "s1"); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateSnapshot(ctx, "web", "s1")
	wantCode(t, "snapshot exists", err, api.CodeExists)
	_, err = c.CreateSnapshot(ctx, "nothere", "s1")
	wantCode(t, "snapshot of missing volume", err, api.CodeNotFound)
	snaps, err := c.ListSnapshots(ctx, "web")
	if err != nil || len(snaps) != 1 || snaps[0].Name != "s1" || snaps[0].Volume != "web" {
		t.Fatalf("ListSnapshots = %+v, %v", snaps, err)
	}
	_, err = c.ListSnapshots(ctx, "nothere")
	wantCode(t, "list snapshots of missing volume", err, api.CodeNotFound)
	if in, _ := c.InspectVolume(ctx, "web"); len(in.Snapshots) != 1 {
		t.Errorf("inspect shows snapshots %+v", in.Snapshots)
	}
	// A clone from the snapshot through the options Docker uses.
	if v, err := c.CreateVolume(ctx, "web2", map[string]string{"from": "web@s1"}); err != nil || v.Options.From != "web@s1" {
		t.Fatalf("clone: %+v, %v", v, err)
	}
	if err := c.RestoreSnapshot(ctx, "web", "s1"); err != nil {
		t.Fatalf("restore unmounted: %v", err)
	}
	err = c.RestoreSnapshot(ctx, "web", "nope")
	wantCode(t, "restore missing snapshot", err, api.CodeNotFound)
	if err := c.RemoveSnapshot(ctx, "web", "s1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "remove snapshot twice", c.RemoveSnapshot(ctx, "web", "s1"), api.CodeNotFound)

	df, err := c.DF(ctx)
	if err != nil || len(df.Volumes) != 3 || df.Volumes[0].Name != "db" {
		t.Fatalf("DF = %+v, %v", df, err)
	}
	if _, err := c.GC(ctx); err != nil {
		t.Fatalf("GC: %v", err)
	}
	rep, err := c.Fsck(ctx, false)
	if err != nil || !rep.Clean {
		t.Fatalf("Fsck = %+v, %v", rep, err)
	}
	if err := c.RemoveVolume(ctx, "db", false); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "remove missing", c.RemoveVolume(ctx, "db", false), api.CodeNotFound)
}

func TestControlBadRequests(t *testing.T) {
	td := startDaemon(t, "")
	for _, tt := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/fusevol/v1/nothing", "", 404, api.CodeNotFound},
		{"POST", "/fusevol/v1/volumes", `{"name":`, 400, api.CodeInvalid},
		{"POST", "/fusevol/v1/volumes", `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, api.CodeTooLarge},
		{"DELETE", "/fusevol/v1/volumes/x?force=maybe", "", 400, api.CodeInvalid},
		{"GET", "/fusevol/v1/volumes/x/diff", "", 400, api.CodeInvalid},
		{"POST", "/fusevol/v1/mounts", `{"source":"x","dir":"relative"}`, 400, api.CodeInvalid},
		{"POST", "/fusevol/v1/unmount", `{"dir":"/not/mounted"}`, 404, api.CodeNotFound},
	} {
		t.Run(tt.method+" "+tt.path[:min(len(tt.path), 40)], func(t *testing.T) {
			req, _ := newRequest(tt.method, tt.path, tt.body)
			resp, err := td.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			e := decodeAPIError(t, resp)
			if resp.StatusCode != tt.status || e.Code != tt.code || e.Message == "" {
				t.Errorf("status %d, %+v; want %d with code %s", resp.StatusCode, e, tt.status, tt.code)
			}
		})
	}
}

// TestControlMountsAndDiff mounts volumes and snapshots the way volctl does, writes through the
// mounts, and checks diff, restore refusal, read-only snapshots and forced removal.
func TestControlMountsAndDiff(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "")
	c := client.New(td.sock)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := c.Mount(ctx, "v", dir); err != nil {
		t.Fatal(err)
	}
	write := func(rel, data string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("keep", "same")
	write("edit", "before")
	write("swapped", "aaaa")
	write("gone", "x")
	write("d/gone2", "y")
	if _, err := c.CreateSnapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	write("edit", "after!")
	write("new", "z")
	// Replaced by a file of the same size and mtime (cp -p): only the content tells.
	fi, err := os.Stat(filepath.Join(dir, "swapped"))
	if err != nil {
		t.Fatal(err)
	}
	write("swapped.tmp", "bbbb")
	if err := os.Chtimes(filepath.Join(dir, "swapped.tmp"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "swapped.tmp"), filepath.Join(dir, "swapped")); err != nil {
		t.Fatal(err)
	}
	write("nd/n2", "w")
	os.Remove(filepath.Join(dir, "gone"))
	os.RemoveAll(filepath.Join(dir, "d"))

	diff, err := c.DiffSnapshots(ctx, "v", "s1", "")
	if err != nil {
		t.Fatal(err)
	}
	want := api.Diff{Volume: "v", From: "s1", Added: []string{"/nd", "/nd/n2", "/new"},
		Modified: []string{"/edit", "/swapped"}, Removed: []string{"/d", "/d/gone2", "/gone"}}
	if !reflect.DeepEqual(diff, want) {
		t.Errorf("diff s1..live =\n %+v\nwant\n %+v", diff, want)
	}
	if _, err := c.CreateSnapshot(ctx, "v", "s2"); err != nil {
		t.Fatal(err)
	}
	if d2, err := c.DiffSnapshots(ctx, "v", "s1", "s2"); err != nil || !reflect.DeepEqual(d2.Added, want.Added) {
		t.Errorf("diff s1..s2 = %+v, %v", d2, err)
	}
	if d3, err := c.DiffSnapshots(ctx, "v", "s2", ""); err != nil || len(d3.Added)+len(d3.Modified)+len(d3.Removed) != 0 {
		t.Errorf("diff s2..live = %+v, %v; want empty", d3, err)
	}

	// A snapshot of a mounted volume holds what was written but not yet closed or synced.
	pending, err := os.Create(filepath.Join(dir, "pending"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pending.WriteString("unsynced"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "v", "open"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".snapshots", "open", "pending")); err != nil || string(b) != "unsynced" {
		t.Errorf("snapshot of an open file = %q, %v; want the written bytes", b, err)
	}
	pending.Close()
	if err := c.RemoveSnapshot(ctx, "v", "open"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "pending"))

	// The mounted volume shows its snapshots, read-only, under .snapshots.
	if b, err := os.ReadFile(filepath.Join(dir, ".snapshots", "s1", "edit")); err != nil || string(b) != "before" {
		t.Errorf(".snapshots/s1/edit = %q, %v; want \"before\"", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".snapshots", "s1", "edit"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into .snapshots/s1: %v, want EROFS", err)
	}
	wantCode(t, "restore mounted", c.RestoreSnapshot(ctx, "v", "s1"), api.CodeInUse)
	wantCode(t, "remove mounted", c.RemoveVolume(ctx, "v", false), api.CodeInUse)
	_, err = c.Fsck(ctx, true)
	wantCode(t, "fsck --repair while mounted", err, api.CodeInUse)
	in, err := c.InspectVolume(ctx, "v")
	if err != nil || !in.Mounted || !reflect.DeepEqual(in.Dirs, []string{mustReal(t, dir)}) {
		t.Errorf("inspect mounted: %+v, %v", in, err)
	}

	// A snapshot mounts read-only and shows the old state.
	sdir := t.TempDir()
	if m, err := c.Mount(ctx, "v@s1", sdir); err != nil || !m.ReadOnly {
		t.Fatalf("mount snapshot: %+v, %v", m, err)
	}
	if b, err := os.ReadFile(filepath.Join(sdir, "edit")); err != nil || string(b) != "before" {
		t.Errorf("snapshot edit = %q, %v", b, err)
	}
	err = os.WriteFile(filepath.Join(sdir, "x"), nil, 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into a snapshot mount: %v, want EROFS", err)
	}
	wantCode(t, "remove mounted snapshot", c.RemoveSnapshot(ctx, "v", "s1"), api.CodeInUse)
	_, err = c.Mount(ctx, "v", sdir)
	wantCode(t, "mount on a taken dir", err, api.CodeInvalid)
	if ms, err := c.Mounts(ctx); err != nil || len(ms) != 2 {
		t.Errorf("Mounts = %+v, %v", ms, err)
	}
	if err := c.Unmount(ctx, sdir); err != nil {
		t.Fatal(err)
	}
	if err := c.Unmount(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if m := mountedUnder(t, td.root); len(m) != 0 {
		t.Fatalf("mounts left: %v", m)
	}
	if err := c.RestoreSnapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	if d4, err := c.DiffSnapshots(ctx, "v", "s1", ""); err != nil || len(d4.Added)+len(d4.Modified)+len(d4.Removed) != 0 {
		t.Errorf("diff after restore = %+v, %v; want empty", d4, err)
	}

	// Forced removal drops Docker's references and volctl's mounts.
	td.ok(t, "VolumeDriver.Mount", `{"Name":"v","ID":"c1"}`)
	if _, err := c.Mount(ctx, "v", dir); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveVolume(ctx, "v", true); err != nil {
		t.Fatalf("forced remove: %v", err)
	}
	if m := mountedUnder(t, td.root); len(m) != 0 || isMountPoint(t, mustReal(t, dir)) {
		t.Fatalf("mounts left after forced remove: %v", m)
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v","ID":"c1"}`) // stale ID: harmless
}

func mustReal(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestControlPeerCredentials connects as other users: a process neither root nor in the socket's
// group is refused even when the socket's mode would let it connect; a group member is served.
func TestControlPeerCredentials(t *testing.T) {
	fusetest.RequireRoot(t, "to run clients as other users")
	// Other users must reach the socket and the test binary: use a world-traversable directory.
	root := fusetest.TempRoot(t, "fusevol-peer-")
	helper := filepath.Join(root, "helper.test")
	if err := fusetest.CopySelf(helper); err != nil {
		t.Fatal(err)
	}
	td := startDaemon(t, root, func(c *Config) { c.Group = "4242" })
	fi, err := os.Stat(td.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4242 {
		t.Fatalf("socket mode %v gid %d, want 0660 and gid 4242", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	for _, tt := range []struct {
		uid, gid uint32
		groups   []uint32
		want     string
	}{
		{1000, 4242, nil, "ok"},
		{1000, 1000, []uint32{4242}, "ok"},
		{1000, 1000, nil, api.CodeForbidden},
	} {
		// Open the socket's mode up so that only SO_PEERCRED can refuse.
		os.Chmod(td.sock, 0o666)
		cmd := exec.Command(helper, "-test.run=^TestHelperStatus$")
		cmd.Env = append(os.Environ(), "FUSEVOL_HELPER_SOCKET="+td.sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.gid, Groups: tt.groups}}
		out, err := runHelper(cmd)
		if err != nil && len(out) == 0 {
			t.Fatalf("run helper as uid %d: %v", tt.uid, err)
		}
		if !strings.Contains(string(out), "RESULT="+tt.want+"\n") {
			t.Errorf("uid %d gid %d groups %v: got %q (%v), want RESULT=%s", tt.uid, tt.gid, tt.groups, out, err, tt.want)
		}
	}
}

// TestHelperStatus is run by TestControlPeerCredentials in a child process as another user.
func TestHelperStatus(t *testing.T) {
	sock := os.Getenv("FUSEVOL_HELPER_SOCKET")
	if sock == "" {
		t.Skip("helper process only")
	}
	fmt.Printf("RESULT=%s\n", fusetest.StatusAnswer(sock))
}

// runHelper runs cmd, retrying while exec reports ETXTBSY: a process forked elsewhere in this
// test binary may briefly hold the freshly written helper open.
func runHelper(cmd *exec.Cmd) ([]byte, error) {
	for try := 0; ; try++ {
		c := exec.Command(cmd.Path, cmd.Args[1:]...)
		c.Env, c.SysProcAttr = cmd.Env, cmd.SysProcAttr
		out, err := c.CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) || try == 20 {
			return out, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLookupGroup(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"", -1, true},
		{"0", 0, true},
		{"4242", 4242, true},
		{"root", 0, true},
		{"no-such-group-fusevol", 0, false},
	} {
		got, err := lookupGroup(tt.in)
		if (err == nil) != tt.ok || tt.ok && got != tt.want {
			t.Errorf("lookupGroup(%q) = %d, %v; want %d (ok=%v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
