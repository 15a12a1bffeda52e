package cli

import (
	"encoding/json"
	"github.com/fusevol/fusevol/fs/fusetest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/fusevol/fusevol/plugin/api"
)

// deleteChunkBodies damages a stopped daemon's store behind its back: every chunk body
// (backend key prefix 'B') goes, so the files that used them lose their data.
func deleteChunkBodies(t *testing.T, storeDir string) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(storeDir).WithLogger(nil).WithNumVersionsToKeep(1))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.DropPrefix([]byte{'B'}); err != nil {
		t.Fatal(err)
	}
}

// fsck prints the problems it finds and exits 1, in both output formats.
func TestFsckFindsProblems(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	dir := td.mountVolume(t, "v", "mnt")
	writeFile(t, filepath.Join(dir, "precious"), strings.Repeat("data ", 1000))
	td.run(t, "unmount", dir).ok(t)
	td.run(t, "fsck").ok(t)
	td.stop(t)
	deleteChunkBodies(t, filepath.Join(td.root(), "store"))
	td.start(t)

	r := td.run(t, "fsck")
	if r.code != 1 {
		t.Fatalf("fsck of a damaged store exited %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "problem: ") || !strings.HasPrefix(lines[len(lines)-1], "store is NOT clean: ") {
		t.Errorf("fsck output:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "damaged: ") || !strings.Contains(r.stdout, "precious") {
		t.Errorf("fsck does not name the damaged file:\n%s", r.stdout)
	}

	r = td.run(t, "fsck", "--format", "json")
	var rep api.FsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("fsck json %q: %v", r.stdout, err)
	}
	if r.code != 1 || rep.Clean || len(rep.Problems) == 0 {
		t.Errorf("fsck --format json exited %d with %+v", r.code, rep)
	}
}
