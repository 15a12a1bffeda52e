package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/client"
)

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

func getMetrics(t testing.TB, c *http.Client, url string) scrape {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value is the value of the series of name whose labels include labels ("k=v" each); for a
// histogram, its count. ok is false when there is no such series.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func (s scrape) must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, labels)
	}
	return v
}

// The metrics move as a workload runs: writing N bytes and fsyncing them through a Docker mount
// adds N to the volume's written bytes, at least one fsync, and N (within the chunk rounding) to
// its used bytes; the volume's quota, snapshots, mount reference and the store's totals show.
func TestMetricsFollowWorkload(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "", func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	fusetest.WaitReady(t, td.sock, td.run.Done())
	url := "http://" + td.MetricsAddr() + "/metrics"
	td.metrics.collector.totalsEvery = 0 // every scrape sees this test's writes in the totals
	c := &http.Client{Timeout: 30 * time.Second}

	td.ok(t, "VolumeDriver.Create", `{"Name":"m","Opts":{"size":"64MiB"}}`)
	mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"m","ID":"c1"}`)["Mountpoint"].(string)
	if _, err := client.New(td.sock).CreateSnapshot(context.Background(), "m", "s1"); err != nil {
		t.Fatal(err)
	}
	before := getMetrics(t, c, url)
	if v := before.must(t, "fusevol_store_up"); v != 1 {
		t.Fatalf("fusevol_store_up %v, want 1", v)
	}

	const n = 3<<20 + 12345 // not a multiple of the chunk size
	f, err := os.Create(filepath.Join(mp, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{0xA5, 0x5A, 7}, n/3)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	after := getMetrics(t, c, url)

	chunk := float64(backend.DefaultChunkSize)
	grew := func(name string, labels ...string) float64 {
		was, _ := before.value(name, labels...) // a series appears with its first event
		return after.must(t, name, labels...) - was
	}
	if d := grew("fusevol_written_bytes_total", "volume=m"); d != n {
		t.Errorf("written bytes grew by %v, want %d", d, n)
	}
	if d := grew("fusevol_fsync_duration_seconds", "volume=m"); d < 1 {
		t.Errorf("fsync count grew by %v, want at least 1", d)
	}
	if d := grew("fusevol_committed_bytes_total", "volume=m"); d < n-chunk || d > n+chunk {
		t.Errorf("committed bytes grew by %v, want about %d", d, n)
	}
	if d := grew("fusevol_commit_duration_seconds"); d < 1 {
		t.Errorf("commits grew by %v", d)
	}
	if d := grew("fusevol_fuse_operations_total", "volume=m", "op=write"); d < 1 {
		t.Errorf("write operations grew by %v", d)
	}
	// The file's whole chunks are committed; its partial last chunk may wait in the intent log
	// (a small fsync's fast path), counted once settled.
	if d := grew("fusevol_volume_used_bytes", "volume=m"); d < n-chunk || d > n+chunk {
		t.Errorf("used bytes grew by %v, want %v to %v", d, n-chunk, n+chunk)
	}
	if d := grew("fusevol_volume_files", "volume=m"); d != 1 {
		t.Errorf("files grew by %v, want 1", d)
	}
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fusevol_volume_quota_bytes", []string{"volume=m"}, 64 << 20},
		{"fusevol_volume_snapshots", []string{"volume=m"}, 1},
		{"fusevol_docker_mount_refs", []string{"volume=m"}, 1},
		{"fusevol_mounts", []string{"kind=volume"}, 1},
		{"fusevol_volumes", nil, 1},
		{"fusevol_build_info", []string{"version=dev"}, 1},
	} {
		if v := after.must(t, tt.name, tt.labels...); v != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, v, tt.want)
		}
	}
	for _, name := range []string{"fusevol_store_logical_bytes", "fusevol_store_disk_bytes", "fusevol_uptime_seconds",
		"fusevol_cache_max_bytes", "fusevol_write_buffer_bytes", "fusevol_fuse_operation_duration_seconds"} {
		if v := after.must(t, name); v <= 0 {
			t.Errorf("%s = %v, want more than 0", name, v)
		}
	}
	for _, name := range []string{"fusevol_store_dedup_ratio", "fusevol_gc_runs_total", "fusevol_gc_seconds_total", "fusevol_gc_vlog_rewrites_total", "fusevol_gc_swept_bytes_total"} {
		if _, ok := after.value(name); !ok {
			t.Errorf("no %s", name)
		}
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"m","ID":"c1"}`)
	unmounted := getMetrics(t, c, url)
	if d := unmounted.must(t, "fusevol_volume_used_bytes", "volume=m") - before.must(t, "fusevol_volume_used_bytes", "volume=m"); d < n || d > n+chunk {
		t.Errorf("after unmount, used bytes grew by %v, want %d to %v", d, n, n+chunk)
	}
	if v := unmounted.must(t, "fusevol_mounts", "kind=volume"); v != 0 {
		t.Errorf("%v volume mounts after the last unmount", v)
	}
	if _, err := client.New(td.sock).GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	collected := getMetrics(t, c, url)
	if d := collected.must(t, "fusevol_gc_runs_total") - unmounted.must(t, "fusevol_gc_runs_total"); d < 1 {
		t.Errorf("gc runs grew by %v over volctl gc, want at least 1", d)
	}
}

