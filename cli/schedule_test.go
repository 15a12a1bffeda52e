package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/plugin/api"
)

// TestSnapshotSchedule: snapshot schedule shows, sets (replacing), refuses bad flags, turns
// off; a schedule's first snapshot comes at once (no automatic snapshot covers the current
// slot) and snapshot ls marks it AUTO; users cannot name snapshots auto-...; -o snapshot-*
// at volume create sets one.
func TestSnapshotSchedule(t *testing.T) {
	td := startDaemon(t)
	td.run(t, "volume", "create", "data").ok(t)
	td.run(t, "volume", "create", "-o", "snapshot-every=1h", "-o", "snapshot-keep=24", "logs").ok(t)

	if r := td.run(t, "snapshot", "schedule", "data").ok(t); r.stdout != "data: no snapshot schedule\n" {
		t.Errorf("schedule of an unscheduled volume: %q", r.stdout)
	}
	r := td.run(t, "snapshot", "schedule", "logs").ok(t)
	for _, want := range []string{"volume:  logs\n", "every:   1h\n", "keep:    24 last\n", "next:    "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("schedule of logs lacks %q:\n%s", want, r.stdout)
		}
	}

	if r := td.run(t, "volume", "inspect", "logs").ok(t); !strings.Contains(r.stdout, "Schedule:     every 1h, keep 24 last\n") {
		t.Errorf("volume inspect of a scheduled volume:\n%s", r.stdout)
	}
	var v []api.Volume
	if r := td.run(t, "volume", "inspect", "--format", "json", "logs").ok(t); json.Unmarshal([]byte(r.stdout), &v) != nil ||
		len(v) != 1 || v[0].Schedule == nil || v[0].Schedule.Every != "1h" || v[0].Schedule.Keep != 24 {
		t.Errorf("volume inspect json of a scheduled volume: %s", r.stdout)
	}

	r = td.run(t, "snapshot", "schedule", "--every", "15m", "--keep", "96", "--keep-daily", "7", "--keep-weekly", "4", "data").ok(t)
	if !strings.Contains(r.stdout, "every:   15m\n") || !strings.Contains(r.stdout, "keep:    96 last, 7 daily, 4 weekly\n") {
		t.Errorf("schedule set printed:\n%s", r.stdout)
	}
	var sc api.Schedule
	r = td.run(t, "snapshot", "schedule", "--format", "json", "data").ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || sc.Every != "15m" || sc.Keep != 96 ||
		sc.KeepDaily != 7 || sc.KeepWeekly != 4 || sc.KeepHourly != 0 || sc.Next == nil {
		t.Fatalf("schedule json %q: %+v %v", r.stdout, sc, err)
	}
	// Flags replace the whole schedule.
	td.run(t, "snapshot", "schedule", "--every", "1d", "--keep-monthly", "12", "data").ok(t)
	r = td.run(t, "snapshot", "schedule", "data").ok(t)
	if !strings.Contains(r.stdout, "every:   1d\n") || !strings.Contains(r.stdout, "keep:    12 monthly\n") {
		t.Errorf("schedule after replacing:\n%s", r.stdout)
	}

	// The first automatic snapshot is taken at once.
	var auto string
	for deadline := time.Now().Add(30 * time.Second); auto == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var snaps []api.Snapshot
		r := td.run(t, "snapshot", "ls", "--format", "json", "data").ok(t)
		if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			if s.Auto {
				auto = s.Name
			}
		}
	}
	// Taken for the 15m schedule's current slot, or, when the scheduler passed only after the
	// replacement, for the daily one's (which the first covers: no second one today).
	if !regexp.MustCompile(`^auto-\d{4}-\d\d-\d\dT\d\d(00|15|30|45)Z$`).MatchString(auto) {
		t.Fatalf("automatic snapshot %q, want auto-YYYY-MM-DDTHHMMZ on a quarter hour", auto)
	}
	td.run(t, "snapshot", "create", "data", "mine").ok(t)
	r = td.run(t, "snapshot", "ls", "data").ok(t)
	columnsAligned(t, r.stdout)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	rows := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows[f[1]] = f[2]
	}
	if rows[auto] != "yes" || rows["mine"] != "no" {
		t.Errorf("snapshot ls AUTO column:\n%s", r.stdout)
	}

	for _, tt := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--every", "30s", "--keep", "1", "data"}, 1, []string{"every must be from 1m"}},
		{[]string{"--every", "1h", "data"}, 1, []string{"at least one of keep"}},
		{[]string{"--keep", "5", "data"}, 1, []string{"every"}},
		{[]string{"--every", "sometimes", "--keep", "1", "data"}, 1, []string{"a duration such as 15m"}},
		{[]string{"--every", "1h", "--keep", "-2", "data"}, 1, []string{"keep must be from 0"}},
		{[]string{"--every", "1h", "--keep", "1", "nosuch"}, 1, []string{"nosuch", "not found"}},
		{[]string{"nosuch"}, 1, []string{"nosuch", "not found"}},
		{[]string{"--off", "--keep", "1", "data"}, 2, []string{"--off"}},
		{[]string{}, 2, []string{"one VOLUME"}},
		{[]string{"a", "b"}, 2, []string{"one VOLUME"}},
	} {
		td.run(t, append([]string{"snapshot", "schedule"}, tt.args...)...).fails(t, tt.code, tt.want...)
	}
	td.run(t, "snapshot", "create", "data", "auto-2026-12-01T1000Z").fails(t, 1, "reserved for scheduled snapshots")
	td.run(t, "volume", "create", "-o", "snapshot-every=1h", "x").fails(t, 1, "at least one of keep")

	if r := td.run(t, "snapshot", "schedule", "--off", "data").ok(t); r.stdout != "data: no snapshot schedule\n" {
		t.Errorf("schedule --off printed %q", r.stdout)
	}
	if r := td.run(t, "snapshot", "schedule", "data").ok(t); r.stdout != "data: no snapshot schedule\n" {
		t.Errorf("schedule after --off: %q", r.stdout)
	}
	// The automatic snapshot stays, a snapshot like any other now.
	if r := td.run(t, "snapshot", "ls", "data").ok(t); !strings.Contains(r.stdout, auto) {
		t.Errorf("automatic snapshot gone after --off:\n%s", r.stdout)
	}
}
