package plugin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
)

// The metrics server (Config.MetricsAddr, off by default) serves /metrics in the Prometheus text
// format from a registry of its own. Request counters are fed by every mount's fs.Observer; the
// rest (volumes, store, cache, mounts) is read when scraped, by metricsCollector.
//
// Request latency histograms are labelled by operation only: with a volume label, 100 volumes
// would make some 20,000 series of buckets. Counters, byte counts and fsync latency carry the
// volume. A removed volume's series go with it (forget).

// storeTotalsEvery is how long the store-wide totals are reused: they cost a scan of every
// chunk's reference record (backend.Store.Stats), too much for every scrape of a big store.
const storeTotalsEvery = 30 * time.Second

// latencyBuckets span FUSE requests from the page-cache-fast (10 µs) to a stalled fsync (2.6 s).
var latencyBuckets = prometheus.ExponentialBuckets(10e-6, 4, 10)

// metrics is the daemon's registry and the request counters the mounts feed.
type metrics struct {
	reg        *prometheus.Registry
	ops        *prometheus.CounterVec   // volume, op
	opSeconds  *prometheus.HistogramVec // op
	errs       *prometheus.CounterVec   // volume, op, errno
	readBytes  *prometheus.CounterVec   // volume
	writeBytes *prometheus.CounterVec   // volume
	copyBytes  *prometheus.CounterVec   // volume
	fsyncs     *prometheus.HistogramVec // volume
	commits    prometheus.Histogram     // all volumes
	commitB    *prometheus.CounterVec   // volume
	commitErrs *prometheus.CounterVec   // volume, errno
	collector  *metricsCollector
}

func newMetrics(d *Daemon, sm sysMounter) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_fuse_operations_total",
			Help: "FUSE requests answered, by volume and operation."}, []string{"volume", "op"}),
		opSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fusevol_fuse_operation_duration_seconds",
			Help: "Time to serve a FUSE request, by operation (all volumes).", Buckets: latencyBuckets}, []string{"op"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_fuse_errors_total",
			Help: "FUSE requests answered with an error, by volume, operation and errno."}, []string{"volume", "op", "errno"}),
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_read_bytes_total",
			Help: "Bytes read through FUSE, by volume."}, []string{"volume"}),
		writeBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_written_bytes_total",
			Help: "Bytes written through FUSE, by volume."}, []string{"volume"}),
		copyBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_copied_bytes_total",
			Help: "Bytes copy_file_range copied into files of the volume, by volume."}, []string{"volume"}),
		fsyncs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fusevol_fsync_duration_seconds",
			Help: "Time to serve fsync (committing the file's buffered data), by volume.", Buckets: latencyBuckets}, []string{"volume"}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fusevol_commit_duration_seconds",
			Help: "Time to commit a batch of buffered writes to the store (all volumes).", Buckets: latencyBuckets}),
		commitB: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_committed_bytes_total",
			Help: "Bytes of buffered writes committed to the store (whole chunks or extents), by volume."}, []string{"volume"}),
		commitErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fusevol_commit_errors_total",
			Help: "Commits of buffered writes that failed (their files' fsync and close then fail), by volume and errno."}, []string{"volume", "errno"}),
	}
	m.collector = &metricsCollector{d: d, sm: sm, totalsEvery: storeTotalsEvery}
	m.reg.MustRegister(m.ops, m.opSeconds, m.errs, m.readBytes, m.writeBytes, m.copyBytes, m.fsyncs, m.commits, m.commitB, m.commitErrs, m.collector,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observer is the fs.Observer of a mount of volume.
func (m *metrics) observer(volume string) fs.Observer {
	read, written := m.readBytes.WithLabelValues(volume), m.writeBytes.WithLabelValues(volume)
	copied := m.copyBytes.WithLabelValues(volume)
	fsync, committed := m.fsyncs.WithLabelValues(volume), m.commitB.WithLabelValues(volume)
	return func(op string, took time.Duration, n int, errno syscall.Errno) {
		if op == fs.OpCommit {
			m.commits.Observe(took.Seconds())
			if errno != 0 {
				m.commitErrs.WithLabelValues(volume, errnoName(errno)).Inc()
			} else {
				committed.Add(float64(n))
			}
			return
		}
		m.ops.WithLabelValues(volume, op).Inc()
		m.opSeconds.WithLabelValues(op).Observe(took.Seconds())
		if errno != 0 {
			m.errs.WithLabelValues(volume, op, errnoName(errno)).Inc()
			return
		}
		switch op {
		case "read":
			read.Add(float64(n))
		case "write":
			written.Add(float64(n))
		case "copy_file_range":
			copied.Add(float64(n))
		case "fsync":
			fsync.Observe(took.Seconds())
		}
	}
}

// forget drops the series of a removed volume. The caller holds the volume's lock, and nothing
// of the volume is mounted: no observer of it is left to feed them, and the next mount of a
// volume of that name, made under the lock later, starts new ones.
func (m *metrics) forget(volume string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"volume": volume}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.ops, m.errs, m.readBytes, m.writeBytes, m.copyBytes, m.fsyncs, m.commitB, m.commitErrs,
	} {
		v.DeletePartialMatch(l)
	}
}

