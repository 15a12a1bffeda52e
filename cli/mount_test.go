package cli

import (
	"encoding/json"
	"errors"
	"github.com/fusevol/fusevol/fs/fusetest"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/fusevol/fusevol/plugin/api"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mountVolume mounts src on a new directory with volctl and unmounts it when the test ends
// (unless the test already did).
func (td *testDaemon) mountVolume(t *testing.T, src, name string) string {
	t.Helper()
	dir := td.mkdir(t, name)
	r := td.run(t, "mount", src, dir).ok(t)
	mode := "read-write"
	if strings.Contains(src, "@") {
		mode = "read-only"
	}
	if want := "mounted " + src + " on " + dir + " (" + mode + ")\n"; r.stdout != want {
		t.Errorf("mount printed %q, want %q", r.stdout, want)
	}
	t.Cleanup(func() { td.run(t, "unmount", dir) })
	return dir
}

// A mounted volume cannot be restored; nothing is lost by trying; once unmounted it can.
func TestRestoreMountedVolume(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	dir := td.mountVolume(t, "v", "mnt")
	writeFile(t, filepath.Join(dir, "f"), "one")
	td.run(t, "snapshot", "create", "v", "s1").ok(t)
	writeFile(t, filepath.Join(dir, "f"), "two")

	td.run(t, "snapshot", "restore", "v", "s1").fails(t, 1, "v", "in use")
	if got := readFile(t, filepath.Join(dir, "f")); got != "two" {
		t.Fatalf("refused restore changed the file: %q", got)
	}
	r := td.run(t, "volume", "inspect", "v").ok(t)
	if !regexp.MustCompile(`(?m)^Mounted on:\s+` + regexp.QuoteMeta(dir) + `$`).MatchString(r.stdout) {
		t.Errorf("inspect does not show the volctl mount:\n%s", r.stdout)
	}
	td.run(t, "volume", "rm", "v").fails(t, 1, "v", "in use")

	if r := td.run(t, "unmount", dir).ok(t); r.stdout != "unmounted "+dir+"\n" {
		t.Errorf("unmount printed %q", r.stdout)
	}
	td.run(t, "unmount", dir).fails(t, 1, dir)
	td.run(t, "snapshot", "restore", "v", "s1").ok(t)
	dir = td.mountVolume(t, "v", "mnt2")
	if got := readFile(t, filepath.Join(dir, "f")); got != "one" {
		t.Errorf("after restore f holds %q, want %q", got, "one")
	}
	// -f unmounts first.
	td.run(t, "volume", "rm", "-f", "v").ok(t)
	td.run(t, "volume", "inspect", "v").fails(t, 1, "v", "not found")
}

// A snapshot mounts read-only; a clone made from it is writable and independent.
func TestMountSnapshotAndClone(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	dir := td.mountVolume(t, "v", "live")
	writeFile(t, filepath.Join(dir, "f"), "old")
	td.run(t, "snapshot", "create", "v", "s").ok(t)
	writeFile(t, filepath.Join(dir, "f"), "new")

	snap := td.mountVolume(t, "v@s", "snap")
	if got := readFile(t, filepath.Join(snap, "f")); got != "old" {
		t.Errorf("snapshot mount reads %q, want old", got)
	}
	err := os.WriteFile(filepath.Join(snap, "f"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing into a snapshot mount: %v, want EROFS", err)
	}
	// A clone of the snapshot is writable and independent of both.
	td.run(t, "volume", "create", "-o", "from=v@s", "c").ok(t)
	r := td.run(t, "volume", "inspect", "c").ok(t)
	if !regexp.MustCompile(`(?m)^Origin:\s+v@s$`).MatchString(r.stdout) {
		t.Errorf("inspect of a clone does not show its origin:\n%s", r.stdout)
	}
	clone := td.mountVolume(t, "c", "clone")
	if got := readFile(t, filepath.Join(clone, "f")); got != "old" {
		t.Errorf("clone reads %q, want old", got)
	}
	writeFile(t, filepath.Join(clone, "f"), "cloned")
	if got := readFile(t, filepath.Join(dir, "f")); got != "new" {
		t.Errorf("writing the clone changed the origin volume: %q", got)
	}
	if got := readFile(t, filepath.Join(snap, "f")); got != "old" {
		t.Errorf("writing the clone changed the snapshot: %q", got)
	}

	td.run(t, "mount", "v@nosuch", td.mkdir(t, "bad")).fails(t, 1, "nosuch")
	td.run(t, "mount", "nosuch", td.mkdir(t, "bad2")).fails(t, 1, "nosuch")
}

// diff after adds, edits and deletes, between snapshots and against the live volume.
func TestSnapshotDiff(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	dir := td.mountVolume(t, "v", "mnt")
	for _, f := range []string{"keep.txt", "edit.txt", "gone.txt", "dir/sub.txt", "olddir/x", "olddir/y"} {
		writeFile(t, filepath.Join(dir, f), "content of "+f)
	}
	td.run(t, "snapshot", "create", "v", "s1").ok(t)

	writeFile(t, filepath.Join(dir, "edit.txt"), "edited")
	writeFile(t, filepath.Join(dir, "dir/sub.txt"), "edited too")
	for _, p := range []string{"gone.txt", "olddir"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "new.txt"), "new")
	writeFile(t, filepath.Join(dir, "newdir/a"), "new")

	live := td.run(t, "snapshot", "diff", "v", "s1").ok(t)
	golden(t, "snapshot_diff", live.stdout)
	td.run(t, "snapshot", "create", "v", "s2").ok(t)
	if r := td.run(t, "snapshot", "diff", "v", "s1", "s2").ok(t); r.stdout != live.stdout {
		t.Errorf("diff s1 s2:\n%s\ndiffers from diff s1 live:\n%s", r.stdout, live.stdout)
	}
	r := td.run(t, "snapshot", "diff", "--format", "json", "v", "s1", "s2").ok(t)
	golden(t, "snapshot_diff_json", r.stdout)
	var d api.Diff
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.To != "s2" || len(d.Added) == 0 {
		t.Errorf("diff json: %v %+v", err, d)
	}
	// Backwards, additions become removals.
	back := td.run(t, "snapshot", "diff", "v", "s2", "s1").ok(t)
	golden(t, "snapshot_diff_reverse", back.stdout)
	if r := td.run(t, "snapshot", "diff", "v", "s2").ok(t); r.stdout != "" {
		t.Errorf("nothing changed since s2, diff says:\n%s", r.stdout)
	}
}

// df, gc and fsck on a store holding the same data twice.
func TestStoreCommands(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	data := make([]byte, 3<<20)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data)
	for _, v := range []string{"a", "b"} {
		td.run(t, "volume", "create", "-o", "chunk-size=1MiB", "-o", "compression=none", v).ok(t)
		dir := td.mountVolume(t, v, "mnt-"+v)
		writeFile(t, filepath.Join(dir, "data"), string(data))
		writeFile(t, filepath.Join(dir, "small"), v)
	}
	td.run(t, "volume", "create", "empty").ok(t)

	r := td.run(t, "df").ok(t)
	vols, _, _ := strings.Cut(r.stdout, "\n\n")
	columnsAligned(t, vols)
	onDisk := regexp.MustCompile(`(?m)^(on disk\s+)\S+ \S+$`)
	if !onDisk.MatchString(r.stdout) {
		t.Errorf("df has no on-disk line:\n%s", r.stdout)
	}
	golden(t, "df", onDisk.ReplaceAllString(r.stdout, "${1}<SIZE>"))
	r = td.run(t, "df", "--format", "json").ok(t)
	var df api.DF
	if err := json.Unmarshal([]byte(r.stdout), &df); err != nil {
		t.Fatal(err)
	}
	if df.DedupRatio < 1.9 || len(df.Volumes) != 3 || df.DiskBytes <= 0 {
		t.Errorf("df json: %+v", df)
	}
	diskBytes := regexp.MustCompile(`"disk_bytes": \d+`)
	golden(t, "df_json", diskBytes.ReplaceAllString(r.stdout, `"disk_bytes": 0`))

	r = td.run(t, "gc").ok(t)
	if !regexp.MustCompile(`^gc: disk \S+ \S+ -> \S+ \S+ \(\S+ \S+ reclaimed\) in \S+\n$`).MatchString(r.stdout) {
		t.Errorf("gc printed %q", r.stdout)
	}
	r = td.run(t, "gc", "--format", "json").ok(t)
	var gc api.GCResult
	if err := json.Unmarshal([]byte(r.stdout), &gc); err != nil || gc.DiskBytesBefore <= 0 {
		t.Errorf("gc json %q: %v", r.stdout, err)
	}

	if r := td.run(t, "fsck").ok(t); r.stdout != "store is clean\n" {
		t.Errorf("fsck printed %q", r.stdout)
	}
	r = td.run(t, "fsck", "--format", "json").ok(t)
	golden(t, "fsck_json", r.stdout)
	td.run(t, "fsck", "--repair").fails(t, 1, "mounted")
	td.run(t, "unmount", filepath.Join(td.dir, "mnt-a")).ok(t)
	td.run(t, "unmount", filepath.Join(td.dir, "mnt-b")).ok(t)
	if r := td.run(t, "fsck", "--repair").ok(t); r.stdout != "store is clean\n" {
		t.Errorf("fsck --repair printed %q", r.stdout)
	}
}
