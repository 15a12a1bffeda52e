package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/plugin/api"
)

func snapshotCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "snapshot",
		Usage: "create, list, remove, restore and compare read-only snapshots",
		Subcommands: []*ucli.Command{
			{
				Name:         "create",
				Usage:        "take a read-only snapshot of a volume (constant time)",
				ArgsUsage:    "VOLUME NAME",
				Action:       snapshotCreate,
				BashComplete: completeArgs(false, argVolume),
			},
			{
				Name:         "ls",
				Aliases:      []string{"list"},
				Usage:        "list the snapshots of one volume, or of every volume (a removed volume's kept ones included)",
				ArgsUsage:    "[VOLUME]",
				Flags:        []ucli.Flag{formatFlag()},
				Action:       snapshotList,
				BashComplete: completeArgs(false, argVolume),
			},
			{
				Name:         "rm",
				Aliases:      []string{"remove"},
				Usage:        "remove a snapshot (clones made from it survive)",
				ArgsUsage:    "VOLUME NAME",
				Action:       snapshotRemove,
				BashComplete: completeArgs(false, argVolume, argSnapshot),
			},
			{
				Name:         "restore",
				Usage:        "roll a volume back to a snapshot; refused while the volume is mounted",
				ArgsUsage:    "VOLUME NAME",
				Action:       snapshotRestore,
				BashComplete: completeArgs(false, argVolume, argSnapshot),
			},
			{
				Name:      "diff",
				Usage:     "list paths added (A), modified (M) and removed (D) from snapshot FROM to TO",
				ArgsUsage: "VOLUME FROM [TO]",
				Description: "TO defaults to the live volume. A directory added or removed is listed with\n" +
					"everything under it.",
				Flags:        []ucli.Flag{formatFlag()},
				Action:       snapshotDiff,
				BashComplete: completeArgs(false, argVolume, argSnapshot, argSnapshot),
			},
			scheduleCommand(),
		},
	}
}