// A failed request is counted under its errno; a removed volume's series go with it.
func TestMetricsErrno(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "", func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	td.ok(t, "VolumeDriver.Create", `{"Name":"e"}`)
	mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"e","ID":"c1"}`)["Mountpoint"].(string)
	if err := os.MkdirAll(filepath.Join(mp, "d", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mp, "d")); err == nil {
		t.Fatal("removed a directory that is not empty")
	}
	s := getMetrics(t, http.DefaultClient, "http://"+td.MetricsAddr()+"/metrics")
	if v := s.must(t, "fusevol_fuse_errors_total", "volume=e", "op=rmdir", "errno=ENOTEMPTY"); v != 1 {
		t.Errorf("rmdir ENOTEMPTY counted %v times, want 1", v)
	}

	// A removed volume's series go; another volume's stay.
	td.ok(t, "VolumeDriver.Create", `{"Name":"kept"}`)
	kept := td.ok(t, "VolumeDriver.Mount", `{"Name":"kept","ID":"c2"}`)["Mountpoint"].(string)
	if err := os.WriteFile(filepath.Join(kept, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"e","ID":"c1"}`)
	td.ok(t, "VolumeDriver.Remove", `{"Name":"e"}`)
	s = getMetrics(t, http.DefaultClient, "http://"+td.MetricsAddr()+"/metrics")
	for _, name := range []string{"fusevol_fuse_errors_total", "fusevol_fuse_operations_total", "fusevol_written_bytes_total",
		"fusevol_fsync_duration_seconds", "fusevol_committed_bytes_total", "fusevol_volume_used_bytes"} {
		if v, ok := s.value(name, "volume=e"); ok {
			t.Errorf("%s{volume=e} = %v after the volume was removed", name, v)
		}
	}
	if v := s.must(t, "fusevol_written_bytes_total", "volume=kept"); v != 1 {
		t.Errorf("the kept volume's written bytes %v, want 1", v)
	}
}

// On a unix socket the metrics are served (socket of mode 0600), nothing but /metrics is, and the
// socket is gone once the daemon stops.
func TestMetricsUnixSocket(t *testing.T) {
	root := fusetest.TempRoot(t, "fusevol-metrics-")
	sock := filepath.Join(root, "m", "metrics.sock")
	td := startDaemon(t, root, func(c *Config) { c.MetricsAddr = sock })
	fusetest.WaitReady(t, td.sock, td.run.Done())
	if td.MetricsAddr() != sock {
		t.Fatalf("MetricsAddr %q, want %q", td.MetricsAddr(), sock)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("metrics socket: %v, %v; want a socket of mode 0600", fi, err)
	}
	c := fusetest.UnixHTTP(sock)
	s := getMetrics(t, c, "http://localhost/metrics")
	if v := s.must(t, "fusevol_store_up"); v != 1 {
		t.Errorf("fusevol_store_up %v, want 1", v)
	}
	if _, ok := s.value("process_resident_memory_bytes"); !ok {
		t.Error("no process metrics")
	}
	for _, path := range []string{"/", "/debug/pprof/", "/fusevol/v1/status"} {
		resp, err := c.Get("http://localhost" + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
	td.stop(t)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("metrics socket left behind: %v", err)
	}
}

// Without Config.MetricsAddr nothing listens and mounts get no observer.
func TestMetricsOffByDefault(t *testing.T) {
	d, err := NewDaemon(Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if d.metrics != nil || d.mounts.sys.(sysMounter).observe != nil {
		t.Fatal("metrics set up without a metrics address")
	}
}

// NewDaemon refuses a metrics address another machine could reach, naming it (parseLocalAddr's
// table, TestParseLocalAddr, covers the rest).
func TestNewDaemonRefusesMetricsAddr(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"0.0.0.0:9567", "0.0.0.0 is not a loopback address"},
		{"[::]:9567", ":: is not a loopback address"},
		{":9567", "listen on every interface"},
		{"192.0.2.1:9567", "192.0.2.1 is not a loopback address"},
		{"metrics.sock", "unix socket path"},
		{"127.0.0.1:99999", "not a number from 0 to 65535"},
	} {
		t.Run(tt.addr, func(t *testing.T) {
			_, err := NewDaemon(Config{Root: t.TempDir(), MetricsAddr: tt.addr})
			want := fmt.Sprintf("metrics address %q", tt.addr)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewDaemon: %v; want an error with %s and %q", err, want, tt.want)
			}
		})
	}
}

