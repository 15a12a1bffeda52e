package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"
)

// Argument kinds completeArgs can offer.
const (
	argVolume   = "volume"   // a volume name
	argSnapshot = "snapshot" // a snapshot of the volume given as the first argument
	argSource   = "source"   // VOLUME or VOLUME@SNAPSHOT
)

// completeArgs offers names from the daemon for the argument being typed; kinds[i] says what
// argument i is, and the last kind repeats when repeat is set. A daemon that does not answer
// within two seconds offers nothing: completion must never hang the shell.
func completeArgs(repeat bool, kinds ...string) ucli.BashCompleteFunc {
	return func(c *ucli.Context) {
		if n := len(os.Args); n > 2 && strings.HasPrefix(os.Args[n-2], "-") {
			ucli.DefaultCompleteWithFlags(c.Command)(c) // completing an option, not a name
			return
		}
		i := c.NArg()
		if i >= len(kinds) && !repeat {
			return
		}
		kind := kinds[min(i, len(kinds)-1)]
		ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
		defer cancel()
		cl := daemonClient(c)
		switch kind {
		case argVolume, argSource:
			vols, err := cl.ListVolumes(ctx)
			if err != nil {
				return
			}
			for _, v := range vols {
				fmt.Fprintln(c.App.Writer, v.Name)
			}
			if kind == argVolume {
				return
			}
			snaps, err := cl.ListSnapshots(ctx, "")
			if err != nil {
				return
			}
			for _, s := range snaps {
				fmt.Fprintf(c.App.Writer, "%s@%s\n", s.Volume, s.Name)
			}
		case argSnapshot:
			snaps, err := cl.ListSnapshots(ctx, c.Args().First())
			if err != nil {
				return
			}
			for _, s := range snaps {
				fmt.Fprintln(c.App.Writer, s.Name)
			}
		}
	}
}
