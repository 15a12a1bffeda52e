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
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin"
	"github.com/fusevol/fusevol/plugin/fdkeeper"
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
			&ucli.StringFlag{Name: "cache-size", Value: "128MiB", EnvVars: []string{"FUSEVOL_CACHE_SIZE"},
				Usage: "chunk cache shared by all volumes (at least 4MiB)"},
			&ucli.StringFlag{Name: "write-buffer", Value: "64MiB", EnvVars: []string{"FUSEVOL_WRITE_BUFFER"},
				Usage: "buffered write data of all volumes together (at least 8MiB)"},
			&ucli.StringFlag{Name: "debug-addr", EnvVars: []string{"FUSEVOL_DEBUG_ADDR"},
				Usage: "serve net/http/pprof on a loopback HOST:PORT or a unix socket path (default: off)"},
			&ucli.StringFlag{Name: "metrics-addr", EnvVars: []string{"FUSEVOL_METRICS_ADDR"},
				Usage: "serve Prometheus metrics at /metrics on a loopback HOST:PORT or a unix socket path (default: off)"},
			&ucli.BoolFlag{Name: "allow-new-store", EnvVars: []string{"FUSEVOL_ALLOW_NEW_STORE"},
				Usage: "start on a new, empty store although this mount root's marker says a store was served before"},
			&ucli.BoolFlag{Name: "live-restart", EnvVars: []string{"FUSEVOL_LIVE_RESTART"},
				Usage: "keep the volumes' FUSE connections in an fd keeper process: a stop, restart or crash of the daemon does not unmount them (Linux 6.9+)"},
		},
		Action: runDaemon,
	}
}

func runDaemon(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "daemon takes no arguments, got %q", c.Args().First())
	}
	logger, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return usageErrorf(c, "%v", err)
	}
	cacheSize, err := sizeFlag(c, "cache-size", plugin.MinCacheSize)
	if err != nil {
		return err
	}
	writeBuffer, err := sizeFlag(c, "write-buffer", plugin.MinWriteBuffer)
	if err != nil {
		return err
	}
	d, err := plugin.NewDaemon(plugin.Config{
		Root:          c.String("root"),
		Socket:        daemonSocket(c),
		MountRoot:     c.String("mount-root"),
		Group:         c.String("group"),
		Logger:        logger,
		Version:       Version,
		CacheSize:     cacheSize,
		WriteBuffer:   writeBuffer,
		DebugAddr:     c.String("debug-addr"),
		MetricsAddr:   c.String("metrics-addr"),
		AllowNewStore: c.Bool("allow-new-store"),
		LiveRestart:   c.Bool("live-restart"),
	})
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	// The heap is mostly the cache, the write buffers and Badger's memtables, each bounded on its
	// own; a soft limit that fits them keeps the garbage collector from letting the heap grow to
	// twice that while data streams through.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(d.MemoryLimit())
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// sizeFlag parses a byte-count flag (512MiB, 1G, plain bytes) of at least min; a bad value is a
// usage error naming the flag.
func sizeFlag(c *ucli.Context, name string, min int64) (int64, error) {
	v := c.String(name)
	n, err := backend.ParseSize(v)
	if err != nil {
		return 0, usageErrorf(c, "--%s %q: %v", name, v, err)
	}
	if n < min {
		return 0, usageErrorf(c, "--%s %q: below the minimum of %s", name, v, humanBytes(min))
	}
	return n, nil
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

// fdKeeperCommand is the fd keeper the daemon starts for --live-restart (plugin/fdkeeper); it is
// not for users, so it is hidden.
func fdKeeperCommand() *ucli.Command {
	return &ucli.Command{
		Name:   "fd-keeper",
		Hidden: true,
		Usage:  "hold the daemon's FUSE connections across its restarts (started by the daemon)",
		Flags:  []ucli.Flag{&ucli.StringFlag{Name: "socket", Required: true}},
		Action: func(c *ucli.Context) error {
			ln, err := fdkeeper.Listen(c.String("socket"))
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			return fdkeeper.New(log).Serve(ln, 10*time.Second)
		},
	}
}