func snapshotCreate(c *ucli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf(c, "snapshot create needs VOLUME and NAME, got %d arguments", c.NArg())
	}
	vol, name := c.Args().Get(0), c.Args().Get(1)
	s, err := daemonClient(c).CreateSnapshot(c.Context, vol, name)
	if err != nil {
		return failure(fmt.Sprintf("create snapshot %s@%s", vol, name), err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s@%s\n", s.Volume, s.Name)
	return err
}

func snapshotList(c *ucli.Context) error {
	if c.NArg() > 1 {
		return usageErrorf(c, "snapshot ls takes at most one VOLUME")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	vol := c.Args().First()
	snaps, err := daemonClient(c).ListSnapshots(c.Context, vol)
	if err != nil {
		if vol != "" {
			return failure(fmt.Sprintf("list snapshots of %q", vol), err)
		}
		return failure("list snapshots", err)
	}
	if asJSON {
		if snaps == nil {
			snaps = []api.Snapshot{}
		}
		return writeJSON(c.App.Writer, snaps)
	}
	now := time.Now()
	tw := table(c.App.Writer, "VOLUME", "NAME", "AUTO", "CREATED")
	for _, s := range snaps {
		row(tw, snapshotVolume(s), s.Name, map[bool]string{true: "yes", false: "no"}[s.Auto], ago(s.CreatedAt, now))
	}
	return tw.Flush()
}

// snapshotVolume is the VOLUME column: a removed volume's kept snapshots show its record's name
// (NAME~ID8, which snapshot rm and -o from= take) marked as removed; the name stays the first
// word, for scripts that cut the column.
func snapshotVolume(s api.Snapshot) string {
	if s.RemovedAt != nil {
		return s.Volume + " (removed)"
	}
	return s.Volume
}

func snapshotRemove(c *ucli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf(c, "snapshot rm needs VOLUME and NAME, got %d arguments", c.NArg())
	}
	vol, name := c.Args().Get(0), c.Args().Get(1)
	if err := daemonClient(c).RemoveSnapshot(c.Context, vol, name); err != nil {
		return failure(fmt.Sprintf("remove snapshot %s@%s", vol, name), err)
	}
	_, err := fmt.Fprintf(c.App.Writer, "%s@%s\n", vol, name)
	return err
}

func snapshotRestore(c *ucli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf(c, "snapshot restore needs VOLUME and NAME, got %d arguments", c.NArg())
	}
	vol, name := c.Args().Get(0), c.Args().Get(1)
	stop := spinner(c.App.Writer, c.App.ErrWriter, "restoring "+vol+"@"+name)
	err := daemonClient(c).RestoreSnapshot(c.Context, vol, name)
	stop()
	if err != nil {
		return failure(fmt.Sprintf("restore %s to snapshot %s", vol, name), err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "restored %s to %s@%s\n", vol, vol, name)
	return err
}

func snapshotDiff(c *ucli.Context) error {
	if c.NArg() < 2 || c.NArg() > 3 {
		return usageErrorf(c, "snapshot diff needs VOLUME FROM [TO], got %d arguments", c.NArg())
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	vol, from, to := c.Args().Get(0), c.Args().Get(1), c.Args().Get(2)
	d, err := daemonClient(c).DiffSnapshots(c.Context, vol, from, to)
	if err != nil {
		return failure(fmt.Sprintf("diff %s@%s", vol, from), err)
	}
	if asJSON {
		for _, l := range []*[]string{&d.Added, &d.Modified, &d.Removed} {
			if *l == nil {
				*l = []string{}
			}
		}
		return writeJSON(c.App.Writer, d)
	}
	type change struct{ kind, path string }
	var all []change
	for _, l := range []struct {
		kind  string
		paths []string
	}{{"A", d.Added}, {"M", d.Modified}, {"D", d.Removed}} {
		for _, p := range l.paths {
			all = append(all, change{l.kind, p})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].path < all[j].path })
	for _, ch := range all {
		fmt.Fprintf(c.App.Writer, "%s %s\n", ch.kind, ch.path)
	}
	return nil
}

// keepFlags are the retention flags of snapshot schedule, in the order they print.
var keepFlags = []struct{ name, usage string }{
	{"keep", "keep the newest N automatic snapshots"},
	{"keep-hourly", "keep the newest automatic snapshot of each of the last N hours that have one"},
	{"keep-daily", "... of each of the last N days (UTC)"},
	{"keep-weekly", "... of each of the last N weeks (ISO weeks, Monday to Sunday)"},
	{"keep-monthly", "... of each of the last N months"},
}

func scheduleCommand() *ucli.Command {
	flags := []ucli.Flag{
		&ucli.StringFlag{Name: "every", Usage: "take an automatic snapshot every `DURATION` (at least 1m: 15m, 1h, 1d)"},
		&ucli.BoolFlag{Name: "off", Usage: "turn the schedule off (its automatic snapshots stay)"},
		formatFlag(),
	}
	for _, k := range keepFlags {
		flags = append(flags, &ucli.IntFlag{Name: k.name, Usage: k.usage, DefaultText: "0"})
	}
	return &ucli.Command{
		Name:      "schedule",
		Usage:     "show, set or turn off a volume's snapshot schedule",
		ArgsUsage: "VOLUME",
		Description: "Without flags it shows the schedule. --every with at least one --keep* flag sets it,\n" +
			"replacing the one the volume had: the daemon snapshots the volume every DURATION (at the\n" +
			"multiples of DURATION, UTC), names the snapshots auto-YYYY-MM-DDTHHMMZ and removes the\n" +
			"automatic snapshots no --keep* rule keeps (a snapshot kept by any rule stays; snapshots\n" +
			"you named are never removed). After downtime it takes one snapshot, not one per missed\n" +
			"interval. docker volume create -o snapshot-every=1h -o snapshot-keep=24 does the same.",
		Flags:        flags,
		Action:       snapshotSchedule,
		BashComplete: completeArgs(false, argVolume),
	}
}

func snapshotSchedule(c *ucli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf(c, "snapshot schedule needs one VOLUME, got %d arguments", c.NArg())
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	vol := c.Args().First()
	setting := c.IsSet("every")
	for _, k := range keepFlags {
		setting = setting || c.IsSet(k.name)
	}
	cl := daemonClient(c)
	var sc api.Schedule
	switch {
	case c.Bool("off") && setting:
		return usageErrorf(c, "--off turns the schedule off: give it without --every and --keep*")
	case c.Bool("off"):
		if err := cl.RemoveSchedule(c.Context, vol); err != nil {
			return failure(fmt.Sprintf("turn off the schedule of %s", vol), err)
		}
		sc = api.Schedule{Volume: vol}
	case setting:
		req := api.Schedule{Every: c.String("every"), Keep: c.Int("keep"), KeepHourly: c.Int("keep-hourly"),
			KeepDaily: c.Int("keep-daily"), KeepWeekly: c.Int("keep-weekly"), KeepMonthly: c.Int("keep-monthly")}
		if sc, err = cl.SetSchedule(c.Context, vol, req); err != nil {
			return failure(fmt.Sprintf("set the schedule of %s", vol), err)
		}
	default:
		if sc, err = cl.Schedule(c.Context, vol); err != nil {
			return failure(fmt.Sprintf("show the schedule of %s", vol), err)
		}
	}
	if asJSON {
		return writeJSON(c.App.Writer, sc)
	}
	return printSchedule(c.App.Writer, sc, time.Now())
}

// printSchedule prints a schedule as lines of "key: value".
func printSchedule(w io.Writer, sc api.Schedule, now time.Time) error {
	if sc.Every == "" {
		_, err := fmt.Fprintf(w, "%s: no snapshot schedule\n", sc.Volume)
		return err
	}
	last, next := "-", "-"
	if sc.Last != nil {
		last = timestamp(*sc.Last, now)
	}
	if sc.Next != nil {
		next = sc.Next.UTC().Format(time.RFC3339)
		if d := sc.Next.Sub(now); d > 0 {
			next += " (in " + strings.TrimSuffix(ago(now.Add(-d), now), " ago") + ")"
		} else {
			next += " (due now)"
		}
	}
	_, err := fmt.Fprintf(w, "volume:  %s\nevery:   %s\nkeep:    %s\nlast:    %s\nnext:    %s\n",
		sc.Volume, sc.Every, keepSummary(sc), last, next)
	return err
}

// keepSummary is a schedule's retention: "96 last, 7 daily".
func keepSummary(sc api.Schedule) string {
	var keep []string
	for _, k := range []struct {
		n    int
		unit string
	}{{sc.Keep, "last"}, {sc.KeepHourly, "hourly"}, {sc.KeepDaily, "daily"}, {sc.KeepWeekly, "weekly"}, {sc.KeepMonthly, "monthly"}} {
		if k.n > 0 {
			keep = append(keep, fmt.Sprintf("%d %s", k.n, k.unit))
		}
	}
	return strings.Join(keep, ", ")
}

// scheduleSummary is volume inspect's Schedule line: "every 1h, keep 24 last", or "-".
func scheduleSummary(sc *api.Schedule) string {
	if sc == nil || sc.Every == "" {
		return "-"
	}
	return "every " + sc.Every + ", keep " + keepSummary(*sc)
}
