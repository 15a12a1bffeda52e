package cli

import (
	"fmt"
	"path/filepath"

	ucli "github.com/urfave/cli/v2"
)

func mountCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "mount",
		Usage:     "mount a volume, or a snapshot read-only, on a directory without Docker",
		ArgsUsage: "VOLUME[@SNAPSHOT] DIR",
		Description: "The daemon makes the FUSE mount, so DIR is a path on the daemon's host; it must be an\n" +
			"existing directory owned by you (unless you are root), not already a mount point, and not a\n" +
			"system directory or one of the daemon's own. A volume mounted here counts as in use (rm and\n" +
			"restore refuse it).",
		Action:       mount,
		BashComplete: completeArgs(false, argSource),
	}
}

func mount(c *ucli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf(c, "mount needs VOLUME[@SNAPSHOT] and DIR, got %d arguments", c.NArg())
	}
	src := c.Args().Get(0)
	dir, err := filepath.Abs(c.Args().Get(1))
	if err != nil {
		return failure(fmt.Sprintf("mount %s", src), err)
	}
	m, err := daemonClient(c).Mount(c.Context, src, dir)
	if err != nil {
		return failure(fmt.Sprintf("mount %s on %s", src, dir), err)
	}
	mode := "read-write"
	if m.ReadOnly {
		mode = "read-only"
	}
	_, err = fmt.Fprintf(c.App.Writer, "mounted %s on %s (%s)\n", m.Source, m.Dir, mode)
	return err
}

func unmountCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount a directory mounted with volctl mount",
		ArgsUsage: "DIR",
		Action:    unmount,
	}
}

func unmount(c *ucli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf(c, "unmount needs exactly one DIR, got %d arguments", c.NArg())
	}
	dir, err := filepath.Abs(c.Args().First())
	if err != nil {
		return failure("unmount", err)
	}
	if err := daemonClient(c).Unmount(c.Context, dir); err != nil {
		return failure(fmt.Sprintf("unmount %s", dir), err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "unmounted %s\n", dir)
	return err
}
