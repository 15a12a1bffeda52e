package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/fusevol/fusevol/backend"
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

// TestSnapshotListRemoved: snapshots kept from a removed volume are listed, marked as removed,
// by snapshot ls, snapshot ls NAME (the removed volume's name, also once a new volume of that
// name exists) and in JSON with removed_at; volume rm --with-snapshots of the new volume takes
// its own snapshots only.
func TestSnapshotListRemoved(t *testing.T) {
	td := startDaemon(t)
	td.run(t, "volume", "create", "data").ok(t)
	td.run(t, "snapshot", "create", "data", "before").ok(t)
	td.run(t, "volume", "create", "logs").ok(t)
	td.run(t, "snapshot", "create", "logs", "daily").ok(t)
	td.run(t, "volume", "rm", "data").ok(t)

	var snaps []api.Snapshot
	if r := td.run(t, "snapshot", "ls", "--format", "json", "data").ok(t); json.Unmarshal([]byte(r.stdout), &snaps) != nil ||
		len(snaps) != 1 || snaps[0].RemovedAt == nil || !backend.IsRemovedName(snaps[0].Volume) {
		t.Fatalf("snapshot ls --format json data after volume rm: %s", r.stdout)
	}
	kept := snaps[0].Volume
	td.run(t, "volume", "create", "data").ok(t)
	td.run(t, "snapshot", "create", "data", "after").ok(t)

	tests := []struct {
		args []string
		want [][]string // fields of each row after the header
	}{
		{nil, [][]string{{"data", "after", "no"}, {kept, "(removed)", "before", "no"}, {"logs", "daily", "no"}}},
		{[]string{"data"}, [][]string{{"data", "after", "no"}, {kept, "(removed)", "before", "no"}}},
		{[]string{"logs"}, [][]string{{"logs", "daily", "no"}}},
		{[]string{kept}, [][]string{{kept, "(removed)", "before", "no"}}},
	}
	for _, tt := range tests {
		r := td.run(t, append([]string{"snapshot", "ls"}, tt.args...)...).ok(t)
		columnsAligned(t, r.stdout)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if strings.Join(strings.Fields(lines[0]), " ") != "VOLUME NAME AUTO CREATED" {
			t.Errorf("snapshot ls %v: header %q", tt.args, lines[0])
		}
		var got [][]string
		for _, l := range lines[1:] {
			f := strings.Fields(normalise(l))
			got = append(got, f[:len(f)-1]) // without CREATED (<AGO>)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("snapshot ls %v:\n%s\nrows %v, want %v", tt.args, r.stdout, got, tt.want)
		}
	}

	td.run(t, "volume", "rm", "--with-snapshots", "data").ok(t)
	r := td.run(t, "snapshot", "ls", "--format", "json").ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || len(snaps) != 2 {
		t.Errorf("after volume rm --with-snapshots data: %s", r.stdout)
	}
}
