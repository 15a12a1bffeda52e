package plugin

// The snapshot scheduler: takes the automatic snapshots of every scheduled volume and prunes
// them to what the volume's policy keeps (the policy, the automatic flag and the retention
// rules are the store's: backend/schedule.go).
//
// Invariants:
//   - One goroutine, started by Daemon.Run once the store is open and stopped (and waited for)
//     at shutdown before the volumes are unmounted and the store closes.
//   - A volume's snapshots are due at the multiples of its interval since Go's zero time, in
//     UTC (every 1h on the hour, 15m at :00, :15, ..., 1d at midnight), and are named by that
//     slot. A slot is covered when the volume's newest automatic snapshot is from it or later:
//     so a pass takes at most one snapshot per volume, and a daemon that was down for days
//     catches up with one snapshot, not one per missed slot. (A clock set back waits until it
//     passes the newest automatic snapshot again: the slots before it are covered.)
//   - A snapshot is taken like volctl's (the volume's lock held, its live mount flushed first).
//     One that fails (full disk, the volume removed meanwhile) is logged and retried at the
//     volume's next slot; nothing a volume does stops the loop. Pruning follows every attempt,
//     failed or not (it is what frees space), and skips snapshots mounted by volctl.
//   - The clock and the timers are injected (now, after): tests run days in microseconds.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

// scheduleSource is what the scheduler reads: every scheduled volume, its policy and the time
// of its newest automatic snapshot.
type scheduleSource interface {
	Schedules(ctx context.Context) ([]backend.Schedule, error)
}

// maxScheduleSleep bounds a wait, so that a wall-clock step (suspend, NTP) is seen within it.
const maxScheduleSleep = time.Minute

type scheduler struct {
	src scheduleSource
	// take snapshots volume for slot (named by it, created at now) and prunes it.
	take  func(ctx context.Context, volume string, slot, now time.Time, every time.Duration) error
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
	every time.Duration // Config.ScheduleEvery: replaces every policy's interval (tests only)
	// maxSleep bounds a wait (maxScheduleSleep), so that a wall-clock step (suspend, NTP)
	// is seen within it.
	maxSleep time.Duration
	log      *slog.Logger
	wake     <-chan struct{} // a schedule was set: pass now

	failed map[string]time.Time // volume -> the slot whose snapshot failed, not retried
}

// interval is the volume's interval, or the test override.
func (s *scheduler) interval(p backend.SchedulePolicy) time.Duration {
	if s.every > 0 {
		return s.every
	}
	return p.Every
}

// nextDue is when the volume's next automatic snapshot is due: its current slot when no
// automatic snapshot covers it (catch-up: at once), else the next slot.
func nextDue(sc backend.Schedule, now time.Time, every time.Duration) time.Time {
	cur := now.Truncate(every)
	if sc.LastAuto.Before(cur) {
		return cur
	}
	return cur.Add(every)
}

