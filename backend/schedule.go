package backend

// Snapshot schedules with retention.
//
// A volume may have one schedule policy (key P name): take a snapshot every Every and keep the
// automatic snapshots its keep rules keep. The daemon's scheduler (plugin/schedule.go) runs it;
// the store holds the policy, the automatic flag and the retention rules, so that they survive
// restarts and go with the volume:
//
//   - An automatic snapshot has Auto set in its record, and only such records are ever pruned:
//     a snapshot a user named stays whatever its name. Users cannot create names that start
//     with AutoPrefix (CreateSnapshot refuses them), so the prefix always means "the scheduler's";
//     a snapshot named so before schedules existed keeps Auto unset and is never pruned.
//   - The policy is the volume's: removing the volume removes it (deleteVolumeIn), restoring
//     keeps it, a clone does not inherit it (a clone is another volume with a use of its own; it
//     gets a schedule from its own -o snapshot-every=), and a removed volume's kept snapshots
//     are no longer pruned.
//   - Retention follows restic's forget (and sanoid): Keep keeps the newest N automatic
//     snapshots; KeepHourly N keeps the newest snapshot of each of the N most recent hours that
//     have one, and KeepDaily, KeepWeekly (ISO weeks) and KeepMonthly likewise, all in UTC. A
//     snapshot kept by any rule stays. Every rule keeps the newest one, so a pruned volume
//     always keeps its latest automatic snapshot, which the scheduler's catch-up reads.
//   - Setting, removing and pruning are one transaction each.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// AutoPrefix starts the name of every automatic snapshot, and no other.
const AutoPrefix = "auto-"

// Limits of a schedule policy.
const (
	MinScheduleEvery = time.Minute
	MaxScheduleEvery = 366 * 24 * time.Hour
	MaxScheduleKeep  = 100000
)

// SchedulePolicy is a volume's snapshot schedule. The zero value is no schedule.
type SchedulePolicy struct {
	Every       time.Duration // interval between automatic snapshots, MinScheduleEvery or more
	Keep        int           // the newest N
	KeepHourly  int           // the newest of each of the N most recent hours
	KeepDaily   int
	KeepWeekly  int
	KeepMonthly int
}

// IsZero reports whether p is no schedule.
func (p SchedulePolicy) IsZero() bool { return p == SchedulePolicy{} }

// keeps lists the keep rules with their names (as volctl's flags and the -o options spell
// them after "snapshot-").
func (p *SchedulePolicy) keeps() []struct {
	name string
	n    *int
} {
	return []struct {
		name string
		n    *int
	}{{"keep", &p.Keep}, {"keep-hourly", &p.KeepHourly}, {"keep-daily", &p.KeepDaily},
		{"keep-weekly", &p.KeepWeekly}, {"keep-monthly", &p.KeepMonthly}}
}

// Validate checks a policy the store would accept. The errors wrap ErrInvalid.
func (p SchedulePolicy) Validate() error {
	if p.Every == 0 {
		return fmt.Errorf("%w: snapshot schedule: every is not given", ErrInvalid)
	}
	if p.Every < MinScheduleEvery || p.Every > MaxScheduleEvery {
		return fmt.Errorf("%w: snapshot schedule: every must be from %s to %s, not %s",
			ErrInvalid, FormatEvery(MinScheduleEvery), FormatEvery(MaxScheduleEvery), FormatEvery(p.Every))
	}
	some := false
	for _, k := range p.keeps() {
		if *k.n < 0 || *k.n > MaxScheduleKeep {
			return fmt.Errorf("%w: snapshot schedule: %s must be from 0 to %d, not %d", ErrInvalid, k.name, MaxScheduleKeep, *k.n)
		}
		some = some || *k.n > 0
	}
	if !some {
		return fmt.Errorf("%w: snapshot schedule: give at least one of keep, keep-hourly, keep-daily, keep-weekly, keep-monthly (automatic snapshots are pruned to what they keep)", ErrInvalid)
	}
	return nil
}

