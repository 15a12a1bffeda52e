package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/plugin"
)

func daemonCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "daemon",
		Usage:     "run the fusevol volume plugin daemon in the foreground",
		ArgsUsage: " ",
		Description: "Owns the store under --root, serves Docker's volume plugin protocol and the volctl\n" +
			"control API on --socket, and mounts volumes under --mount-root. SIGTERM or SIGINT\n" +
			"unmounts everything, closes the store and exits 0.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "root", Value: plugin.DefaultRoot, EnvVars: []string{"FUSEVOL_ROOT"},
				Usage: "directory holding the store and state"},
			&ucli.StringFlag{Name: "socket", Value: plugin.DefaultSocket, EnvVars: []string{"FUSEVOL_SOCKET"},
				Usage: "unix socket to listen on"},
			&ucli.StringFlag{Name: "mount-root", EnvVars: []string{"FUSEVOL_MOUNT_ROOT"},
				Usage: "directory under which volumes are mounted (default: <root>/mounts)"},
			&ucli.StringFlag{Name: "group", EnvVars: []string{"FUSEVOL_GROUP"},
				Usage: "group (name or gid) allowed to use the socket besides root"},
			&ucli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"FUSEVOL_LOG_LEVEL"},
				Usage: "debug, info, warn or error"},
			&ucli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"FUSEVOL_LOG_FORMAT"},
				Usage: "text or json"},
		},
		Action: runDaemon,
	}
}

// daemonMemoryLimit is the daemon's soft heap limit (GOMEMLIMIT overrides it). Its heap is mostly
// write buffers, caches and Badger memtables, each bounded on its own; the limit keeps the garbage
// collector from letting the heap grow to twice that while data streams through.
const daemonMemoryLimit = 384 << 20

func runDaemon(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "daemon takes no arguments, got %q", c.Args().First())
	}
	logger, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return usageErrorf(c, "%v", err)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := plugin.NewDaemon(plugin.Config{
		Root:      c.String("root"),
		Socket:    daemonSocket(c),
		MountRoot: c.String("mount-root"),
		Group:     c.String("group"),
		Logger:    logger,
		Version:   Version,
	})
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// daemonSocket lets `volctl --socket S daemon` work as well as `volctl daemon --socket S`.
func daemonSocket(c *ucli.Context) string {
	if c.IsSet("socket") {
		return c.String("socket")
	}
	return c.Lineage()[1].String("socket")
}

// newLogger builds the daemon's logger; a bad level or format is a usage error.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
