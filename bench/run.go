package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Options is one run of the harness.
type Options struct {
	Config Config
	// Builtin lists the built-in targets to run, in order (native, loopback, fusevol).
	Builtin []string
	// External are already-mounted directories to compare (--target NAME=PATH), in order.
	External []ExternalTarget
	// WorkDir holds the native directory, the loopback backing directory and the fusevol store,
	// so they share a filesystem. "" means a new directory under /var/tmp.
	WorkDir string
	// Volctl is the volctl binary that runs the fusevol daemon.
	Volctl string
	// OutDir receives results.json, results.svg and results.md.
	OutDir string
	// Command is recorded in the report, to say how the figures were made.
	Command string
	Logger  *slog.Logger
	// Out receives the table and the goals check.
	Out io.Writer
}

// ExternalTarget is a --target NAME=PATH.
type ExternalTarget struct{ Name, Path string }

// Output file names inside OutDir.
const (
	JSONFile     = "results.json"
	SVGFile      = "results.svg"
	MarkdownFile = "results.md"
)

// Run measures every target, writes the outputs and returns the report. The error is about the
// run itself (a target that could not start, outputs that could not be written); workloads that
// failed on a target are listed in Report.Failures.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	r := &runner{o: o, log: o.Logger}
	rep, err := r.run(ctx)
	if rep == nil {
		return nil, err
	}
	// A run that measured everything but failed to shut a target down still reports its figures.
	if werr := rep.writeOutputs(o.OutDir); werr != nil {
		return rep, errors.Join(err, werr)
	}
	rep.WriteTable(o.Out)
	fmt.Fprintln(o.Out)
	rep.WriteGoals(o.Out)
	return rep, err
}

type runner struct {
	o        Options
	log      *slog.Logger
	work     string
	warnings []string
	hists    []Histogram
	dropped  bool
}

// warn logs a caveat about the whole run and records it in the report.
func (r *runner) warn(msg string) {
	if slices.Contains(r.warnings, msg) {
		return
	}
	r.log.Warn(msg)
	r.warnings = append(r.warnings, msg)
}