// String is the policy as volctl's flags spell it.
func (p SchedulePolicy) String() string {
	if p.IsZero() {
		return "off"
	}
	parts := []string{"every " + FormatEvery(p.Every)}
	for _, k := range p.keeps() {
		if *k.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k.name, *k.n))
		}
	}
	return strings.Join(parts, ", ")
}

// ParseEvery parses a schedule interval: a Go duration (15m, 1h30m) or a whole number of days
// or weeks (1d, 2w). It does not check the limits (Validate does).
func ParseEvery(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 32)
			if err != nil || v <= 0 {
				break
			}
			return time.Duration(v) * u.unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("a duration such as 15m, 1h or 1d")
	}
	return d, nil
}

// FormatEvery formats an interval the way ParseEvery reads it: 15m, 1h30m, 1d.
func FormatEvery(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// scheduleOption parses one keep rule or the interval of the -o options (snapshot-every,
// snapshot-keep, snapshot-keep-daily, ...) into p.
func scheduleOption(key string) func(*VolumeOptions, string) error {
	return func(o *VolumeOptions, v string) error {
		return o.Schedule.set(strings.TrimPrefix(key, "snapshot-"), v)
	}
}

// set sets one field of p by its name (every, keep, keep-hourly, ...).
func (p *SchedulePolicy) set(name, v string) error {
	if name == "every" {
		d, err := ParseEvery(v)
		if err != nil {
			return err
		}
		p.Every = d
		return nil
	}
	for _, k := range p.keeps() {
		if k.name == name {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 || n > MaxScheduleKeep {
				return fmt.Errorf("a number of snapshots from 0 to %d", MaxScheduleKeep)
			}
			*k.n = n
			return nil
		}
	}
	return fmt.Errorf("unknown schedule setting %q", name)
}

// scheduleOptionKeys are the -o options of a schedule.
var scheduleOptionKeys = []string{"snapshot-every", "snapshot-keep", "snapshot-keep-hourly",
	"snapshot-keep-daily", "snapshot-keep-weekly", "snapshot-keep-monthly"}

// AutoSnapshotName is the name of the automatic snapshot of the slot at (UTC): auto-2026-12-01T1000Z,
// with seconds (auto-2026-12-01T100005Z) when every is below a minute, which only tests can set.
// Names cannot hold ':' (ValidateName), so the time is written without it; names sort by time.
func AutoSnapshotName(at time.Time, every time.Duration) string {
	layout := "2006-01-02T1504Z"
	if every < time.Minute {
		layout = "2006-01-02T150405Z"
	}
	return AutoPrefix + at.UTC().Format(layout)
}

// Prunable returns the automatic snapshots among snaps that p does not keep (newest first);
// snapshots without Auto are never in it. A zero policy keeps everything.
func (p SchedulePolicy) Prunable(snaps []SnapshotInfo) []SnapshotInfo {
	if p.IsZero() {
		return nil
	}
	var auto []SnapshotInfo
	for _, s := range snaps {
		if s.Auto {
			auto = append(auto, s)
		}
	}
	// Newest first: the first snapshot met in a bucket is the bucket's newest.
	slices.SortFunc(auto, func(a, b SnapshotInfo) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.Name, a.Name)
	})
	kept := make([]bool, len(auto))
	for _, r := range []struct {
		n      int
		bucket func(i int, t time.Time) int64
	}{
		{p.Keep, func(i int, _ time.Time) int64 { return int64(i) }},
		{p.KeepHourly, func(_ int, t time.Time) int64 { return t.Unix() / 3600 }},
		{p.KeepDaily, func(_ int, t time.Time) int64 { y, m, d := t.UTC().Date(); return int64(y*10000 + int(m)*100 + d) }},
		{p.KeepWeekly, func(_ int, t time.Time) int64 { y, w := t.UTC().ISOWeek(); return int64(y*100 + w) }},
		{p.KeepMonthly, func(_ int, t time.Time) int64 { y, m, _ := t.UTC().Date(); return int64(y*100 + int(m)) }},
	} {
		left, last := r.n, int64(0)
		for i, s := range auto {
			if left == 0 {
				break
			}
			if b := r.bucket(i, s.CreatedAt); i == 0 || b != last {
				kept[i], last = true, b
				left--
			}
		}
	}
	var out []SnapshotInfo
	for i, s := range auto {
		if !kept[i] {
			out = append(out, s)
		}
	}
	return out
}

