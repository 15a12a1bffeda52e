package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/api"
)

func TestVolumeCommands(t *testing.T) {
	td := startDaemon(t)

	r := td.run(t, "volume", "ls").ok(t)
	golden(t, "volume_ls_empty", r.stdout)
	if r := td.run(t, "volume", "ls", "--format", "json").ok(t); r.stdout != "[]\n" {
		t.Errorf("empty ls json: %q", r.stdout)
	}

	// Options are explicit wherever the golden files show them, so a change of the defaults
	// (the chunk size is chosen by benchmark) does not break these tests.
	if r := td.run(t, "volume", "create", "-o", "chunk-size=256KiB", "-o", "compression=s2", "alpha").ok(t); r.stdout != "alpha\n" {
		t.Errorf("create printed %q", r.stdout)
	}
	td.run(t, "volume", "create", "-o", "size=1GiB", "-o", "compression=zstd", "-o", "mode=0700",
		"-o", "uid=1000", "-o", "gid=1000", "-o", "chunk-size=1MiB", "beta").ok(t)
	td.run(t, "volume", "create", "alpha").fails(t, 1, "alpha", "exists")
	td.run(t, "volume", "create", "-o", "colour=red", "gamma").fails(t, 1, "colour")
	td.run(t, "volume", "create", "-o", "size=lots", "gamma").fails(t, 1, "size", "lots")

	r = td.run(t, "volume", "ls").ok(t)
	columnsAligned(t, r.stdout)
	golden(t, "volume_ls", normalise(r.stdout))
	r = td.run(t, "volume", "ls", "--format", "json").ok(t)
	golden(t, "volume_ls_json", normalise(r.stdout))
	var vols []api.Volume
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil || len(vols) != 2 || vols[1].Options.Size != 1<<30 {
		t.Errorf("ls json does not decode to the two volumes (err %v): %+v", err, vols)
	}
	if r := td.run(t, "volume", "ls", "-q").ok(t); r.stdout != "alpha\nbeta\n" {
		t.Errorf("ls -q: %q", r.stdout)
	}

	td.run(t, "snapshot", "create", "beta", "before").ok(t)
	r = td.run(t, "volume", "inspect", "beta").ok(t)
	golden(t, "volume_inspect", normalise(r.stdout))
	r = td.run(t, "volume", "inspect", "--format", "json", "alpha", "beta").ok(t)
	golden(t, "volume_inspect_json", normalise(r.stdout))

	// One bad name among good ones: the good ones are still shown, the bad one is one line, exit 1.
	r = td.run(t, "volume", "inspect", "alpha", "nosuch")
	r.fails(t, 1, "nosuch", "not found")
	if !strings.HasPrefix(r.stdout, "Name:") || !strings.Contains(r.stdout, "alpha") {
		t.Errorf("inspect alpha nosuch printed:\n%s", r.stdout)
	}

	r = td.run(t, "volume", "rm", "alpha", "nosuch")
	r.fails(t, 1, "nosuch", "not found")
	if r.stdout != "alpha\n" {
		t.Errorf("rm printed %q", r.stdout)
	}
	if r := td.run(t, "volume", "ls", "-q").ok(t); r.stdout != "beta\n" {
		t.Errorf("ls -q after rm: %q", r.stdout)
	}
	// Removing a volume keeps its snapshots; --with-snapshots removes them too.
	td.run(t, "volume", "rm", "beta").ok(t)
	if r := td.run(t, "snapshot", "ls").ok(t); !strings.Contains(r.stdout, "beta") {
		t.Errorf("snapshots of a removed volume are gone:\n%s", r.stdout)
	}
	td.run(t, "volume", "create", "gamma").ok(t)
	td.run(t, "snapshot", "create", "gamma", "s1").ok(t)
	td.run(t, "volume", "rm", "--with-snapshots", "gamma").ok(t)
	if r := td.run(t, "snapshot", "ls").ok(t); strings.Contains(r.stdout, "gamma") {
		t.Errorf("volume rm --with-snapshots left snapshots:\n%s", r.stdout)
	}
}

// Bad names get one clear line naming the name, and create nothing.
func TestBadNames(t *testing.T) {
	td := startDaemon(t)
	td.run(t, "volume", "create", "good").ok(t)
	for _, name := range []string{"bad/name", ".hidden", "a b", "ünïcode", strings.Repeat("x", 256), "", "x@y"} {
		t.Run(name, func(t *testing.T) {
			td.run(t, "volume", "create", name).fails(t, 1, `"`+name+`"`)
			td.run(t, "snapshot", "create", "good", name).fails(t, 1, `"`+name+`"`)
			td.run(t, "volume", "create", "-o", "from=good@"+name, "clone").fails(t, 1)
		})
	}
	if r := td.run(t, "volume", "ls", "-q").ok(t); r.stdout != "good\n" {
		t.Errorf("bad names created volumes: %q", r.stdout)
	}
	if r := td.run(t, "snapshot", "ls", "--format", "json").ok(t); r.stdout != "[]\n" {
		t.Errorf("bad names created snapshots: %q", r.stdout)
	}
}

// volume set changes a mounted volume's quota: statfs of the mount shows it at once; a size
// below the usage is refused naming the usage; bad options are one clear line.
func TestVolumeSet(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t)
	td.run(t, "volume", "create", "-o", "size=1MiB", "v").ok(t)
	dir := td.mountVolume(t, "v", "mnt")
	writeFile(t, filepath.Join(dir, "f"), strings.Repeat("x", 600<<10))
	total := func() int64 {
		t.Helper()
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize
	}
	if got := total(); got != 1<<20 {
		t.Fatalf("statfs total %d before, want 1 MiB", got)
	}
	if r := td.run(t, "volume", "set", "-o", "size=2GiB", "v").ok(t); r.stdout != "v: quota 2 GiB, compression none\n" {
		t.Errorf("set printed %q", r.stdout)
	}
	if got := total(); got != 2<<30 {
		t.Fatalf("statfs total %d after set size=2GiB, want 2 GiB", got)
	}
	if r := td.run(t, "volume", "inspect", "v").ok(t); !strings.Contains(r.stdout, "2 GiB") {
		t.Errorf("inspect after set:\n%s", r.stdout)
	}
	td.run(t, "volume", "set", "-o", "size=100KiB", "v").fails(t, 1, "uses 614400 bytes (600.0 KiB), more than a quota of 102400 bytes")
	td.run(t, "volume", "set", "-o", "colour=red", "v").fails(t, 1, `unknown option "colour"`, "compression, size")
	td.run(t, "volume", "set", "-o", "chunk-size=1MiB", "v").fails(t, 1, "chunk-size is not settable")
	td.run(t, "volume", "set", "-o", "size=1GiB", "v@s").fails(t, 1, "snapshots are read-only")
	td.run(t, "volume", "set", "-o", "size=1GiB", "nosuch").fails(t, 1, "nosuch", "not found")
	td.run(t, "volume", "set", "v").fails(t, 2, "at least one -o")
	td.run(t, "volume", "set", "-o", "size=1GiB", "v", "w").fails(t, 2, "exactly one NAME")
	if got := total(); got != 2<<30 {
		t.Fatalf("statfs total %d after refused sets, want 2 GiB", got)
	}
	if r := td.run(t, "volume", "set", "-o", "size=none", "-o", "compression=zstd", "v").ok(t); r.stdout != "v: quota none, compression zstd\n" {
		t.Errorf("set printed %q", r.stdout)
	}
}
