// Package plugin is the fusevol daemon: it owns the store, mounts volumes with FUSE and serves
// Docker's volume plugin protocol and the volctl control API (plugin/api) on one unix socket.
//
// Invariants:
//   - The socket listens before the store opens; requests that arrive meanwhile wait for it and
//     are never answered "no such volume".
//   - The store is the only record of which volumes exist: List and Get read it on every call.
//   - Each volume has its own lock, held over its slow work (mount, unmount, snapshot, remove);
//     the mount table's mutex only guards maps and is never held across I/O.
//   - A volume has at most one FUSE mount of its live state, at <MountRoot>/<name>; Docker's mount
//     IDs and volctl's directories are references to it, and the last reference unmounts it.
//   - Mount references live in memory only: a restarted daemon starts with none, removes the dead
//     mounts its predecessor left under MountRoot, and treats Unmount of an unknown ID as done.
//   - All mounts share one chunk cache and one write-buffer budget (Config.CacheSize,
//     Config.WriteBuffer), so memory does not grow with the number of volumes.
//   - A daemon that has served a store does not start on a new, empty one (its location was
//     reset, as docker plugin upgrade does) unless Config.AllowNewStore: see marker.go.
//   - Automatic snapshots are taken by one scheduler goroutine (schedule.go) that runs while
//     the store is open; it takes them like volctl's snapshots, under the volume's lock.
//   - The profiler and the metrics (Config.DebugAddr, Config.MetricsAddr, off by default) are
//     reachable from this host only: loopback TCP or a unix socket of mode 0600 serving the
//     daemon's own user, each on a server and mux of its own (metrics on a registry of its own).
//   - Without Config.MetricsAddr mounts have no fs.Observer: metrics cost nothing when off.
//
// The mount bookkeeping (volume locks, references, bind and snapshot mounts, stale-mount
// recovery) is the mountTable (mounts.go, recover.go); it mounts through a mounter
// (mount_fs.go), so tests drive it without FUSE. The Daemon holds the store and the HTTP side.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
)

// Config configures a Daemon. Zero fields take the defaults shown.
type Config struct {
	Root      string // store and state; default /var/lib/fusevol
	Socket    string // default /run/docker/plugins/fusevol.sock
	MountRoot string // default <Root>/mounts
	Group     string // socket group (name or gid), "" = root only
	Logger    *slog.Logger
	// Version is reported by the control API's status; default "dev".
	Version string
	// CacheSize is the chunk cache shared by every mount (default fs.DefaultCacheBytes, at
	// least MinCacheSize); WriteBuffer the write-buffer budget they share (default
	// fs.DefaultWriteBuffer, at least MinWriteBuffer).
	CacheSize, WriteBuffer int64
	// DebugAddr, when set, serves net/http/pprof: a loopback HOST:PORT or a unix socket path
	// (debug.go).
	DebugAddr string
	// MetricsAddr, when set, serves Prometheus metrics at /metrics: a loopback HOST:PORT or a
	// unix socket path, checked like DebugAddr (metrics.go).
	MetricsAddr string
	// AllowNewStore lets the daemon start on a new, empty store although the marker in
	// MountRoot says it has served one before (marker.go).
	AllowNewStore bool
	// ScheduleEvery, when set, replaces the interval of every snapshot schedule (which the
	// store keeps at 1m or more, schedule.go). For end-to-end tests only: no flag sets it.
	ScheduleEvery time.Duration
	// LiveRestart keeps the live mounts' FUSE connections in an fd keeper process (keep.go):
	// a stop (SIGTERM) freezes them instead of unmounting, and the next start, or the start
	// after a crash, serves them again, so running containers never see the daemon go.
	LiveRestart bool
	// KeeperCommand is the volctl binary that runs the fd keeper (default: this executable).
	KeeperCommand string
}

// Defaults for Config.
const (
	DefaultRoot   = "/var/lib/fusevol"
	DefaultSocket = "/run/docker/plugins/fusevol.sock"
)

// The smallest budgets: the cache holds one chunk of the largest chunk size, the write buffers
// two (one being filled while one is committed).
const (
	MinCacheSize   = backend.MaxChunkSize
	MinWriteBuffer = 2 * backend.MaxChunkSize
)

// memoryOverhead is the daemon's memory besides its cache and write buffers (Badger's memtables
// and caches, FUSE request buffers, goroutines); see Daemon.MemoryLimit.
const memoryOverhead = 192 << 20

// Time limits of shutdown: Docker sends SIGKILL 10 s after SIGTERM.
const (
	drainTimeout   = 2 * time.Second // in-flight requests
	unmountTimeout = 6 * time.Second // flushing and unmounting every volume
	// busyUnmountWait is how long unmounts may take once everything is flushed: a mount still
	// used in a container's mount namespace is left detached when it runs out.
	busyUnmountWait = 2 * time.Second
)

