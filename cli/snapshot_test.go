package cli

import (
	"encoding/json"
	"testing"

	"github.com/fusevol/fusevol/plugin/api"
)

func TestSnapshotCommands(t *testing.T) {
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	td.run(t, "volume", "create", "w").ok(t)

	if r := td.run(t, "snapshot", "create", "v", "s1").ok(t); r.stdout != "v@s1\n" {
		t.Errorf("snapshot create printed %q", r.stdout)
	}
	td.run(t, "snapshot", "create", "v", "s2").ok(t)
	td.run(t, "snapshot", "create", "w", "daily").ok(t)
	td.run(t, "snapshot", "create", "v", "s1").fails(t, 1, "s1", "exists")
	td.run(t, "snapshot", "create", "nosuch", "s").fails(t, 1, "nosuch", "not found")

	r := td.run(t, "snapshot", "ls", "v").ok(t)
	columnsAligned(t, r.stdout)
	golden(t, "snapshot_ls_volume", normalise(r.stdout))
	r = td.run(t, "snapshot", "ls").ok(t)
	golden(t, "snapshot_ls_all", normalise(r.stdout))
	r = td.run(t, "snapshot", "ls", "--format", "json").ok(t)
	golden(t, "snapshot_ls_json", normalise(r.stdout))
	var snaps []api.Snapshot
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || len(snaps) != 3 {
		t.Errorf("snapshot ls json: %v %+v", err, snaps)
	}
	td.run(t, "snapshot", "ls", "nosuch").fails(t, 1, "nosuch", "not found")

	if r := td.run(t, "snapshot", "rm", "v", "s2").ok(t); r.stdout != "v@s2\n" {
		t.Errorf("snapshot rm printed %q", r.stdout)
	}
	td.run(t, "snapshot", "rm", "v", "s2").fails(t, 1, "s2", "not found")
	if r := td.run(t, "snapshot", "ls", "--format", "json", "v").ok(t); !json.Valid([]byte(r.stdout)) {
		t.Errorf("invalid json %q", r.stdout)
	} else if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || len(snaps) != 1 || snaps[0].Name != "s1" {
		t.Errorf("after rm, v has snapshots %+v", snaps)
	}

	// Nothing changed since s1: the diff is empty, restore works on an unmounted volume.
	if r := td.run(t, "snapshot", "diff", "v", "s1").ok(t); r.stdout != "" {
		t.Errorf("diff of an unchanged volume: %q", r.stdout)
	}
	r = td.run(t, "snapshot", "diff", "--format", "json", "v", "s1").ok(t)
	golden(t, "snapshot_diff_empty_json", r.stdout)
	td.run(t, "snapshot", "diff", "v", "nosuch").fails(t, 1, "nosuch")
	if r := td.run(t, "snapshot", "restore", "v", "s1").ok(t); r.stdout != "restored v to v@s1\n" {
		t.Errorf("restore printed %q", r.stdout)
	}
	td.run(t, "snapshot", "restore", "v", "nosuch").fails(t, 1, "nosuch", "not found")
}