// Encoding of a policy (the value of P name): version 1, Every in nanoseconds (64 bits), then
// Keep, KeepHourly, KeepDaily, KeepWeekly and KeepMonthly (32 bits each).
const (
	scheduleVersion = 1
	scheduleLen     = 1 + 8 + 5*4
)

func encodeSchedule(p SchedulePolicy) []byte {
	v := binary.BigEndian.AppendUint64([]byte{scheduleVersion}, uint64(p.Every))
	for _, k := range p.keeps() {
		v = binary.BigEndian.AppendUint32(v, uint32(*k.n))
	}
	return v
}

// decodeSchedule decodes and validates a stored policy; anything else is ErrCorrupt.
func decodeSchedule(v []byte) (SchedulePolicy, error) {
	var p SchedulePolicy
	if len(v) != scheduleLen || v[0] != scheduleVersion {
		return p, fmt.Errorf("%w: schedule value of %d bytes, version %d", ErrCorrupt, len(v), firstByte(v))
	}
	every := binary.BigEndian.Uint64(v[1:])
	if every > uint64(MaxScheduleEvery) {
		return p, fmt.Errorf("%w: schedule interval of %d ns", ErrCorrupt, every)
	}
	p.Every = time.Duration(every)
	for i, k := range p.keeps() {
		n := binary.BigEndian.Uint32(v[9+4*i:])
		if n > MaxScheduleKeep {
			return p, fmt.Errorf("%w: schedule %s %d", ErrCorrupt, k.name, n)
		}
		*k.n = int(n)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: stored %v", ErrCorrupt, err)
	}
	return p, nil
}

func firstByte(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}

// Schedule is one volume's policy and the creation time of its newest automatic snapshot
// (zero when it has none).
type Schedule struct {
	Volume   string
	Policy   SchedulePolicy
	LastAuto time.Time
}

// SetSchedule gives a live volume a schedule policy, replacing any it had.
func (s *Store) SetSchedule(ctx context.Context, volume string, p SchedulePolicy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	return s.update(ctx, func(t *tx) error {
		if err := liveVolume(t, volume); err != nil {
			return err
		}
		return t.set(scheduleKey(volume), encodeSchedule(p))
	})
}

// RemoveSchedule turns a volume's schedule off; its automatic snapshots stay (they are
// snapshots like any other then, removed with snapshot rm). It reports whether there was one.
func (s *Store) RemoveSchedule(ctx context.Context, volume string) (bool, error) {
	had := false
	err := s.update(ctx, func(t *tx) error {
		if err := liveVolume(t, volume); err != nil {
			return err
		}
		_, err := t.txn.Get(scheduleKey(volume))
		if had = err == nil; !had {
			return nil
		}
		return t.delete(scheduleKey(volume))
	})
	return had, err
}

// GetSchedule returns a volume's schedule; Policy is zero when it has none.
func (s *Store) GetSchedule(ctx context.Context, volume string) (Schedule, error) {
	var out Schedule
	err := s.view(func(t *tx) error {
		if err := liveVolume(t, volume); err != nil {
			return err
		}
		var err error
		out, err = scheduleIn(t, volume)
		return err
	})
	return out, err
}