// pass takes the snapshots that are due and returns when the next one is (zero: none is).
func (s *scheduler) pass(ctx context.Context) time.Time {
	now := s.now()
	var next time.Time
	scheds, err := s.src.Schedules(ctx)
	if err != nil {
		// The policies that decode are in scheds: one bad record stops nobody else (fsck names it).
		s.log.Error("snapshot schedules", "err", err)
	}
	seen := map[string]bool{}
	for _, sc := range scheds {
		seen[sc.Volume] = true
		every := s.interval(sc.Policy)
		due := nextDue(sc, now, every)
		if !due.After(now) {
			if !s.failed[sc.Volume].Equal(due) {
				s.snapshot(ctx, sc.Volume, due, every)
			}
			due = due.Add(every)
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	for v := range s.failed {
		if !seen[v] {
			delete(s.failed, v)
		}
	}
	return next
}

// snapshot takes one due snapshot; a failure is logged and the slot not retried.
func (s *scheduler) snapshot(ctx context.Context, volume string, slot time.Time, every time.Duration) {
	err := s.take(ctx, volume, slot, s.now(), every)
	switch {
	case err == nil:
		delete(s.failed, volume)
	case ctx.Err() == nil:
		s.log.Warn("automatic snapshot failed; retrying at the next slot", "volume", volume,
			"slot", slot.UTC(), "next", slot.Add(every).UTC(), "err", err)
		s.failed[volume] = slot
	}
}

// run passes until ctx ends: at the next due time, or at once when a schedule is set.
func (s *scheduler) run(ctx context.Context) {
	for ctx.Err() == nil {
		wait := s.maxSleep
		if next := s.pass(ctx); !next.IsZero() {
			wait = min(max(next.Sub(s.now()), 0), s.maxSleep)
		}
		select {
		case <-ctx.Done():
		case <-s.after(wait):
		case <-s.wake:
		}
	}
}

// startScheduler runs the scheduler on the open store until stopScheduler.
func (d *Daemon) startScheduler(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s := &scheduler{src: d.store, take: d.autoSnapshot, now: time.Now, after: time.After,
		every: d.cfg.ScheduleEvery, maxSleep: maxScheduleSleep, log: d.log, wake: d.wake, failed: map[string]time.Time{}}
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	d.schedStop = func() {
		cancel()
		<-done
	}
}

// stopScheduler stops the scheduler and waits for a snapshot in progress; a no-op when it
// never started (the store did not open).
func (d *Daemon) stopScheduler() {
	if d.schedStop != nil {
		d.schedStop()
	}
}

// pokeScheduler makes the scheduler pass now (a schedule was set or a volume created with one).
func (d *Daemon) pokeScheduler() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// autoSnapshot takes the automatic snapshot of volume for slot the way ctlSnapshotCreate takes
// a user's (lock, flush, snapshot), then prunes.
func (d *Daemon) autoSnapshot(ctx context.Context, volume string, slot, now time.Time, every time.Duration) error {
	v := d.mounts.lock(volume)
	defer d.mounts.unlock(volume, v)
	name := backend.AutoSnapshotName(slot, every)
	err := d.mounts.flushLive(ctx, volume, v)
	if err == nil {
		_, err = d.store.CreateAutoSnapshot(ctx, volume, name, now)
	}
	if err != nil {
		err = fmt.Errorf("snapshot %s@%s: %w", volume, name, err)
	} else {
		d.log.Info("automatic snapshot taken", "volume", volume, "snapshot", name)
	}
	_, perr := d.pruneLocked(ctx, d.store, volume, v)
	return errors.Join(err, perr)
}

// pruneLocked prunes volume's automatic snapshots (its lock held), sparing mounted ones.
func (d *Daemon) pruneLocked(ctx context.Context, st *backend.Store, volume string, v *volState) ([]string, error) {
	pruned, err := st.PruneSnapshots(ctx, volume, func(snap string) bool {
		for _, m := range v.snaps {
			if m.snapshot == snap {
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("prune snapshots of %s: %w", volume, err)
	}
	if len(pruned) > 0 {
		d.log.Info("automatic snapshots pruned", "volume", volume, "snapshots", strings.Join(pruned, ","))
	}
	return pruned, nil
}

// apiSchedule is a volume's schedule as the control API shows it.
func (d *Daemon) apiSchedule(sc backend.Schedule) api.Schedule {
	p := sc.Policy
	out := api.Schedule{Volume: sc.Volume}
	if p.IsZero() {
		return out
	}
	out.Every, out.Keep, out.KeepHourly, out.KeepDaily, out.KeepWeekly, out.KeepMonthly =
		backend.FormatEvery(p.Every), p.Keep, p.KeepHourly, p.KeepDaily, p.KeepWeekly, p.KeepMonthly
	every := p.Every
	if d.cfg.ScheduleEvery > 0 {
		every = d.cfg.ScheduleEvery
	}
	next := nextDue(sc, time.Now(), every).UTC()
	out.Next = &next
	if !sc.LastAuto.IsZero() {
		last := sc.LastAuto.UTC()
		out.Last = &last
	}
	return out
}

// policyOf reads a schedule request.
func policyOf(s api.Schedule) (backend.SchedulePolicy, error) {
	every, err := backend.ParseEvery(s.Every)
	if err != nil {
		return backend.SchedulePolicy{}, invalid("snapshot schedule: every %q: %v", s.Every, err)
	}
	p := backend.SchedulePolicy{Every: every, Keep: s.Keep, KeepHourly: s.KeepHourly,
		KeepDaily: s.KeepDaily, KeepWeekly: s.KeepWeekly, KeepMonthly: s.KeepMonthly}
	return p, p.Validate()
}

func (d *Daemon) ctlScheduleGet(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	sc, err := st.GetSchedule(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("schedule of %s: %w", name, err)
	}
	return d.apiSchedule(sc), nil
}

// ctlScheduleSet sets a schedule and prunes at once by its rules.
func (d *Daemon) ctlScheduleSet(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	req, err := body[api.Schedule](r)
	if err != nil {
		return nil, err
	}
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	p, err := policyOf(*req)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	if err := st.SetSchedule(ctx, name, p); err != nil {
		return nil, fmt.Errorf("set schedule of %s: %w", name, err)
	}
	d.log.Info("snapshot schedule set", "volume", name, "schedule", p.String())
	if _, err := d.pruneLocked(ctx, st, name, v); err != nil {
		return nil, err
	}
	d.pokeScheduler()
	sc, err := st.GetSchedule(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("schedule of %s: %w", name, err)
	}
	return d.apiSchedule(sc), nil
}

func (d *Daemon) ctlScheduleRemove(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	had, err := st.RemoveSchedule(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("remove schedule of %s: %w", name, err)
	}
	if had {
		d.log.Info("snapshot schedule removed", "volume", name)
	}
	return noContent{}, nil
}