func (r *runner) run(ctx context.Context) (rep *Report, err error) {
	started := time.Now()
	cfg := r.o.Config
	if r.work = r.o.WorkDir; r.work == "" {
		if r.work, err = os.MkdirTemp("/var/tmp", "fusevol-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(r.work)
		// The pgbench workload's server runs as user postgres, which must reach the targets.
		if err := os.Chmod(r.work, 0o755); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(r.work, 0o755); err != nil {
		return nil, err
	}
	r.dropped = os.Geteuid() == 0
	if !r.dropped {
		r.warn("not root: caches cannot be dropped, so cold-read figures are warm")
	}
	base := &env{cfg: cfg, pools: newPools(), drop: r.dropCaches, warn: r.warn,
		histogram: func(h Histogram) { r.hists = append(r.hists, h) }}
	if base.tree, err = newTreeArchive(base.pools, cfg.TreeFiles); err != nil {
		return nil, fmt.Errorf("build source-tree archive: %w", err)
	}

	targets, err := r.startTargets(ctx)
	defer func() {
		for i := len(targets) - 1; i >= 0; i-- {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
			if cerr := targets[i].Close(cctx); cerr != nil {
				err = errors.Join(err, fmt.Errorf("close target %s: %w", targets[i].Name(), cerr))
			}
			cancel()
		}
	}()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name()
	}
	res := newResults(Catalogue(cfg), names)

	for rep := 0; rep < cfg.Reps; rep++ {
		for _, t := range targets {
			r.log.Info("running", "target", t.Name(), "rep", rep+1, "of", cfg.Reps)
			r.runCommon(ctx, base, res, t, rep)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range targets {
		if fv, ok := t.(*fusevolTarget); ok {
			for _, g := range fusevolGroups(cfg) {
				if !cfg.selected(g.name) {
					continue
				}
				r.log.Info("running fusevol-only workload", "metrics", strings.Join(g.metrics, ","))
				r.runGroup(ctx, res, t.Name(), g.metrics, func(rec recorder) error {
					return g.run(ctx, base, fv, rec)
				})
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r.report(res, started), nil
}

// runCommon runs one repetition of the workloads every target runs.
func (r *runner) runCommon(ctx context.Context, base *env, res *results, t Target, rep int) {
	e := *base
	if fv, ok := t.(*fusevolTarget); ok {
		e.rss = fv
		e.volumes = fv.extraVolumes
	}
	for _, g := range commonGroups() {
		if !e.cfg.selected(g.name) || (g.db && rep >= e.cfg.DBReps) {
			continue
		}
		metrics, dir := g.metrics, t.Dir()
		if e.rss != nil && g.name == "seq" {
			metrics = append(metrics[:len(metrics):len(metrics)], MPeakRSS, MPeakAnon)
		}
		if c, ok := t.(compressedTarget); ok && g.name == "compress" {
			dir = c.CompressedDir()
		}
		r.runGroup(ctx, res, t.Name(), metrics, func(rec recorder) error {
			return g.run(ctx, &e, dir, rep, rec)
		})
	}
}

// runGroup runs one workload group; if it fails, every figure it did not produce is marked failed.
func (r *runner) runGroup(ctx context.Context, res *results, target string, metrics []string, run func(recorder) error) {
	got := map[string]bool{}
	err := run(func(m string, v float64) {
		res.add(target, m, v)
		got[m] = true
	})
	if err == nil {
		for _, m := range metrics {
			if !got[m] {
				err = fmt.Errorf("workload finished without measuring %s", m)
			}
		}
	}
	if msg, ok := isSkip(err); ok {
		r.warn(msg)
		return
	}
	if err != nil && ctx.Err() == nil {
		r.log.Error("workload failed", "target", target, "metrics", strings.Join(metrics, ","), "err", err)
		for _, m := range metrics {
			if !got[m] {
				res.fail(target, m, err)
			}
		}
	}
}

func (r *runner) startTargets(ctx context.Context) ([]Target, error) {
	var ts []Target
	for _, name := range r.o.Builtin {
		var t Target
		var err error
		switch name {
		case TargetNative:
			dir := filepath.Join(r.work, "native")
			if err = os.MkdirAll(dir, 0o755); err == nil {
				t = &dirTarget{name: TargetNative, dir: dir}
			}
		case TargetLoopback:
			t, err = startLoopback(r.work)
		case TargetFusevol:
			if r.o.Volctl == "" {
				err = errors.New("fusevol target: no volctl binary given")
			} else {
				t, err = startFusevol(ctx, r.o.Volctl, r.work, r.o.Config.Compression)
			}
		default:
			err = fmt.Errorf("unknown built-in target %q (want native, loopback or fusevol)", name)
		}
		if err != nil {
			return ts, err
		}
		ts = append(ts, t)
	}
	for _, x := range r.o.External {
		t, err := newDirTarget(x.Name, x.Path)
		if err != nil {
			return ts, err
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil, errors.New("no targets to measure")
	}
	return ts, nil
}

// dropCaches writes back dirty pages and empties the page, dentry and inode caches.
func (r *runner) dropCaches() {
	if !r.dropped {
		return
	}
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		r.dropped = false
		r.warn(fmt.Sprintf("cannot drop caches (%v): cold-read figures are warm from now on", err))
	}
}

func (r *runner) report(res *results, started time.Time) *Report {
	host, _ := os.Hostname()
	var uts syscall.Utsname
	kernel := ""
	if syscall.Uname(&uts) == nil {
		kernel = utsString(uts.Release[:])
	}
	rep := &Report{
		Meta: Meta{
			Started: started.UTC(), Seconds: time.Since(started).Seconds(), Command: r.o.Command,
			Host: host, Kernel: kernel, GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
			CachesDropped: r.dropped, Config: r.o.Config, Warnings: r.warnings,
		},
		Targets:    res.targets,
		Workloads:  res.workloads(),
		Histograms: r.hists,
	}
	rep.Goals = CheckGoals(rep)
	return rep
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}