// Schedules returns every scheduled volume, by name. A policy that does not decode is left out
// and named in the error (errors.Join), so that one bad record does not stop the others.
func (s *Store) Schedules(ctx context.Context) ([]Schedule, error) {
	var out []Schedule
	var bad []error
	err := s.view(func(t *tx) error {
		return scanPrefix(t.txn, []byte{pSchedule}, false, func(k, _ []byte) error {
			sc, err := scheduleIn(t, string(k[1:]))
			if errors.Is(err, ErrCorrupt) {
				bad = append(bad, err)
				return nil
			}
			if err == nil {
				out = append(out, sc)
			}
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return out, errors.Join(bad...)
}

// scheduleIn reads a volume's policy and newest automatic snapshot.
func scheduleIn(t *tx, volume string) (Schedule, error) {
	out := Schedule{Volume: volume}
	item, err := t.txn.Get(scheduleKey(volume))
	if err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return out, nil
		}
		return out, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return out, err
	}
	if out.Policy, err = decodeSchedule(v); err != nil {
		return out, fmt.Errorf("schedule of volume %q: %w", volume, err)
	}
	snaps, err := snapshotsIn(t, volume)
	for _, sn := range snaps {
		if sn.Auto && sn.CreatedAt.After(out.LastAuto) {
			out.LastAuto = sn.CreatedAt
		}
	}
	return out, err
}

// liveVolume checks that volume names a volume (not a removed volume's record).
func liveVolume(t *tx, volume string) error {
	var rec volRec
	if IsRemovedName(volume) {
		return fmt.Errorf("volume %q: %w", volume, ErrNotFound)
	}
	if err := t.getJSON(volumeKey(volume), &rec); err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	return nil
}

// CreateAutoSnapshot takes an automatic snapshot (named by AutoSnapshotName) created at the
// scheduler's time, which retention buckets by.
func (s *Store) CreateAutoSnapshot(ctx context.Context, volume, name string, at time.Time) (SnapshotInfo, error) {
	if !strings.HasPrefix(name, AutoPrefix) {
		return SnapshotInfo{}, fmt.Errorf("%w: automatic snapshot %q must start with %s", ErrInvalid, name, AutoPrefix)
	}
	return s.createSnapshot(ctx, volume, name, snapRec{CreatedAt: at.UTC(), Auto: true})
}

// mustBeScheduled refuses an automatic snapshot of a volume without a schedule: the schedule
// may have been turned off after the scheduler read it.
func mustBeScheduled(t *tx, volume string) error {
	_, err := t.txn.Get(scheduleKey(volume))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%w: volume %q has no snapshot schedule (any more)", ErrInvalid, volume)
	}
	return err
}

// PruneSnapshots deletes, in one transaction, the automatic snapshots of volume that its
// schedule no longer keeps, except those busy reports (mounted ones: they go at a later prune).
// It returns their names; none when the volume has no schedule.
func (s *Store) PruneSnapshots(ctx context.Context, volume string, busy func(snapshot string) bool) ([]string, error) {
	var pruned []string
	err := s.update(ctx, func(t *tx) error {
		pruned = nil
		if err := liveVolume(t, volume); err != nil {
			return err
		}
		sc, err := scheduleIn(t, volume)
		if err != nil || sc.Policy.IsZero() {
			return err
		}
		snaps, err := snapshotsIn(t, volume)
		if err != nil {
			return err
		}
		infos := make([]SnapshotInfo, len(snaps))
		for i, sn := range snaps {
			infos[i] = SnapshotInfo{Volume: volume, Name: sn.name, CreatedAt: sn.CreatedAt, Auto: sn.Auto}
		}
		for _, sn := range sc.Policy.Prunable(infos) {
			if busy != nil && busy(sn.Name) {
				continue
			}
			if err := t.delete(snapshotKey(volume, sn.Name)); err != nil {
				return err
			}
			pruned = append(pruned, sn.Name)
		}
		return nil
	})
	return pruned, err
}