// Daemon is one running fusevol instance. Create it with NewDaemon, run it with Run.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	gid     int // socket group, -1 = none
	started time.Time

	ready   chan struct{} // closed once the store is open or failed to open
	store   *backend.Store
	openErr error
	stop    chan struct{} // closed when shutdown begins

	mounts *mountTable // volume mounts and their references
	debug  localAddr
	dbg    atomic.Pointer[localServer] // set by Run before the socket listens

	metricsAddr localAddr
	metrics     *metrics                    // nil without Config.MetricsAddr
	met         atomic.Pointer[localServer] // set by Run before the socket listens

	wake      chan struct{} // pokes the snapshot scheduler (schedule.go)
	schedStop func()        // set before opened closes when the scheduler runs
}

// NewDaemon checks cfg and fills in defaults; nothing is opened or listened on until Run.
func NewDaemon(cfg Config) (*Daemon, error) {
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.MountRoot == "" {
		cfg.MountRoot = filepath.Join(cfg.Root, "mounts")
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, p := range []*string{&cfg.Root, &cfg.Socket, &cfg.MountRoot} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("path %q: %w", *p, err)
		}
		*p = abs
	}
	gid, err := lookupGroup(cfg.Group)
	if err != nil {
		return nil, err
	}
	if err := cfg.budgets(); err != nil {
		return nil, err
	}
	resolve, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	debug, err := parseLocalAddr(resolve, "debug address", cfg.DebugAddr, net.DefaultResolver.LookupIPAddr)
	if err != nil {
		return nil, err
	}
	metricsAddr, err := parseLocalAddr(resolve, "metrics address", cfg.MetricsAddr, net.DefaultResolver.LookupIPAddr)
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:         cfg,
		log:         cfg.Logger,
		gid:         gid,
		ready:       make(chan struct{}),
		stop:        make(chan struct{}),
		wake:        make(chan struct{}, 1),
		debug:       debug,
		metricsAddr: metricsAddr,
	}
	sm := newSysMounter(cfg.CacheSize, cfg.WriteBuffer)
	if metricsAddr.network != "" {
		d.metrics = newMetrics(d, sm)
		sm.observe = d.metrics.observer
	}
	if cfg.LiveRestart {
		sm.keep = newKeptMounts(cfg.Logger)
	}
	d.mounts = newMountTable(cfg.MountRoot, sm, cfg.Logger)
	d.mounts.keep = sm.keep
	return d, nil
}

// budgets fills in the default cache and write-buffer sizes and refuses sizes below the minimums.
func (cfg *Config) budgets() error {
	for _, b := range []struct {
		name     string
		v        *int64
		def, min int64
	}{
		{"cache size", &cfg.CacheSize, fs.DefaultCacheBytes, MinCacheSize},
		{"write buffer", &cfg.WriteBuffer, fs.DefaultWriteBuffer, MinWriteBuffer},
	} {
		if *b.v == 0 {
			*b.v = b.def
		}
		if *b.v < b.min {
			return fmt.Errorf("%s %d bytes: below the minimum of %d MiB", b.name, *b.v, b.min>>20)
		}
	}
	return nil
}

// MemoryLimit is a soft heap limit that fits the daemon's budgets (runtime/debug.SetMemoryLimit):
// the cache, the write buffers and memoryOverhead, 384 MiB with the defaults. The limit keeps
// the garbage collector from letting the heap grow to twice that while data streams through.
func (d *Daemon) MemoryLimit() int64 {
	return d.cfg.CacheSize + d.cfg.WriteBuffer + memoryOverhead
}

// Run listens on the socket before opening the store, serves until ctx is cancelled, then shuts
// down cleanly (stop taking requests, flush, unmount, close the store) and returns nil. It
// returns an error when the socket (or the profiler's listener) cannot be created or the store
// cannot be opened.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	dbg, err := listenDebug(d.debug, d.log)
	if err != nil {
		return err
	}
	defer dbg.close() // last, so that a slow shutdown can be profiled too
	d.dbg.Store(dbg)
	met, err := listenMetrics(d.metricsAddr, d.metrics, d.log)
	if err != nil {
		return err
	}
	defer met.close()
	d.met.Store(met)
	ln, err := listenSocket(d.cfg.Socket, d.gid)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           d.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       withPeer,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	d.log.Info("listening", "socket", d.cfg.Socket, "root", d.cfg.Root, "mount_root", d.cfg.MountRoot,
		"cache_size", d.cfg.CacheSize, "write_buffer", d.cfg.WriteBuffer)

	opened := make(chan struct{})
	go func() {
		defer close(opened)
		d.open(ctx)
		if d.openErr == nil {
			d.startScheduler(ctx)
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case <-opened:
		if d.openErr != nil {
			runErr = d.openErr
		} else {
			select {
			case <-ctx.Done():
			case err := <-served:
				runErr = fmt.Errorf("serve %s: %w", d.cfg.Socket, err)
			}
		}
	case err := <-served:
		runErr = fmt.Errorf("serve %s: %w", d.cfg.Socket, err)
	}
	met.drain() // before the store closes under a scrape
	d.shutdown(srv, opened)
	return runErr
}