// errnoName is an errno's symbol (ENOENT), or its number for one Linux does not name.
func errnoName(e syscall.Errno) string {
	if s := unix.ErrnoName(e); s != "" {
		return s
	}
	return "errno " + e.Error()
}

// handler serves /metrics (only) from the registry; on a unix socket, to the daemon's own user.
// A part that fails (the store) is left out and logged, the rest served.
func (m *metrics) handler(unix bool, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             20 * time.Second,
	}))
	if !unix {
		return mux
	}
	return ownUserOnly(mux, "metrics", log)
}

// listenMetrics starts the metrics server (nil when none is configured).
func listenMetrics(a localAddr, m *metrics, log *slog.Logger) (*localServer, error) {
	if a.network == "" {
		return nil, nil
	}
	s, err := serveLocal(a, "metrics", m.handler(a.network == "unix", log), log)
	if err != nil {
		return nil, err
	}
	log.Info("metrics listening", "addr", s.Addr())
	return s, nil
}

// drain stops the server once the scrapes under way are answered (drainTimeout at most), so
// that none reads the store while it closes.
func (s *localServer) drain() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	s.srv.Shutdown(ctx)
	s.close()
}

// metricsCollector reads the daemon's state when scraped.
type metricsCollector struct {
	d           *Daemon
	sm          sysMounter
	totalsEvery time.Duration // storeTotalsEvery; tests set 0

	mu     sync.Mutex // guards the store totals below; held while they are computed
	at     time.Time
	totals backend.StoreStats
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descUp        = desc("fusevol_store_up", "1 when the store is open and served.")
	descUptime    = desc("fusevol_uptime_seconds", "Time since the daemon started.")
	descBuild     = desc("fusevol_build_info", "The daemon's version and Go version (value 1).", "version", "go_version")
	descVolumes   = desc("fusevol_volumes", "Volumes in the store.")
	descUsed      = desc("fusevol_volume_used_bytes", "Allocated logical bytes of a volume's committed data, before dedup.", "volume")
	descFiles     = desc("fusevol_volume_files", "Inodes of a volume, its root included.", "volume")
	descQuota     = desc("fusevol_volume_quota_bytes", "A volume's size limit (volumes without one have no series).", "volume")
	descSnaps     = desc("fusevol_volume_snapshots", "Snapshots of a volume.", "volume")
	descLogical   = desc("fusevol_store_logical_bytes", "Bytes of every chunk reference of every volume and snapshot (refreshed every 30 s at most).")
	descUnique    = desc("fusevol_store_unique_bytes", "Plain bytes of the distinct chunks.")
	descPhysical  = desc("fusevol_store_physical_bytes", "Bytes of the distinct chunks as stored, after compression.")
	descChunks    = desc("fusevol_store_chunks", "Distinct chunks.")
	descDedup     = desc("fusevol_store_dedup_ratio", "Logical bytes over unique bytes.")
	descDisk      = desc("fusevol_store_disk_bytes", "The store's size on disk (LSM tree and value log).")
	descHits      = desc("fusevol_cache_hits_total", "Chunk cache lookups served from the cache (or a load under way).")
	descMisses    = desc("fusevol_cache_misses_total", "Chunk cache loads from the store, read-ahead included.")
	descCacheB    = desc("fusevol_cache_bytes", "Bytes the chunk cache holds.")
	descCacheMax  = desc("fusevol_cache_max_bytes", "The chunk cache's budget.")
	descDirty     = desc("fusevol_dirty_bytes", "Written data buffered, not yet committed to the store.")
	descDirtyMax  = desc("fusevol_write_buffer_bytes", "The write-buffer budget shared by the mounts.")
	descMounts    = desc("fusevol_mounts", "FUSE mounts: kind=volume for live volumes, kind=snapshot for volctl snapshot mounts.", "kind")
	descDockerRef = desc("fusevol_docker_mount_refs", "Docker mount references of a volume (containers using it).", "volume")
	descVolctl    = desc("fusevol_volctl_mounts", "volctl mounts of a volume's live state.", "volume")
	descGCPasses  = desc("fusevol_gc_runs_total", "Store GC passes (background and volctl gc).")
	descGCSeconds = desc("fusevol_gc_seconds_total", "Time spent in GC passes (writers do not wait for them).")
	descRewrites  = desc("fusevol_gc_vlog_rewrites_total", "Value-log files GC rewrote to give their garbage back to the disk.")
	descSwept     = desc("fusevol_gc_swept_bytes_total", "Bytes of unreferenced chunk bodies GC deleted, as stored (the disk gets them back as the value log is rewritten).")
)

