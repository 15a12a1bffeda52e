package backend

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// at is a UTC time on the test's calendar: 2026-12-01 is a Tuesday (ISO week 49 starts on
// Monday 2026-11-30).
func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// autos are automatic snapshots created at the given times, named by them.
func autos(times ...string) []SnapshotInfo {
	var out []SnapshotInfo
	for _, s := range times {
		out = append(out, SnapshotInfo{Volume: "v", Name: AutoSnapshotName(at(s), time.Minute), CreatedAt: at(s), Auto: true})
	}
	return out
}

// every returns automatic snapshots from start, n of them, step apart.
func everyFrom(start string, step time.Duration, n int) []string {
	var out []string
	for i := range n {
		out = append(out, at(start).Add(time.Duration(i)*step).Format(time.RFC3339))
	}
	return out
}

func names(snaps []SnapshotInfo) []string {
	out := []string{}
	for _, s := range snaps {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

func autoNames(times ...string) []string { return names(autos(times...)) }

func TestPrunable(t *testing.T) {
	user := SnapshotInfo{Volume: "v", Name: "before-upgrade", CreatedAt: at("2026-01-01T00:00:00Z")}
	// A user snapshot from before schedules existed, named like the scheduler's: never pruned.
	oldAuto := SnapshotInfo{Volume: "v", Name: "auto-2020", CreatedAt: at("2020-01-01T00:00:00Z")}
	quarter := everyFrom("2026-12-01T10:00:00Z", 15*time.Minute, 9) // 10:00 .. 12:00
	sixHours := everyFrom("2026-12-01T00:00:00Z", 6*time.Hour, 16)  // Dec 1 00:00 .. Dec 4 18:00
	daily := everyFrom("2026-11-16T12:00:00Z", 24*time.Hour, 21)    // Mon Nov 16 .. Sun Dec 6
	plus2 := time.FixedZone("+02", 2*3600)
	local := func(s string) SnapshotInfo {
		return SnapshotInfo{Volume: "v", Name: "auto-" + s, CreatedAt: at(s).In(plus2), Auto: true}
	}
	tests := []struct {
		name   string
		policy SchedulePolicy
		snaps  []SnapshotInfo
		want   []string // pruned
	}{
		{"keep last 3 of 5", SchedulePolicy{Every: time.Hour, Keep: 3},
			autos(everyFrom("2026-12-01T10:00:00Z", time.Hour, 5)...),
			autoNames("2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z")},
		{"keep more than there are", SchedulePolicy{Every: time.Hour, Keep: 50},
			autos(everyFrom("2026-12-01T10:00:00Z", time.Hour, 5)...), []string{}},
		{"user snapshots untouched", SchedulePolicy{Every: time.Hour, Keep: 1},
			append(autos("2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"), user, oldAuto),
			autoNames("2026-12-01T10:00:00Z")},
		{"only user snapshots", SchedulePolicy{Every: time.Hour, Keep: 1},
			[]SnapshotInfo{user, oldAuto}, []string{}},
		{"hourly: newest of each of the last 2 hours", SchedulePolicy{Every: 15 * time.Minute, KeepHourly: 2},
			autos(quarter...), autoNames(quarter[:7]...)},
		{"hourly covers every hour with one", SchedulePolicy{Every: 15 * time.Minute, KeepHourly: 24},
			autos(quarter...), autoNames(quarter[0], quarter[1], quarter[2], quarter[4], quarter[5], quarter[6])},
		{"daily 3 of 4 days", SchedulePolicy{Every: 6 * time.Hour, KeepDaily: 3},
			autos(sixHours...),
			// kept: Dec 4 18:00, Dec 3 18:00, Dec 2 18:00
			names(slices.DeleteFunc(autos(sixHours...), func(s SnapshotInfo) bool {
				return s.CreatedAt.Hour() == 18 && s.CreatedAt.Day() >= 2
			}))},
		{"last 2 and daily 2 overlap", SchedulePolicy{Every: 6 * time.Hour, Keep: 2, KeepDaily: 2},
			autos(sixHours...),
			// kept: Dec 4 18:00 and 12:00 (last), Dec 3 18:00 (daily)
			names(slices.DeleteFunc(autos(sixHours...), func(s SnapshotInfo) bool {
				return s.CreatedAt.Day() == 4 && s.CreatedAt.Hour() >= 12 || s.CreatedAt.Day() == 3 && s.CreatedAt.Hour() == 18
			}))},
		{"weekly buckets are ISO weeks (Monday to Sunday)", SchedulePolicy{Every: 24 * time.Hour, KeepWeekly: 2},
			autos(daily...),
			// kept: Sun Dec 6 (week 49), Sun Nov 29 (week 48)
			names(slices.DeleteFunc(autos(daily...), func(s SnapshotInfo) bool {
				return s.CreatedAt.Weekday() == time.Sunday && s.CreatedAt.Day() != 22
			}))},
		{"monthly", SchedulePolicy{Every: 24 * time.Hour, KeepMonthly: 2},
			autos("2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z", "2026-02-20T00:00:00Z", "2026-03-03T00:00:00Z"),
			autoNames("2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z")},
		{"monthly and weekly keep different ones", SchedulePolicy{Every: 24 * time.Hour, KeepWeekly: 1, KeepMonthly: 2},
			autos(daily...),
			// kept: Dec 6 (weekly, December), Nov 30 (November's newest)
			names(slices.DeleteFunc(autos(daily...), func(s SnapshotInfo) bool {
				return s.CreatedAt.Day() == 6 || s.CreatedAt.Day() == 30
			}))},
		{"buckets are UTC days whatever the times' zone", SchedulePolicy{Every: time.Hour, KeepDaily: 2},
			[]SnapshotInfo{local("2026-12-01T21:30:00Z"), local("2026-12-01T23:30:00Z"), local("2026-12-02T00:30:00Z")},
			[]string{"auto-2026-12-01T21:30:00Z"}},
		{"equal times: the larger name is the newer", SchedulePolicy{Every: time.Hour, Keep: 1},
			[]SnapshotInfo{{Name: "auto-a", CreatedAt: at("2026-12-01T10:00:00Z"), Auto: true},
				{Name: "auto-b", CreatedAt: at("2026-12-01T10:00:00Z"), Auto: true}},
			[]string{"auto-a"}},
		{"no policy keeps everything", SchedulePolicy{}, autos(quarter...), []string{}},
		{"none at all", SchedulePolicy{Every: time.Hour, Keep: 1}, nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Prunable(tt.snaps)
			for _, s := range got {
				if !s.Auto {
					t.Fatalf("would prune user snapshot %s", s.Name)
				}
			}
			if g := names(got); !slices.Equal(g, tt.want) {
				t.Fatalf("pruned %v\nwant %v", g, tt.want)
			}
			// Pruning is idempotent: what is left is all kept.
			var left []SnapshotInfo
			for _, s := range tt.snaps {
				if !slices.ContainsFunc(got, func(p SnapshotInfo) bool { return p.Name == s.Name }) {
					left = append(left, s)
				}
			}
			if again := tt.policy.Prunable(left); len(again) != 0 {
				t.Fatalf("a second prune removes %v", names(again))
			}
		})
	}
}

func TestScheduleOptions(t *testing.T) {
	tests := []struct {
		opts map[string]string
		want SchedulePolicy
		err  string
	}{
		{map[string]string{"snapshot-every": "1h", "snapshot-keep": "24"}, SchedulePolicy{Every: time.Hour, Keep: 24}, ""},
		{map[string]string{"snapshot-every": "15m", "snapshot-keep-hourly": "24", "snapshot-keep-daily": "7",
			"snapshot-keep-weekly": "4", "snapshot-keep-monthly": "12"},
			SchedulePolicy{Every: 15 * time.Minute, KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12}, ""},
		{map[string]string{"snapshot-every": "1d", "snapshot-keep-daily": "7"}, SchedulePolicy{Every: 24 * time.Hour, KeepDaily: 7}, ""},
		{map[string]string{"snapshot-every": "2w", "snapshot-keep": "3"}, SchedulePolicy{Every: 14 * 24 * time.Hour, Keep: 3}, ""},
		{map[string]string{}, SchedulePolicy{}, ""},
		{map[string]string{"snapshot-every": "30s", "snapshot-keep": "1"}, SchedulePolicy{}, "every must be from 1m"},
		{map[string]string{"snapshot-every": "1h"}, SchedulePolicy{}, "at least one of keep"},
		{map[string]string{"snapshot-keep": "5"}, SchedulePolicy{}, "every is not given"},
		{map[string]string{"snapshot-every": "hourly", "snapshot-keep": "1"}, SchedulePolicy{}, `snapshot-every="hourly": a duration such as 15m`},
		{map[string]string{"snapshot-every": "1h", "snapshot-keep": "-1"}, SchedulePolicy{}, "a number of snapshots from 0"},
		{map[string]string{"snapshot-every": "1h", "snapshot-keep": "1", "snapshot-keep-yearly": "1"}, SchedulePolicy{}, `unknown option "snapshot-keep-yearly"`},
		{map[string]string{"snapshot-every": "400d", "snapshot-keep": "1"}, SchedulePolicy{}, "every must be from 1m to 366d"},
	}
	for _, tt := range tests {
		o, err := ParseVolumeOptions(tt.opts)
		if tt.err != "" {
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: error %v, want one with %q", tt.opts, err, tt.err)
			}
			continue
		}
		if err != nil || o.Schedule != tt.want {
			t.Errorf("%v: %+v, %v; want %+v", tt.opts, o.Schedule, err, tt.want)
		}
	}
}

