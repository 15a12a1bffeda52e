package plugin

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// fakeClock is the scheduler's clock and timer source in tests.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	waits  []time.Duration // what after was asked for, in order
	fire   chan time.Time  // after's channel: the test fires it
	logBuf strings.Builder
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	return c.fire
}

// fakeSchedules is a store of schedules whose LastAuto follows the snapshots taken.
type fakeSchedules struct {
	mu     sync.Mutex
	scheds map[string]backend.Schedule
	taken  []string // volume@slot
	fail   map[string]bool
}

func (f *fakeSchedules) Schedules(context.Context) ([]backend.Schedule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []backend.Schedule
	for _, sc := range f.scheds {
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b backend.Schedule) int { return strings.Compare(a.Volume, b.Volume) })
	return out, nil
}

func (f *fakeSchedules) take(_ context.Context, vol string, slot, now time.Time, every time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[vol] {
		return errors.New("no space left on device")
	}
	f.taken = append(f.taken, vol+"@"+backend.AutoSnapshotName(slot, every))
	sc := f.scheds[vol]
	sc.LastAuto = now
	f.scheds[vol] = sc
	return nil
}

func newFakeScheduler(clock *fakeClock, src *fakeSchedules) *scheduler {
	return &scheduler{src: src, take: src.take, now: clock.now, after: clock.after, maxSleep: 24 * time.Hour,
		log: slog.New(slog.NewTextHandler(&clock.logBuf, nil)), failed: map[string]time.Time{}}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestSchedulerPasses drives pass with a fake clock: what is taken when, and when the next pass
// is due.
func TestSchedulerPasses(t *testing.T) {
	hourly := backend.SchedulePolicy{Every: time.Hour, Keep: 24}
	quarter := backend.SchedulePolicy{Every: 15 * time.Minute, Keep: 4}
	type step struct {
		at        string   // the clock at the pass
		wantTaken []string // snapshots taken by this pass
		wantNext  string   // the next due time it returns
	}
	tests := []struct {
		name   string
		scheds map[string]backend.Schedule
		fail   map[string]bool
		steps  []step
	}{
		{"first start takes one at once, named by the slot", map[string]backend.Schedule{"a": {Volume: "a", Policy: hourly}},
			nil, []step{
				{"2026-12-01T10:17:00Z", []string{"a@auto-2026-12-01T1000Z"}, "2026-12-01T11:00:00Z"},
				{"2026-12-01T10:59:59Z", nil, "2026-12-01T11:00:00Z"},
				{"2026-12-01T11:00:00Z", []string{"a@auto-2026-12-01T1100Z"}, "2026-12-01T12:00:00Z"},
			}},
		{"catch-up after 3 days down is one snapshot", map[string]backend.Schedule{
			"a": {Volume: "a", Policy: hourly, LastAuto: utc("2026-11-28T09:00:00Z")}},
			nil, []step{
				{"2026-12-01T09:30:00Z", []string{"a@auto-2026-12-01T0900Z"}, "2026-12-01T10:00:00Z"},
				{"2026-12-01T09:31:00Z", nil, "2026-12-01T10:00:00Z"},
				{"2026-12-01T10:00:01Z", []string{"a@auto-2026-12-01T1000Z"}, "2026-12-01T11:00:00Z"},
			}},
		{"a slot already covered is not taken again", map[string]backend.Schedule{
			"a": {Volume: "a", Policy: hourly, LastAuto: utc("2026-12-01T10:00:02Z")}},
			nil, []step{{"2026-12-01T10:30:00Z", nil, "2026-12-01T11:00:00Z"}}},
		{"the next pass is the soonest volume's", map[string]backend.Schedule{
			"a": {Volume: "a", Policy: hourly, LastAuto: utc("2026-12-01T10:00:00Z")},
			"b": {Volume: "b", Policy: quarter, LastAuto: utc("2026-12-01T10:15:00Z")}},
			nil, []step{
				{"2026-12-01T10:20:00Z", nil, "2026-12-01T10:30:00Z"},
				{"2026-12-01T10:30:00Z", []string{"b@auto-2026-12-01T1030Z"}, "2026-12-01T10:45:00Z"},
				{"2026-12-01T11:00:00Z", []string{"a@auto-2026-12-01T1100Z", "b@auto-2026-12-01T1100Z"}, "2026-12-01T11:15:00Z"},
			}},
		{"a failing volume is retried at its next slot, the others go on", map[string]backend.Schedule{
			"a": {Volume: "a", Policy: hourly}, "b": {Volume: "b", Policy: hourly}},
			map[string]bool{"a": true}, []step{
				{"2026-12-01T10:00:00Z", []string{"b@auto-2026-12-01T1000Z"}, "2026-12-01T11:00:00Z"},
				{"2026-12-01T10:10:00Z", nil, "2026-12-01T11:00:00Z"}, // not retried within the slot
				{"2026-12-01T11:00:00Z", []string{"b@auto-2026-12-01T1100Z"}, "2026-12-01T12:00:00Z"},
			}},
		{"without schedules nothing is due", nil, nil, []step{{"2026-12-01T10:00:30Z", nil, ""}}},
		{"a daily schedule runs at midnight UTC", map[string]backend.Schedule{
			"a": {Volume: "a", Policy: backend.SchedulePolicy{Every: 24 * time.Hour, KeepDaily: 7}, LastAuto: utc("2026-12-01T00:00:05Z")}},
			nil, []step{
				{"2026-12-01T23:59:30Z", nil, "2026-12-02T00:00:00Z"},
				{"2026-12-02T00:00:00Z", []string{"a@auto-2026-12-02T0000Z"}, "2026-12-03T00:00:00Z"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSchedules{scheds: map[string]backend.Schedule{}, fail: tt.fail}
			for k, v := range tt.scheds {
				src.scheds[k] = v
			}
			clock := &fakeClock{}
			s := newFakeScheduler(clock, src)
			for _, st := range tt.steps {
				clock.set(utc(st.at))
				before := len(src.taken)
				next := s.pass(context.Background())
				if got := src.taken[before:]; !slices.Equal(got, st.wantTaken) {
					t.Fatalf("at %s took %v, want %v", st.at, got, st.wantTaken)
				}
				var want time.Time
				if st.wantNext != "" {
					want = utc(st.wantNext)
				}
				if !next.Equal(want) {
					t.Fatalf("at %s next pass %s, want %s", st.at, next.UTC().Format(time.RFC3339), st.wantNext)
				}
			}
			if tt.fail != nil && !strings.Contains(clock.logBuf.String(), "automatic snapshot failed") {
				t.Fatalf("failure not logged: %s", clock.logBuf.String())
			}
		})
	}
}

// TestSchedulerRun: the loop waits for the next due time through the timer source, passes when
// poked, and returns when its context ends.
func TestSchedulerRun(t *testing.T) {
	clock := &fakeClock{t: utc("2026-12-01T10:20:00Z"), fire: make(chan time.Time)}
	src := &fakeSchedules{scheds: map[string]backend.Schedule{
		"a": {Volume: "a", Policy: backend.SchedulePolicy{Every: time.Hour, Keep: 2}, LastAuto: utc("2026-12-01T10:00:00Z")}}}
	s := newFakeScheduler(clock, src)
	wake := make(chan struct{})
	s.wake = wake
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	waitWaits := func(n int) []time.Duration {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			clock.mu.Lock()
			w := slices.Clone(clock.waits)
			clock.mu.Unlock()
			if len(w) >= n {
				return w
			}
		}
		t.Fatalf("the loop did not wait %d times", n)
		return nil
	}
	if w := waitWaits(1); w[0] != 40*time.Minute {
		t.Fatalf("first wait %v, want 40m (to 11:00)", w[0])
	}
	clock.set(utc("2026-12-01T11:00:00Z"))
	clock.fire <- clock.now()
	if w := waitWaits(2); w[1] != time.Hour {
		t.Fatalf("second wait %v, want 1h", w[1])
	}
	src.mu.Lock()
	src.scheds["b"] = backend.Schedule{Volume: "b", Policy: backend.SchedulePolicy{Every: 15 * time.Minute, Keep: 1}}
	src.mu.Unlock()
	wake <- struct{}{}
	if w := waitWaits(3); w[2] != 15*time.Minute {
		t.Fatalf("wait after the poke %v, want 15m", w[2])
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if want := []string{"a@auto-2026-12-01T1100Z", "b@auto-2026-12-01T1100Z"}; !slices.Equal(src.taken, want) {
		t.Fatalf("taken %v, want %v", src.taken, want)
	}
}

// TestSchedulerWithStore runs three days of an hourly schedule on a real store with a fake
// clock, then three days of downtime: retention keeps what the policy says, user snapshots
// stay, catch-up is one snapshot.
func TestSchedulerWithStore(t *testing.T) {
	ctx := context.Background()
	d, err := NewDaemon(Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := backend.Open(ctx, filepath.Join(d.cfg.Root, "store"), backend.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d.store = st
	opts, err := backend.ParseVolumeOptions(map[string]string{"snapshot-every": "1h", "snapshot-keep": "3", "snapshot-keep-daily": "2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVolume(ctx, "data", opts); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSnapshot(ctx, "data", "mine"); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	s := &scheduler{src: st, take: d.autoSnapshot, now: clock.now, after: clock.after, maxSleep: time.Hour,
		log: d.log, failed: map[string]time.Time{}}
	start := utc("2026-12-01T00:05:00Z")
	for m := 0; m < 3*24*60; m += 10 {
		clock.set(start.Add(time.Duration(m) * time.Minute))
		s.pass(ctx)
	}
	list := func() []string {
		snaps, err := st.ListSnapshots(ctx, "data")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, sn := range snaps {
			if !sn.Auto {
				out = append(out, sn.Name+" (user)")
				continue
			}
			out = append(out, sn.Name)
		}
		slices.Sort(out)
		return out
	}
	// Last at 2026-12-03T23:55: keep 3 = 21:00, 22:00, 23:00 of Dec 3; daily 2 = Dec 3 23:00 and
	// Dec 2 23:00.
	want := []string{"auto-2026-12-02T2300Z", "auto-2026-12-03T2100Z", "auto-2026-12-03T2200Z", "auto-2026-12-03T2300Z", "mine (user)"}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after 3 days: %v\nwant %v", got, want)
	}
	// Down for three days and a half: one snapshot at start-up, then hourly again.
	clock.set(utc("2026-12-07T12:34:00Z"))
	s.pass(ctx)
	s.pass(ctx)
	want = []string{"auto-2026-12-03T2200Z", "auto-2026-12-03T2300Z", "auto-2026-12-07T1200Z", "mine (user)"}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after catch-up: %v\nwant %v", got, want)
	}
	rep, err := st.Fsck(ctx, false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %+v %v", rep, err)
	}
}

// TestScheduleEndToEnd: a real daemon with a one-second interval (the test-only override)
// takes automatic snapshots of a volume created with -o snapshot-every, prunes them to
// snapshot-keep, leaves the user's snapshot alone, refuses auto- names from users, and keeps
// the schedule across a restart; the control API sets, shows and removes it.
func TestScheduleEndToEnd(t *testing.T) {
	root := t.TempDir()
	fast := func(c *Config) { c.ScheduleEvery = time.Second }
	td := startDaemon(t, root, fast)
	c := client.New(td.sock)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, "data", map[string]string{"snapshot-every": "1m", "snapshot-keep": "2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "data", "mine"); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateSnapshot(ctx, "data", "auto-2026-12-01T1000Z")
	wantCode(t, "user snapshot named auto-", err, api.CodeInvalid)
	if !strings.Contains(err.Error(), "reserved for scheduled snapshots") {
		t.Fatalf("error %q", err)
	}
	seen := map[string]bool{}
	autos := func() []string {
		snaps, err := c.ListSnapshots(ctx, "data")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		user := false
		for _, s := range snaps {
			if s.Auto {
				out = append(out, s.Name)
				seen[s.Name] = true
			}
			user = user || s.Name == "mine" && !s.Auto
		}
		if !user {
			t.Fatalf("the user's snapshot is gone: %+v", snaps)
		}
		return out
	}
	waitFor(t, func() bool { autos(); return len(seen) >= 4 })
	if a := autos(); len(a) > 3 || len(a) < 1 { // 3: between a snapshot and its prune
		t.Fatalf("automatic snapshots %v, keep is 2", a)
	}
	sc, err := c.Schedule(ctx, "data")
	if err != nil || sc.Every != "1m" || sc.Keep != 2 || sc.Last == nil || sc.Next == nil {
		t.Fatalf("schedule %+v, %v", sc, err)
	}
	td.stop(t)

	td = startDaemon(t, root, fast)
	c = client.New(td.sock)
	if sc, err := c.Schedule(ctx, "data"); err != nil || sc.Every != "1m" || sc.Keep != 2 {
		t.Fatalf("schedule after restart %+v, %v", sc, err)
	}
	n := len(seen)
	waitFor(t, func() bool { autos(); return len(seen) >= n+2 })

	// Set through the API: invalid ones refused, a lower keep prunes at once, off stops it.
	for _, bad := range []api.Schedule{{Every: "30s", Keep: 1}, {Every: "1h"}, {Every: "soon", Keep: 1}, {Every: "1h", Keep: -1}} {
		_, err := c.SetSchedule(ctx, "data", bad)
		wantCode(t, "set schedule "+bad.Every, err, api.CodeInvalid)
	}
	_, err = c.SetSchedule(ctx, "nope", api.Schedule{Every: "1h", Keep: 1})
	wantCode(t, "set schedule of no volume", err, api.CodeNotFound)
	if err := c.RemoveSchedule(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	left := autos()
	time.Sleep(2500 * time.Millisecond)
	if got := autos(); !slices.Equal(got, left) {
		t.Fatalf("snapshots taken with the schedule off: %v, then %v", left, got)
	}
	if sc, err := c.Schedule(ctx, "data"); err != nil || sc.Every != "" {
		t.Fatalf("schedule after off %+v, %v", sc, err)
	}
	if _, err := c.SetSchedule(ctx, "data", api.Schedule{Every: "1h", Keep: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(autos()) == 1 })
	if err := c.RemoveVolumeAndSnapshots(ctx, "data", false); err != nil {
		t.Fatal(err)
	}
	_, err = c.Schedule(ctx, "data")
	wantCode(t, "schedule of a removed volume", err, api.CodeNotFound)
}

// TestScheduleFlushesMount: an automatic snapshot of a mounted volume holds what was written
// before it, as volctl's snapshots do.
func TestScheduleFlushesMount(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "", func(c *Config) { c.ScheduleEvery = time.Second })
	c := client.New(td.sock)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := c.Mount(ctx, "v", dir); err != nil {
		t.Fatal(err)
	}
	defer c.Unmount(ctx, dir)
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("written before"); err != nil {
		t.Fatal(err)
	}
	// Neither closed nor synced: the daemon's write buffer holds it.
	defer f.Close()
	if _, err := c.SetSchedule(ctx, "v", api.Schedule{Every: "1m", Keep: 5}); err != nil {
		t.Fatal(err)
	}
	var auto string
	waitFor(t, func() bool {
		snaps, err := c.ListSnapshots(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			auto = s.Name
		}
		return len(snaps) > 0
	})
	snapDir := t.TempDir()
	if _, err := c.Mount(ctx, "v@"+auto, snapDir); err != nil {
		t.Fatal(err)
	}
	defer c.Unmount(ctx, snapDir)
	if b, err := os.ReadFile(filepath.Join(snapDir, "f")); err != nil || string(b) != "written before" {
		t.Fatalf("v@%s:/f = %q, %v", auto, b, err)
	}
}

// TestDockerCreateSchedule: docker volume create -o snapshot-every=... -o snapshot-keep=...
// (VolumeDriver.Create) sets the schedule; bad values are refused with the option named.
func TestDockerCreateSchedule(t *testing.T) {
	td := startDaemon(t, "")
	td.ok(t, "VolumeDriver.Create", `{"Name":"data","Opts":{"snapshot-every":"1h","snapshot-keep":"24","snapshot-keep-daily":"7"}}`)
	sc, err := client.New(td.sock).Schedule(context.Background(), "data")
	if err != nil || sc.Every != "1h" || sc.Keep != 24 || sc.KeepDaily != 7 {
		t.Fatalf("schedule of a volume docker created %+v, %v", sc, err)
	}
	for _, tt := range []struct{ opts, want string }{
		{`{"snapshot-every":"1h"}`, "at least one of keep"},
		{`{"snapshot-every":"10s","snapshot-keep":"1"}`, "every must be from 1m"},
		{`{"snapshot-every":"hourly","snapshot-keep":"1"}`, `snapshot-every="hourly"`},
		{`{"snapshot-every":"1h","snapshot-keep":"many"}`, `snapshot-keep="many"`},
		{`{"snapshot-keep-yearly":"1"}`, `unknown option "snapshot-keep-yearly"`},
	} {
		td.fails(t, "VolumeDriver.Create", `{"Name":"bad","Opts":`+tt.opts+`}`, tt.want)
	}
	td.fails(t, "VolumeDriver.Get", `{"Name":"bad"}`, "not found")
}