var allDescs = []*prometheus.Desc{descUp, descUptime, descBuild, descVolumes, descUsed, descFiles, descQuota,
	descSnaps, descLogical, descUnique, descPhysical, descChunks, descDedup, descDisk, descHits, descMisses,
	descCacheB, descCacheMax, descDirty, descDirtyMax, descMounts, descDockerRef, descVolctl, descGCPasses,
	descGCSeconds, descRewrites, descSwept}

func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descUptime, time.Since(c.d.started).Seconds())
	gauge(descBuild, 1, c.d.cfg.Version, runtime.Version())
	cs := c.sm.cache.Stats()
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(cs.Hits))
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(cs.Misses))
	gauge(descCacheB, float64(cs.Bytes))
	gauge(descCacheMax, float64(cs.Max))
	gauge(descDirty, float64(c.sm.budget.Used()))
	gauge(descDirtyMax, float64(c.sm.budget.Limit()))
	c.collectMounts(gauge)

	st := c.openStore()
	if st == nil {
		gauge(descUp, 0)
		return
	}
	gauge(descUp, 1)
	gc := st.GCStats()
	ch <- prometheus.MustNewConstMetric(descGCPasses, prometheus.CounterValue, float64(gc.Passes))
	ch <- prometheus.MustNewConstMetric(descGCSeconds, prometheus.CounterValue, gc.Time.Seconds())
	ch <- prometheus.MustNewConstMetric(descRewrites, prometheus.CounterValue, float64(gc.Rewrites))
	ch <- prometheus.MustNewConstMetric(descSwept, prometheus.CounterValue, float64(gc.Swept))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.collectVolumes(ctx, st, gauge); err != nil {
		ch <- prometheus.NewInvalidMetric(descVolumes, err)
	}
	if err := c.collectTotals(ctx, st, gauge); err != nil {
		ch <- prometheus.NewInvalidMetric(descLogical, err)
	}
}

// openStore is the store when it is open and the daemon not shutting down; a scrape never waits
// for it.
func (c *metricsCollector) openStore() *backend.Store {
	select {
	case <-c.d.ready:
	default:
		return nil
	}
	select {
	case <-c.d.stop:
		return nil
	default:
	}
	if c.d.openErr != nil {
		return nil
	}
	return c.d.store
}

type gaugeFunc func(d *prometheus.Desc, v float64, labels ...string)

// collectMounts reports the mount table: FUSE mounts and, by volume, their references.
func (c *metricsCollector) collectMounts(gauge gaugeFunc) {
	t := c.d.mounts
	type refs struct{ docker, volctl int }
	var live, snaps int
	byVol := map[string]refs{}
	t.mu.Lock()
	for name, v := range t.vols {
		if v.mnt != nil {
			live++
		}
		snaps += len(v.snaps)
		r := refs{volctl: len(v.binds)}
		for _, n := range v.refs {
			r.docker += n
		}
		if r.docker > 0 || r.volctl > 0 {
			byVol[name] = r
		}
	}
	t.mu.Unlock()
	gauge(descMounts, float64(live), "volume")
	gauge(descMounts, float64(snaps), "snapshot")
	for name, r := range byVol {
		gauge(descDockerRef, float64(r.docker), name)
		gauge(descVolctl, float64(r.volctl), name)
	}
}

// collectVolumes reports every volume's usage, quota and snapshot count, read now.
func (c *metricsCollector) collectVolumes(ctx context.Context, st *backend.Store, gauge gaugeFunc) error {
	vols, err := st.ListVolumes(ctx)
	if err != nil {
		return err
	}
	snaps, err := st.ListSnapshots(ctx, "")
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, s := range snaps {
		if s.RemovedAt.IsZero() {
			count[s.Volume]++
		}
	}
	gauge(descVolumes, float64(len(vols)))
	for _, v := range vols {
		u, err := st.Usage(ctx, v.Name)
		if errors.Is(err, backend.ErrNotFound) {
			continue // removed since the list was read
		}
		if err != nil {
			return err
		}
		gauge(descUsed, float64(u.Bytes), v.Name)
		gauge(descFiles, float64(u.Files), v.Name)
		gauge(descSnaps, float64(count[v.Name]), v.Name)
		if v.Options.Size > 0 {
			gauge(descQuota, float64(v.Options.Size), v.Name)
		}
	}
	return nil
}

// collectTotals reports the store-wide totals, computed again when older than storeTotalsEvery.
func (c *metricsCollector) collectTotals(ctx context.Context, st *backend.Store, gauge gaugeFunc) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.totalsEvery {
		s, err := st.Stats(ctx)
		if err != nil {
			return err
		}
		c.totals, c.at = s, time.Now()
	}
	s := c.totals
	gauge(descLogical, float64(s.LogicalBytes))
	gauge(descUnique, float64(s.UniqueBytes))
	gauge(descPhysical, float64(s.PhysicalBytes))
	gauge(descChunks, float64(s.Chunks))
	gauge(descDedup, s.DedupRatio)
	gauge(descDisk, float64(s.DiskBytes))
	return nil
}