func TestEveryFormat(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{time.Minute, "1m"}, {15 * time.Minute, "15m"}, {time.Hour, "1h"}, {90 * time.Minute, "1h30m"},
		{24 * time.Hour, "1d"}, {36 * time.Hour, "36h"}, {7 * 24 * time.Hour, "7d"}, {90 * time.Second, "1m30s"}} {
		if got := FormatEvery(tt.d); got != tt.want {
			t.Errorf("FormatEvery(%v) = %q, want %q", tt.d, got, tt.want)
		}
		if back, err := ParseEvery(tt.want); err != nil || back != tt.d {
			t.Errorf("ParseEvery(%q) = %v, %v; want %v", tt.want, back, err, tt.d)
		}
	}
}

func TestAutoSnapshotName(t *testing.T) {
	tm := time.Date(2026, 12, 1, 10, 0, 5, 0, time.FixedZone("+02", 7200))
	if got := AutoSnapshotName(tm, time.Hour); got != "auto-2026-12-01T0800Z" {
		t.Errorf("name %q", got)
	}
	if got := AutoSnapshotName(tm, time.Second); got != "auto-2026-12-01T080005Z" {
		t.Errorf("name with seconds %q", got)
	}
	if err := ValidateName(AutoSnapshotName(tm, time.Second)); err != nil {
		t.Error(err)
	}
}

