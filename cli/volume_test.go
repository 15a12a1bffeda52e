package cli

import (
	"encoding/json"
	"strings"
	"testing"

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