// open checks the served-before marker, recovers stale mounts, opens the store, marks it served
// and releases waiting requests.
func (d *Daemon) open(ctx context.Context) {
	defer close(d.ready)
	dir := filepath.Join(d.cfg.Root, "store")
	if err := checkMarker(d.cfg.MountRoot, dir, d.cfg.AllowNewStore); err != nil {
		d.openErr = err
		d.log.Error("store not opened", "err", err, "setting", "state.source (managed plugin), --root or FUSEVOL_ROOT",
			"override", "--allow-new-store or FUSEVOL_ALLOW_NEW_STORE=true")
		return
	}
	if err := os.MkdirAll(d.cfg.Root, 0o700); err != nil {
		d.openErr = fmt.Errorf("create root: %w", err)
		return
	}
	if err := os.MkdirAll(d.cfg.MountRoot, 0o755); err != nil {
		d.openErr = fmt.Errorf("create mount root: %w", err)
		return
	}
	kept, devs, err := d.keptMounts(ctx)
	if err != nil {
		d.openErr = err
		d.log.Error("store not opened", "err", err)
		return
	}
	keepVols, keepDirs := map[string]bool{}, map[string]bool{}
	for _, r := range kept {
		keepVols[r.Volume], keepDirs[r.Dir] = true, true
	}
	d.mounts.cleanStale(keepDirs)
	start := time.Now()
	st, err := backend.Open(ctx, dir, backend.Options{Logger: d.log, DiskReserve: backend.DefaultDiskReserve,
		KeepOrphans: func(v string) bool { return keepVols[v] }})
	if err != nil {
		d.openErr = fmt.Errorf("open store in %s: %w", d.cfg.Root, err)
		d.log.Error("store did not open", "err", err)
		return
	}
	if err := writeMarker(d.cfg.MountRoot, dir, d.cfg.Version); err != nil {
		// Serving matters more than the guard, and the store exists now: the next start passes
		// the check whatever the marker says, and writes it again.
		d.log.Warn("store served without its marker", "err", err)
	}
	d.store = st
	d.log.Info("store open", "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	d.mounts.resumeAll(ctx, st, kept, devs)
}

// keptMounts connects to the fd keeper (Config.LiveRestart) and lists what it holds.
func (d *Daemon) keptMounts(ctx context.Context) ([]keptMount, []*os.File, error) {
	k := d.mounts.keep
	if k == nil {
		return nil, nil, nil
	}
	exe := d.cfg.KeeperCommand
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, nil, fmt.Errorf("live restart: %w", err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := k.connect(cctx, d.cfg.Root, exe); err != nil {
		return nil, nil, fmt.Errorf("live restart: %w", err)
	}
	recs, devs, err := k.held()
	if err != nil {
		return nil, nil, fmt.Errorf("live restart: %w", err)
	}
	return recs, devs, nil
}

// shutdown stops taking requests, waits briefly for in-flight ones, unmounts every volume and
// closes the store. It keeps within Docker's 10 s SIGTERM grace.
func (d *Daemon) shutdown(srv *http.Server, opened <-chan struct{}) {
	d.log.Info("shutting down")
	close(d.stop)
	drain, cancel := context.WithTimeout(context.Background(), drainTimeout)
	if err := srv.Shutdown(drain); err != nil {
		d.log.Warn("requests still running at shutdown; closing their connections", "err", err)
		srv.Close()
	}
	cancel()
	<-opened
	d.stopScheduler()
	ctx, cancel := context.WithTimeout(context.Background(), unmountTimeout)
	defer cancel()
	if d.mounts.keep != nil {
		d.mounts.freezeAll(ctx)
	} else {
		d.mounts.unmountAll(ctx)
	}
	if d.store != nil {
		if err := d.store.Close(); err != nil {
			d.log.Error("close store", "err", err)
		}
	}
	d.mounts.keep.close()
	os.Remove(d.cfg.Socket)
	d.log.Info("stopped")
}

// storeFor waits for the store to open. A request that arrives before it is ready waits rather
// than being answered with a volume's absence.
func (d *Daemon) storeFor(ctx context.Context) (*backend.Store, error) {
	select {
	case <-d.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the store to open: %w", ctx.Err())
	case <-d.stop:
		return nil, errShuttingDown
	}
	if d.openErr != nil {
		return nil, fmt.Errorf("%w: %v", errUnavailable, d.openErr)
	}
	select {
	case <-d.stop:
		return nil, errShuttingDown
	default:
	}
	return d.store, nil
}

var (
	errUnavailable  = errors.New("store unavailable")
	errShuttingDown = fmt.Errorf("%w: daemon is shutting down", errUnavailable)
)

// DebugAddr is the profiler's address (with the port chosen for port 0) or socket path once Run
// has started it; "" before, or without Config.DebugAddr.
func (d *Daemon) DebugAddr() string {
	if s := d.dbg.Load(); s != nil {
		return s.Addr()
	}
	return ""
}

// MetricsAddr is like DebugAddr, for the metrics server (Config.MetricsAddr).
func (d *Daemon) MetricsAddr() string {
	if s := d.met.Load(); s != nil {
		return s.Addr()
	}
	return ""
}

// Socket returns the socket path Run listens on.
func (d *Daemon) Socket() string { return d.cfg.Socket }