// TestScheduleStore: the policy is stored with the volume (set, replaced, off), survives a
// reopen, goes with the volume, is not inherited by clones; only automatic snapshots are
// pruned; users cannot take auto- names; fsck knows the keys.
func TestScheduleStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustVolume(t, s, "data", map[string]string{"snapshot-every": "1h", "snapshot-keep": "2"})
	mustVolume(t, s, "plain", nil)
	want := SchedulePolicy{Every: time.Hour, Keep: 2}
	if sc, err := s.GetSchedule(ctx, "data"); err != nil || sc.Policy != want || !sc.LastAuto.IsZero() {
		t.Fatalf("GetSchedule: %+v, %v", sc, err)
	}
	if sc, err := s.GetSchedule(ctx, "plain"); err != nil || !sc.Policy.IsZero() {
		t.Fatalf("GetSchedule of an unscheduled volume: %+v, %v", sc, err)
	}
	if _, err := s.GetSchedule(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSchedule of no volume: %v", err)
	}
	if err := s.SetSchedule(ctx, "nope", want); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetSchedule of no volume: %v", err)
	}
	if err := s.SetSchedule(ctx, "plain", SchedulePolicy{Every: time.Second, Keep: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetSchedule every 1s: %v", err)
	}

	if _, err := s.CreateSnapshot(ctx, "data", "auto-mine"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("user snapshot named auto-: %v", err)
	}
	if _, err := s.CreateSnapshot(ctx, "data", "mine"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAutoSnapshot(ctx, "data", "mine2", at("2026-12-01T10:00:00Z")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("automatic snapshot without the prefix: %v", err)
	}
	base := at("2026-12-01T10:00:00Z")
	for i := range 4 {
		tm := base.Add(time.Duration(i) * time.Hour)
		sn, err := s.CreateAutoSnapshot(ctx, "data", AutoSnapshotName(tm, time.Hour), tm)
		if err != nil || !sn.Auto || !sn.CreatedAt.Equal(tm) {
			t.Fatalf("CreateAutoSnapshot: %+v, %v", sn, err)
		}
	}
	busy := AutoSnapshotName(base, time.Hour)
	pruned, err := s.PruneSnapshots(ctx, "data", func(n string) bool { return n == busy })
	if wantP := []string{AutoSnapshotName(base.Add(time.Hour), time.Hour)}; err != nil || !slices.Equal(pruned, wantP) {
		t.Fatalf("prune with %s busy: %v, %v; want %v", busy, pruned, err, wantP)
	}
	if pruned, err = s.PruneSnapshots(ctx, "data", nil); err != nil || !slices.Equal(pruned, []string{busy}) {
		t.Fatalf("prune: %v, %v", pruned, err)
	}
	if pruned, err = s.PruneSnapshots(ctx, "plain", nil); err != nil || len(pruned) != 0 {
		t.Fatalf("prune of an unscheduled volume: %v, %v", pruned, err)
	}
	snaps, err := s.ListSnapshots(ctx, "data")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sn := range snaps {
		got = append(got, sn.Name+map[bool]string{true: " auto", false: ""}[sn.Auto])
	}
	if w := []string{"auto-2026-12-01T1200Z auto", "auto-2026-12-01T1300Z auto", "mine"}; !slices.Equal(slices.Sorted(slices.Values(got)), w) {
		t.Fatalf("snapshots %v, want %v", got, w)
	}
	fsckClean(t, s)

	// Restart: the policy and the automatic flags are in the store.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, dir, Options{GCInterval: -1}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, err := s.Schedules(ctx)
	if err != nil || len(all) != 1 || all[0].Volume != "data" || all[0].Policy != want || !all[0].LastAuto.Equal(base.Add(3*time.Hour)) {
		t.Fatalf("Schedules after reopen: %+v, %v", all, err)
	}

	// A clone does not inherit the schedule; a replaced policy prunes by the new rules.
	if _, err := s.CreateVolume(ctx, "copy", VolumeOptions{From: "data@auto-2026-12-01T1300Z"}); err != nil {
		t.Fatal(err)
	}
	if sc, err := s.GetSchedule(ctx, "copy"); err != nil || !sc.Policy.IsZero() {
		t.Fatalf("clone's schedule: %+v, %v", sc, err)
	}
	if err := s.SetSchedule(ctx, "data", SchedulePolicy{Every: 15 * time.Minute, Keep: 1}); err != nil {
		t.Fatal(err)
	}
	if pruned, err = s.PruneSnapshots(ctx, "data", nil); err != nil || !slices.Equal(pruned, []string{"auto-2026-12-01T1200Z"}) {
		t.Fatalf("prune after keep 1: %v, %v", pruned, err)
	}
	if had, err := s.RemoveSchedule(ctx, "data"); err != nil || !had {
		t.Fatalf("RemoveSchedule: %v %v", had, err)
	}
	if had, err := s.RemoveSchedule(ctx, "data"); err != nil || had {
		t.Fatalf("RemoveSchedule again: %v %v", had, err)
	}
	if all, err := s.Schedules(ctx); err != nil || len(all) != 0 {
		t.Fatalf("Schedules after off: %+v, %v", all, err)
	}

	// The policy goes with its volume, also when the snapshots are kept.
	if err := s.SetSchedule(ctx, "data", want); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSchedule(ctx, "copy", want); err != nil {
		t.Fatal(err)
	}
	kept, err := s.DeleteVolumeKeepSnapshots(ctx, "data")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(ctx, "copy"); err != nil {
		t.Fatal(err)
	}
	if all, err := s.Schedules(ctx); err != nil || len(all) != 0 {
		t.Fatalf("Schedules after the volumes went: %+v, %v", all, err)
	}
	if err := s.SetSchedule(ctx, kept, want); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetSchedule of a removed volume's record: %v", err)
	}
	fsckClean(t, s)
}

