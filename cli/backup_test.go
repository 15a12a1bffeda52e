package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// volctl send --to, backup ls, restore, a damaged chunk, forget --prune and check, against a
// real daemon, trees compared through mounts.
func TestBackupRepository(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	repo := filepath.Join(td.dir, "repo")
	td.run(t, "volume", "create", "-o", "chunk-size=64KiB", "v").ok(t)
	dir := td.mountVolume(t, "v", "src")
	writeFile(t, filepath.Join(dir, "a/b/file"), strings.Repeat("data ", 50000))
	writeFile(t, filepath.Join(dir, "small"), "small")
	if err := os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "a/hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/b/file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "small"), "user.tag", []byte("tagged"), 0); err != nil {
		t.Fatal(err)
	}
	td.run(t, "snapshot", "create", "v", "s1").ok(t)
	out := td.run(t, "send", "v@s1", "--to", repo).ok(t).stdout
	if !strings.HasPrefix(out, "backed up v@s1 to "+repo+": ") || !strings.Contains(out, "0 there already") {
		t.Errorf("send --to printed %q", out)
	}
	writeFile(t, filepath.Join(dir, "small"), "changed")
	writeFile(t, filepath.Join(dir, "new"), strings.Repeat("new data ", 30000))
	td.run(t, "snapshot", "create", "v", "s2").ok(t)
	out = td.run(t, "send", "--from", "s1", "v@s2", "--to", repo).ok(t).stdout
	if !strings.Contains(out, "backed up v@s2") {
		t.Errorf("incremental send --to printed %q", out)
	}
	td.run(t, "send", "v@s2", "--to", repo).fails(t, 1, "v@s2", "already in the repository")
	td.run(t, "send", "v@s2", "--to", repo, "-o", "x").fails(t, 2, "one")
	td.run(t, "send", "v@nosuch", "--to", repo).fails(t, 1, "nosuch", "not found")

	var list []struct{ Volume, Snapshot string }
	if err := json.Unmarshal([]byte(td.run(t, "backup", "ls", "--repo", repo, "--format", "json").ok(t).stdout), &list); err != nil ||
		len(list) != 2 || list[0].Snapshot != "s1" || list[1].Snapshot != "s2" {
		t.Fatalf("backup ls: %v %+v", err, list)
	}
	if out := td.run(t, "backup", "ls", "--repo", repo).ok(t).stdout; !strings.HasPrefix(out, "VOLUME") || strings.Count(out, "\n") != 3 {
		t.Errorf("backup ls:\n%s", out)
	}

	out = td.run(t, "restore", "--repo", repo, "v@s2", "w").ok(t).stdout
	if !strings.HasPrefix(out, "restored v@s2 as w@s2: ") {
		t.Errorf("restore printed %q", out)
	}
	if a, b := treeLines(t, td.mountVolume(t, "v@s2", "v2")), treeLines(t, td.mountVolume(t, "w@s2", "w2")); a != b {
		t.Fatalf("restored tree differs:\n%s\n--- want:\n%s", b, a)
	}
	td.run(t, "restore", "--repo", repo, "v@s2", "w").fails(t, 1, "exists")
	td.run(t, "restore", "--repo", repo, "v@nosuch", "x").fails(t, 1, "not in the repository")

	// A damaged chunk: restore fails naming it and makes nothing; check says so.
	chunks, _ := filepath.Glob(filepath.Join(repo, "chunks", "*", "*"))
	if len(chunks) == 0 {
		t.Fatal("no chunk files")
	}
	good := map[string][]byte{}
	for _, c := range chunks { // every chunk: whichever s1 uses
		b, _ := os.ReadFile(c)
		good[c] = b
		bad := append([]byte{}, b...)
		bad[len(bad)-1] ^= 1
		os.WriteFile(c, bad, 0o600)
	}
	td.run(t, "restore", "--repo", repo, "v@s1", "x").fails(t, 1, "restore v@s1", "damaged", "nothing was made")
	if r := td.run(t, "volume", "ls", "-q").ok(t); r.stdout != "v\nw\n" {
		t.Errorf("after a refused restore, volumes are %q", r.stdout)
	}
	r := td.run(t, "backup", "check", "--repo", repo)
	if r.code != 1 || !strings.Contains(r.stdout, "NOT clean") || !strings.Contains(r.stdout, "problem: backup v@s") {
		t.Errorf("check over a damaged chunk: %d %q", r.code, r.stdout)
	}
	for c, b := range good {
		os.WriteFile(c, b, 0o600)
	}

	td.run(t, "backup", "forget", "--repo", repo).fails(t, 2, "keep rule")
	out = td.run(t, "backup", "forget", "--repo", repo, "--keep", "1", "--prune").ok(t).stdout
	if !strings.Contains(out, "forgot v@s1\n") || !strings.Contains(out, "pruned ") {
		t.Errorf("forget --prune printed %q", out)
	}
	out = td.run(t, "backup", "check", "--repo", repo).ok(t).stdout
	if !strings.Contains(out, "is clean: 1 backup") || !strings.Contains(out, "0 unreferenced") {
		t.Errorf("check printed %q", out)
	}
	var check struct {
		Clean    bool
		Backups  int
		Problems []string
	}
	if err := json.Unmarshal([]byte(td.run(t, "backup", "check", "--repo", repo, "--format", "json").ok(t).stdout), &check); err != nil ||
		!check.Clean || check.Backups != 1 || check.Problems == nil {
		t.Errorf("check --format json: %v %+v", err, check)
	}
	var forget struct{ Forgotten []any }
	if err := json.Unmarshal([]byte(td.run(t, "backup", "forget", "--repo", repo, "--keep", "1", "--format", "json").ok(t).stdout), &forget); err != nil ||
		forget.Forgotten == nil || len(forget.Forgotten) != 0 {
		t.Errorf("forget --format json: %v %+v", err, forget)
	}
	td.run(t, "backup", "ls", "--repo", filepath.Join(td.dir, "nosuch")).fails(t, 1, "nosuch")
	td.run(t, "fsck").ok(t)
}
