// Package cli is volctl, the command line of fusevol: it runs the daemon (`volctl daemon`) and
// drives a running daemon over its control API on the plugin socket.
//
// Exit status is part of the interface: 0 success, 1 failure (one line on stderr saying what
// failed and why; fsck also uses 1 for "problems found"), 2 usage error (the message and the
// command's usage on stderr); run as mount.fuse.fusevol (mount(8)'s helper, mounthelper.go) it
// follows mount(8)'s: 1 usage, 32 mount failure. Output on stdout is for the user or, with
// --format json, for scripts.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/plugin"
	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// Version is volctl's version, set at link time with
// -ldflags "-X github.com/fusevol/fusevol/cli.Version=v1.2.3".
var Version = "dev"

// Main runs volctl with args (args[0] is the program name) and returns the process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if helperArgs, ok := mountHelperArgs(args); ok {
		return mountHelper(ctx, helperArgs, stdout, stderr)
	}
	app := newApp(stdout, stderr)
	return exitStatus(app.RunContext(ctx, intersperse(app, args)), stderr)
}

func newApp(stdout, stderr io.Writer) *ucli.App {
	app := &ucli.App{
		Name:    "volctl",
		Usage:   "manage fusevol volumes, snapshots and the store",
		Version: Version,
		// Every command reports through the returned error; exitStatus turns it into a status.
		ExitErrHandler:         func(*ucli.Context, error) {},
		HideVersion:            true,
		EnableBashCompletion:   true,
		UseShortOptionHandling: true,
		Writer:                 stdout,
		ErrWriter:              stderr,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "socket", Value: plugin.DefaultSocket, EnvVars: []string{"FUSEVOL_SOCKET"},
				Usage: "the daemon's unix socket"},
		},
		Commands: []*ucli.Command{
			daemonCommand(),
			fdKeeperCommand(),
			volumeCommand(),
			snapshotCommand(),
			sendCommand(),
			receiveCommand(),
			restoreCommand(),
			backupCommand(),
			dfCommand(),
			gcCommand(),
			fsckCommand(),
			mountCommand(),
			unmountCommand(),
			completionCommand(),
			versionCommand(),
		},
		Action:       unknownCommand,
		OnUsageError: flagError,
	}
	for _, c := range app.Commands {
		setUsageHandlers(c)
	}
	return app
}

// setUsageHandlers makes flag errors usage errors everywhere and gives command groups an action
// that rejects unknown subcommands (urfave would otherwise print help and exit 0).
func setUsageHandlers(c *ucli.Command) {
	c.OnUsageError = flagError
	if len(c.Subcommands) == 0 {
		c.HideHelpCommand = true
	} else if c.Action == nil {
		c.Action = unknownCommand
	}
	for _, s := range c.Subcommands {
		setUsageHandlers(s)
	}
}

func unknownCommand(c *ucli.Context) error {
	if c.NArg() == 0 {
		return usageErrorf(c, "missing command")
	}
	return usageErrorf(c, "unknown command %q", c.Args().First())
}

// flagError words the flag package's errors for people who typed --long options.
func flagError(c *ucli.Context, err error, _ bool) error {
	msg := err.Error()
	dashes := func(name string) string {
		if len(name) > 1 {
			return "--" + name
		}
		return "-" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown option " + dashes(name)
	} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		msg = "option " + dashes(name) + " needs a value"
	}
	return usageErrorf(c, "%s", msg)
}

// usageError is a command line the command cannot run; it carries the command's usage.
type usageError struct {
	msg   string
	usage string
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(c *ucli.Context, format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), usage: usageText(c)}
}

// usageText is the short usage of the command c runs.
func usageText(c *ucli.Context) string {
	cmd := c.Command
	name := c.App.Name
	var args string
	if cmd != nil && cmd.HelpName != "" {
		name = cmd.HelpName
		args = cmd.ArgsUsage
	}
	if cmd == nil || cmd.HelpName == "" || !cmd.HideHelpCommand {
		args = "COMMAND" // the root or a command group
	}
	line := strings.TrimSpace(fmt.Sprintf("Usage: %s [options] %s", name, args))
	return line + "\nRun '" + name + " --help' for details."
}

// exitError is a failure whose message has already been printed (or that needs none).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func exitStatus(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "volctl: %s\n%s\n", ue.msg, ue.usage)
		return 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, client.ErrUnreachable) {
		hint := "is the daemon running? start it with `volctl daemon`"
		if strings.Contains(err.Error(), "permission denied") {
			hint = "run volctl as root or as a member of the daemon's --group"
		}
		fmt.Fprintf(stderr, "volctl: %s (%s)\n", oneLine(err.Error()), hint)
		return 1
	}
	fmt.Fprintf(stderr, "volctl: %s\n", oneLine(err.Error()))
	return 1
}

// failure says what volctl was doing, unless err comes from the daemon, whose messages already
// name the operation and the volume.
func failure(what string, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// daemonClient is a client for the daemon named by the global --socket.
func daemonClient(c *ucli.Context) *client.Client {
	return client.New(c.String("socket"))
}

// oneLine keeps error output to one line even when a wrapped message spans several.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