// TestFsckSchedules: fsck reports a policy that does not decode and one of a missing volume,
// and repair deletes the latter.
func TestFsckSchedules(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	mustVolume(t, s, "data", nil)
	if err := s.update(ctx, func(t *tx) error {
		if err := t.set(scheduleKey("data"), []byte{scheduleVersion, 1, 2}); err != nil {
			return err
		}
		return t.set(scheduleKey("gone"), encodeSchedule(SchedulePolicy{Every: time.Hour, Keep: 1}))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Schedules(ctx); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Schedules with a bad policy: %v", err)
	}
	rep, err := s.Fsck(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(rep.Problems, "\n")
	for _, w := range []string{`schedule of volume "data": data integrity error`, `schedule of volume "gone", which does not exist`} {
		if !strings.Contains(joined, w) {
			t.Errorf("fsck problems %q lack %q", rep.Problems, w)
		}
	}
	if !slices.ContainsFunc(rep.Repaired, func(r string) bool { return strings.Contains(r, `"gone"`) }) {
		t.Errorf("repaired %q", rep.Repaired)
	}
	rep, err = s.Fsck(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], `"data"`) {
		t.Fatalf("after repair: %q", rep.Problems)
	}
}

// FuzzScheduleEncoding: any stored value either decodes to a valid policy that encodes back to
// the same bytes, or is ErrCorrupt; never a panic.
func FuzzScheduleEncoding(f *testing.F) {
	f.Add(encodeSchedule(SchedulePolicy{Every: time.Hour, Keep: 24}))
	f.Add(encodeSchedule(SchedulePolicy{Every: 15 * time.Minute, KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12}))
	f.Add(encodeSchedule(SchedulePolicy{Every: time.Second, Keep: 1}))
	f.Add(encodeSchedule(SchedulePolicy{Every: time.Hour}))
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		p, err := decodeSchedule(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode %x: %v is not ErrCorrupt", v, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decode %x gave an invalid %+v: %v", v, p, err)
		}
		if back := encodeSchedule(p); !bytes.Equal(back, v) {
			t.Fatalf("decode %x = %+v encodes to %x", v, p, back)
		}
	})
}

