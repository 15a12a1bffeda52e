package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

func volumeCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "volume",
		Usage: "create, list, inspect, change and remove volumes",
		Subcommands: []*ucli.Command{
			{
				Name:      "create",
				Usage:     "create a volume (or a writable clone of a snapshot with -o from=VOLUME@SNAPSHOT)",
				ArgsUsage: "NAME",
				Description: "Options are those of `docker volume create -d fusevol -o KEY=VALUE`:\n" +
					"size (quota, e.g. 10GiB), from=VOLUME@SNAPSHOT (clone), chunk-size, compression\n" +
					"(none, s2, zstd), uid, gid, mode (of the root directory, octal).",
				Flags: []ucli.Flag{
					&ucli.StringSliceFlag{Name: "opt", Aliases: []string{"o"}, Usage: "volume option KEY=VALUE (repeatable)"},
				},
				Action: volumeCreate,
			},
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list volumes",
				ArgsUsage: " ",
				Flags: []ucli.Flag{
					formatFlag(),
					&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print names only"},
				},
				Action: volumeList,
			},
			{
				Name:         "inspect",
				Usage:        "show a volume's options, usage, snapshots and mounts",
				ArgsUsage:    "NAME...",
				Flags:        []ucli.Flag{formatFlag()},
				Action:       volumeInspect,
				BashComplete: completeArgs(true, argVolume),
			},
			{
				Name:      "set",
				Usage:     "change a volume's quota or compression, mounted or not",
				ArgsUsage: "NAME",
				Description: "Settable options: size (quota, e.g. 20GiB, or none) and compression (none, s2,\n" +
					"zstd; applies to data written from then on). A mounted volume sees the change at\n" +
					"once (df inside a container shows the new size); a size below the volume's usage\n" +
					"is refused. Example: volctl volume set -o size=20GiB data",
				Flags: []ucli.Flag{
					&ucli.StringSliceFlag{Name: "opt", Aliases: []string{"o"}, Usage: "option KEY=VALUE to set (repeatable)"},
				},
				Action:       volumeSet,
				BashComplete: completeArgs(false, argVolume),
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove"},
				Usage:     "remove volumes; their snapshots are kept (as NAME@SNAP of a removed volume) unless --with-snapshots",
				ArgsUsage: "NAME...",
				Flags: []ucli.Flag{
					&ucli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "unmount a mounted volume first"},
					&ucli.BoolFlag{Name: "with-snapshots", Usage: "remove the volume's snapshots too (clones made from them survive)"},
				},
				Action:       volumeRemove,
				BashComplete: completeArgs(true, argVolume),
			},
		},
	}
}

func volumeCreate(c *ucli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf(c, "volume create needs exactly one NAME, got %d arguments", c.NArg())
	}
	opts, err := parseOptions(c.StringSlice("opt"))
	if err != nil {
		return usageErrorf(c, "%v", err)
	}
	name := c.Args().First()
	v, err := daemonClient(c).CreateVolume(c.Context, name, opts)
	if err != nil {
		return failure(fmt.Sprintf("create volume %q", name), err)
	}
	_, err = fmt.Fprintln(c.App.Writer, v.Name)
	return err
}

func volumeSet(c *ucli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf(c, "volume set needs exactly one NAME, got %d arguments", c.NArg())
	}
	opts, err := parseOptions(c.StringSlice("opt"))
	if err != nil {
		return usageErrorf(c, "%v", err)
	}
	if len(opts) == 0 {
		return usageErrorf(c, "volume set needs at least one -o KEY=VALUE (size, compression)")
	}
	name := c.Args().First()
	v, err := daemonClient(c).SetVolumeOptions(c.Context, name, opts)
	if err != nil {
		return failure(fmt.Sprintf("set options of volume %q", name), err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s: quota %s, compression %s\n", v.Name, quota(v.Options.Size), v.Options.Compression)
	return err
}

// parseOptions turns repeated -o KEY=VALUE into a map; a key given twice is an error rather
// than a silent overwrite.
func parseOptions(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	opts := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("option %q: want KEY=VALUE", kv)
		}
		if _, dup := opts[k]; dup {
			return nil, fmt.Errorf("option %q given twice", k)
		}
		opts[k] = v
	}
	return opts, nil
}

