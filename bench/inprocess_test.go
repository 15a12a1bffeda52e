package bench

import (
	"context"
	"github.com/fusevol/fusevol/fs/fusetest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
)

// BenchmarkWorkloads runs the harness's common workloads as Go benchmarks on native, loopback and
// a fusevol volume mounted in this very process (fs.Mount over a backend.Store), so that
//
//	go test -run '^$' -bench 'Workloads/fusevol/small' -cpuprofile cpu.out ./bench/
//
// profiles fs and backend code on exactly what the harness measures. Each workload's figures are
// reported as custom metrics; sizes are moderate (the full-size comparison is `make bench`).
func BenchmarkWorkloads(b *testing.B) {
	fusetest.Require(b)
	ctx := context.Background()
	cfg := Smoke()
	cfg.Verify = false
	cfg.SeqSize, cfg.CompressSize = 256<<20, 64<<20
	cfg.RandDuration, cfg.FsyncDuration = time.Second, time.Second
	cfg.SmallFiles, cfg.TreeFiles = 2000, 1000
	work := b.TempDir()
	e := &env{cfg: cfg, pools: newPools(), drop: func() {}, warn: func(string) {}}
	var err error
	if e.tree, err = newTreeArchive(e.pools, cfg.TreeFiles); err != nil {
		b.Fatal(err)
	}
	if os.Geteuid() == 0 {
		e.drop = func() {
			syscall.Sync()
			_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		}
	}
	native := &dirTarget{name: TargetNative, dir: filepath.Join(work, "native")}
	if err := os.Mkdir(native.dir, 0o755); err != nil {
		b.Fatal(err)
	}
	loop, err := startLoopback(work)
	if err != nil {
		b.Fatal(err)
	}
	defer loop.Close(ctx)
	fv, err := startInProcess(ctx, work)
	if err != nil {
		b.Fatal(err)
	}
	defer fv.Close(ctx)
	for _, t := range []Target{native, loop, fv} {
		for _, g := range commonGroups() {
			b.Run(t.Name()+"/"+g.name, func(b *testing.B) {
				figures := map[string][]float64{}
				for i := 0; i < b.N; i++ {
					err := g.run(ctx, e, t.Dir(), i, func(m string, v float64) { figures[m] = append(figures[m], v) })
					if err != nil {
						b.Fatal(err)
					}
				}
				for _, m := range Catalogue(cfg) {
					if s, ok := figures[m.ID]; ok {
						b.ReportMetric(median(s), m.ID+"_"+m.Unit)
					}
				}
			})
		}
	}
}

// inProcessTarget is a fusevol volume served by this process.
type inProcessTarget struct {
	store *backend.Store
	mount *fs.Mounted
}

func startInProcess(ctx context.Context, work string) (*inProcessTarget, error) {
	store, err := backend.Open(ctx, filepath.Join(work, "inproc-store"), backend.Options{})
	if err != nil {
		return nil, err
	}
	t := &inProcessTarget{store: store}
	opts, err := backend.ParseVolumeOptions(nil)
	if err == nil {
		_, err = store.CreateVolume(ctx, volMain, opts)
	}
	var view *backend.View
	if err == nil {
		view, err = store.OpenVolume(ctx, volMain)
	}
	dir := filepath.Join(work, "inproc-mnt")
	if err == nil {
		err = os.Mkdir(dir, 0o755)
	}
	if err == nil {
		t.mount, err = fs.Mount(ctx, dir, view, fs.Options{})
	}
	if err != nil {
		store.Close()
		return nil, err
	}
	return t, nil
}

func (t *inProcessTarget) Name() string { return TargetFusevol }
func (t *inProcessTarget) Dir() string  { return t.mount.Dir() }
func (t *inProcessTarget) Close(ctx context.Context) error {
	err := t.mount.Unmount(ctx)
	if cerr := t.store.Close(); err == nil {
		err = cerr
	}
	return err
}