// FuzzScheduleOptions: the -o options of a schedule either parse to a valid policy that their
// canonical spelling parses back to, or fail with ErrInvalid naming an option.
func FuzzScheduleOptions(f *testing.F) {
	f.Add("1h", "24", "snapshot-keep-daily", "7")
	f.Add("15m", "0", "snapshot-keep-weekly", "4")
	f.Add("1d", "", "snapshot-keep-monthly", "12")
	f.Add("59s", "1", "snapshot-keep-hourly", "x")
	f.Add("1.5h", "99999999999", "snapshot-every", "2w")
	f.Fuzz(func(t *testing.T, every, keep, k, v string) {
		in := map[string]string{"snapshot-every": every, "snapshot-keep": keep, k: v}
		o, err := ParseVolumeOptions(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "snapshot-") && !strings.Contains(err.Error(), k) {
				t.Fatalf("%q: error %v", in, err)
			}
			return
		}
		p := o.Schedule
		if err := p.Validate(); err != nil {
			t.Fatalf("%q: accepted an invalid %+v: %v", in, p, err)
		}
		canon := map[string]string{"snapshot-every": FormatEvery(p.Every)}
		for _, kr := range p.keeps() {
			canon["snapshot-"+kr.name] = strconv.Itoa(*kr.n)
		}
		back, err := ParseVolumeOptions(canon)
		if err != nil || back.Schedule != p {
			t.Fatalf("%+v does not round-trip through %q: %+v, %v", p, canon, back.Schedule, err)
		}
		if got, err := decodeSchedule(encodeSchedule(p)); err != nil || got != p {
			t.Fatalf("%+v does not round-trip through its encoding: %+v, %v", p, got, err)
		}
	})
}

// BenchmarkPrunable: retention over a year of hourly automatic snapshots with every rule set
// (what a prune after each snapshot computes).
func BenchmarkPrunable(b *testing.B) {
	snaps := autos(everyFrom("2026-01-01T00:00:00Z", time.Hour, 365*24)...)
	p := SchedulePolicy{Every: time.Hour, Keep: 48, KeepHourly: 24, KeepDaily: 30, KeepWeekly: 8, KeepMonthly: 12}
	b.ResetTimer()
	for b.Loop() {
		if len(p.Prunable(snaps)) == 0 {
			b.Fatal("nothing to prune")
		}
	}
}