func volumeList(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "volume ls takes no arguments")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	vols, err := daemonClient(c).ListVolumes(c.Context)
	if err != nil {
		return failure("list volumes", err)
	}
	w := c.App.Writer
	switch {
	case asJSON:
		if vols == nil {
			vols = []api.Volume{}
		}
		return writeJSON(w, vols)
	case c.Bool("quiet"):
		for _, v := range vols {
			fmt.Fprintln(w, v.Name)
		}
		return nil
	}
	now := time.Now()
	tw := table(w, "NAME", "QUOTA", "COMPRESSION", "MOUNTED", "ORIGIN", "CREATED")
	for _, v := range vols {
		row(tw, v.Name, quota(v.Options.Size), v.Options.Compression, yesNo(v.Mounted),
			orDash(v.Options.From), ago(v.CreatedAt, now))
	}
	return tw.Flush()
}

func quota(n int64) string {
	if n <= 0 {
		return "none"
	}
	return humanBytes(n)
}

func volumeInspect(c *ucli.Context) error {
	if c.NArg() == 0 {
		return usageErrorf(c, "volume inspect needs at least one NAME")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	cl := daemonClient(c)
	vols := []api.Volume{}
	failed := false
	for _, name := range c.Args().Slice() {
		v, err := cl.InspectVolume(c.Context, name)
		if err != nil {
			if errors.Is(err, client.ErrUnreachable) {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "volctl: %s\n", oneLine(failure("inspect volume "+name, err).Error()))
			failed = true
			continue
		}
		vols = append(vols, v)
	}
	if asJSON {
		err = writeJSON(c.App.Writer, vols)
	} else {
		now := time.Now()
		for i, v := range vols {
			if i > 0 {
				fmt.Fprintln(c.App.Writer)
			}
			if err = writeVolume(c.App.Writer, v, now); err != nil {
				break
			}
		}
	}
	if err == nil && failed {
		err = &exitError{code: 1}
	}
	return err
}

// writeVolume prints one inspected volume as aligned "Key: value" lines.
func writeVolume(w io.Writer, v api.Volume, now time.Time) error {
	tw := table(w, "Name:", v.Name)
	row(tw, "ID:", v.ID)
	row(tw, "Created:", timestamp(v.CreatedAt, now))
	row(tw, "Quota:", quota(v.Options.Size))
	row(tw, "Chunk size:", humanBytes(int64(v.Options.ChunkSize)))
	row(tw, "Compression:", v.Options.Compression)
	row(tw, "Root owner:", fmt.Sprintf("%d:%d mode %04o", v.Options.UID, v.Options.GID, v.Options.Mode))
	row(tw, "Origin:", orDash(v.Options.From))
	if v.Usage != nil {
		row(tw, "Usage:", fmt.Sprintf("%s, %s", humanBytes(v.Usage.Bytes), count(v.Usage.Files, "file")))
	}
	mounted := "no"
	if v.Mounted {
		mounted = "yes, at " + orDash(v.Mountpoint)
	}
	row(tw, "Mounted:", mounted)
	row(tw, "Mount IDs:", mountIDs(v.MountIDs))
	row(tw, "Mounted on:", orDash(strings.Join(v.Dirs, ", ")))
	row(tw, "Schedule:", scheduleSummary(v.Schedule))
	row(tw, "Snapshots:", fmt.Sprint(len(v.Snapshots)))
	for _, s := range v.Snapshots {
		row(tw, "", s.Name+"  "+timestamp(s.CreatedAt, now))
	}
	return tw.Flush()
}

// mountIDs lists Docker's mount IDs with their reference counts, sorted for stable output.
func mountIDs(ids map[string]int) string {
	if len(ids) == 0 {
		return "-"
	}
	out := make([]string, 0, len(ids))
	for id, n := range ids {
		out = append(out, fmt.Sprintf("%s (%d)", id, n))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func volumeRemove(c *ucli.Context) error {
	if c.NArg() == 0 {
		return usageErrorf(c, "volume rm needs at least one NAME")
	}
	cl := daemonClient(c)
	failed := false
	for _, name := range c.Args().Slice() {
		remove := cl.RemoveVolume
		if c.Bool("with-snapshots") {
			remove = cl.RemoveVolumeAndSnapshots
		}
		if err := remove(c.Context, name, c.Bool("force")); err != nil {
			if errors.Is(err, client.ErrUnreachable) {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "volctl: %s\n", oneLine(failure("remove volume "+name, err).Error()))
			failed = true
			continue
		}
		fmt.Fprintln(c.App.Writer, name)
	}
	if failed {
		return &exitError{code: 1}
	}
	return nil
}