// BenchmarkScrape100Volumes is issue 15's figure: one scrape (HTTP GET of /metrics, gzip as
// Prometheus asks for it, and reading it) of a daemon with 100 volumes, each mounted through
// Docker's protocol, written, fsynced and read once, so that every per-volume series exists.
// Reported: series (samples in the scrape, each histogram bucket one) and scrape-KB (plain).
// totals-fresh recomputes the store totals at every scrape (the worst case, a scrape every 30 s),
// totals-reused serves them from the last one. Run it with
//
//	go test ./plugin/ -run '^$' -bench BenchmarkScrape100Volumes -benchtime 20x -count 3
func BenchmarkScrape100Volumes(b *testing.B) {
	fusetest.Require(b)
	td := startDaemon(b, "", quiet, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	for i := range 100 {
		name := fmt.Sprintf("v%03d", i)
		td.ok(b, "VolumeDriver.Create", fmt.Sprintf(`{"Name":%q,"Opts":{"size":"1GiB"}}`, name))
		mp := td.ok(b, "VolumeDriver.Mount", fmt.Sprintf(`{"Name":%q,"ID":"c"}`, name))["Mountpoint"].(string)
		p := filepath.Join(mp, "f")
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		_, err = f.Write(bytes.Repeat([]byte(name), 1024))
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = f.Close()
		}
		if _, rerr := os.ReadFile(p); err != nil || rerr != nil {
			b.Fatal(err, rerr)
		}
	}
	url := "http://" + td.MetricsAddr() + "/metrics"
	c := &http.Client{}
	if v := getMetrics(b, c, url).must(b, "fusevol_volumes"); v != 100 {
		b.Fatalf("fusevol_volumes %v, want 100", v)
	}
	for _, tt := range []struct {
		name  string
		every time.Duration
	}{{"totals-fresh", 0}, {"totals-reused", time.Hour}} {
		b.Run(tt.name, func(b *testing.B) {
			td.metrics.collector.totalsEvery = tt.every
			var body []byte
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("scrape: %s, %v", resp.Status, err)
				}
			}
			series := 0
			for _, line := range strings.Split(string(body), "\n") {
				if line != "" && !strings.HasPrefix(line, "#") {
					series++
				}
			}
			b.ReportMetric(float64(series), "series")
			b.ReportMetric(float64(len(body))/1e3, "scrape-KB")
		})
	}
}

// BenchmarkObserve is what metrics add to each FUSE request of a mount (a mount without them
// serves its fsys directly): the observer's counter, histogram and byte updates for a write.
func BenchmarkObserve(b *testing.B) {
	d, err := NewDaemon(Config{Root: b.TempDir(), MetricsAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	obs := d.metrics.observer("vol")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			obs("write", 30*time.Microsecond, 4096, 0)
		}
	})
}

// The Grafana dashboard (plugin/grafana-dashboard.json) queries only metrics the daemon serves,
// and every panel has a query.
func TestGrafanaDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	d, err := NewDaemon(Config{Root: t.TempDir(), MetricsAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	go func() {
		m := d.metrics
		for _, c := range []prometheus.Collector{m.ops, m.opSeconds, m.errs, m.readBytes, m.writeBytes, m.copyBytes, m.fsyncs, m.commits, m.commitB, m.commitErrs, m.collector} {
			c.Describe(descs)
		}
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for desc := range descs {
		served[fqName.FindStringSubmatch(desc.String())[1]] = true
	}
	names := regexp.MustCompile(`\bfusevol_[a-z_]+`)
	used := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, name := range names.FindAllString(q.Expr, -1) {
				used++
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
				if !served[name] && !served[base] {
					t.Errorf("panel %q queries %s, which the daemon does not serve", p.Title, name)
				}
			}
		}
	}
	if used == 0 {
		t.Fatal("the dashboard queries no fusevol metric")
	}
}

// Scrapes while a workload runs see the written bytes only grow, and end at what was written;
// a scrape racing the daemon's shutdown gets an answer or a refused connection, never a crash.
func TestMetricsScrapeDuringWorkload(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "", quiet, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	td.metrics.collector.totalsEvery = 0
	td.ok(t, "VolumeDriver.Create", `{"Name":"w"}`)
	mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"w","ID":"c1"}`)["Mountpoint"].(string)
	url := "http://" + td.MetricsAddr() + "/metrics"

	const rounds, size = 40, 100_000
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(mp, "log"))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		buf := bytes.Repeat([]byte{1, 2, 3, 4}, size/4)
		for range rounds {
			if _, err := f.Write(buf); err != nil {
				done <- err
				return
			}
			if err := f.Sync(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	last, scrapes := 0.0, 0
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
		}
		v, _ := getMetrics(t, http.DefaultClient, url).value("fusevol_written_bytes_total", "volume=w")
		if v < last {
			t.Fatalf("written bytes went back from %v to %v", last, v)
		}
		last = v
		scrapes++
	}
	if last != rounds*size {
		t.Errorf("written bytes %v after the workload, want %d", last, rounds*size)
	}
	t.Logf("%d scrapes during the workload", scrapes)

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			resp, err := http.Get(url)
			if err != nil {
				return // the server is gone
			}
			resp.Body.Close()
		}
	}()
	td.stop(t)
	<-stopped
}
