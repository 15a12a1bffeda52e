package cli

import (
	"fmt"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/plugin/api"
)

func dfCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "df",
		Usage:     "show space used per volume and by the whole store (with the dedup ratio)",
		ArgsUsage: " ",
		Flags:     []ucli.Flag{formatFlag()},
		Action:    df,
	}
}

func df(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "df takes no arguments")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	d, err := daemonClient(c).DF(c.Context)
	if err != nil {
		return failure("df", err)
	}
	w := c.App.Writer
	if asJSON {
		if d.Volumes == nil {
			d.Volumes = []api.VolumeUsage{}
		}
		return writeJSON(w, d)
	}
	tw := table(w, "VOLUME", "SIZE", "FILES")
	for _, v := range d.Volumes {
		row(tw, v.Name, humanBytes(v.Bytes), fmt.Sprint(v.Files))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(w, "\nSTORE\n")
	tw = table(w, "logical", humanBytes(d.LogicalBytes)+"  (every volume and snapshot, before dedup)")
	row(tw, "unique", humanBytes(d.UniqueBytes)+"  ("+count(d.Chunks, "distinct chunk")+")")
	row(tw, "stored", humanBytes(d.PhysicalBytes)+"  (after compression)")
	row(tw, "on disk", humanBytes(d.DiskBytes))
	row(tw, "dedup ratio", fmt.Sprintf("%.2fx", d.DedupRatio))
	return tw.Flush()
}

func gcCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "gc",
		Usage:     "reclaim unreferenced chunks and disk space now",
		ArgsUsage: " ",
		Flags:     []ucli.Flag{formatFlag()},
		Action:    gc,
	}
}

func gc(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "gc takes no arguments")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	stop := spinner(c.App.Writer, c.App.ErrWriter, "gc")
	r, err := daemonClient(c).GC(c.Context)
	stop()
	if err != nil {
		return failure("gc", err)
	}
	if asJSON {
		return writeJSON(c.App.Writer, r)
	}
	_, err = fmt.Fprintf(c.App.Writer, "gc: disk %s -> %s (%s reclaimed) in %s\n",
		humanBytes(r.DiskBytesBefore), humanBytes(r.DiskBytesAfter),
		humanBytes(max(r.DiskBytesBefore-r.DiskBytesAfter, 0)),
		(time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond))
	return err
}

func fsckCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "fsck",
		Usage:     "check the store; exit 0 only when it is clean",
		ArgsUsage: " ",
		Description: "Prints every problem found and exits 1 when there is any. --repair fixes reference\n" +
			"counts, unreferenced chunks and orphaned inodes; files whose data is damaged are listed.",
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "repair", Usage: "repair what can be repaired"},
			formatFlag(),
		},
		Action: fsck,
	}
}

func fsck(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "fsck takes no arguments")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	stop := spinner(c.App.Writer, c.App.ErrWriter, "fsck")
	r, err := daemonClient(c).Fsck(c.Context, c.Bool("repair"))
	stop()
	if err != nil {
		return failure("fsck", err)
	}
	w := c.App.Writer
	if asJSON {
		for _, l := range []*[]string{&r.Problems, &r.Repaired, &r.Damaged} {
			if *l == nil {
				*l = []string{}
			}
		}
		err = writeJSON(w, r)
	} else {
		for _, l := range []struct {
			label string
			items []string
		}{{"problem", r.Problems}, {"repaired", r.Repaired}, {"damaged", r.Damaged}} {
			for _, it := range l.items {
				fmt.Fprintf(w, "%s: %s\n", l.label, it)
			}
		}
		if r.Clean {
			_, err = fmt.Fprintln(w, "store is clean")
		} else {
			_, err = fmt.Fprintf(w, "store is NOT clean: %d problem(s)\n", len(r.Problems))
		}
	}
	if err == nil && !r.Clean {
		err = &exitError{code: 1}
	}
	return err
}
