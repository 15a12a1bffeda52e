// Command fusevol-bench measures fusevol side by side with a native directory, go-fuse's loopback
// filesystem and any other mounted filesystem, and writes a table, results.json and results.svg.
//
//	fusevol-bench --volctl bin/volctl --out bench/results          # full size (make bench)
//	fusevol-bench --smoke --volctl bin/volctl --out /tmp/smoke     # every workload, tiny (make bench-smoke)
//	fusevol-bench --target ext4=/mnt/data --targets native,fusevol # compare with another filesystem
//	fusevol-bench --targets loopback,fusevol --only small,tree      # iterate on some workloads
//
// The exit status is 0 when every figure was measured (goals missed do not count), 1 when a
// target could not run or a figure could not be measured, and 2 for a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/bench"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

type targetList []bench.ExternalTarget

func (l *targetList) String() string { return fmt.Sprint(*l) }
func (l *targetList) Set(s string) error {
	name, path, err := bench.ParseTargetSpec(s)
	if err != nil {
		return err
	}
	*l = append(*l, bench.ExternalTarget{Name: name, Path: path})
	return nil
}

type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil {
		return ""
	}
	return fmt.Sprint(*f.v)
}
func (f sizeFlag) Set(s string) (err error) { *f.v, err = bench.ParseSize(s); return err }

type countsFlag struct{ v *[]int }

func (f countsFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strings.Trim(strings.Join(strings.Fields(fmt.Sprint(*f.v)), ","), "[]")
}
func (f countsFlag) Set(s string) (err error) { *f.v, err = bench.ParseCounts(s); return err }

func run(args []string, stdout, stderr io.Writer) int {
	cfg := bench.Full()
	fl := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fl.SetOutput(stderr)
	smoke := fl.Bool("smoke", false, "tiny sizes: every workload in seconds (explicit size flags still apply)")
	out := fl.String("out", "bench/results", "directory for results.json, results.svg and results.md")
	work := fl.String("workdir", "", "directory for the native target, loopback backing dir and fusevol store; kept afterwards with the daemon logs (default: a new dir in /var/tmp, removed)")
	builtin := fl.String("targets", "native,loopback,fusevol", "built-in targets to run, comma-separated")
	volctl := fl.String("volctl", "", "volctl binary for the fusevol daemon (default: go build ./cli/volctl)")
	verbose := fl.Bool("v", false, "log progress")
	var ext targetList
	fl.Var(&ext, "target", "NAME=PATH: also measure this already-mounted directory (repeatable)")
	fl.IntVar(&cfg.Reps, "reps", cfg.Reps, "repetitions; figures are medians")
	fl.Var(sizeFlag{&cfg.SeqSize}, "seq-size", "sequential file size")
	fl.DurationVar(&cfg.RandDuration, "rand-duration", cfg.RandDuration, "duration of each random 4 KiB phase")
	fl.DurationVar(&cfg.FsyncDuration, "fsync-duration", cfg.FsyncDuration, "duration of the write+fsync loop")
	fl.IntVar(&cfg.SmallFiles, "small-files", cfg.SmallFiles, "files in the small-file and readdir workloads")
	fl.IntVar(&cfg.SmallSize, "small-size", cfg.SmallSize, "bytes per small file")
	fl.IntVar(&cfg.TreeFiles, "tree-files", cfg.TreeFiles, "files in the source-tree unpack")
	fl.Var(sizeFlag{&cfg.CompressSize}, "compress-size", "compressible write size")
	fl.Var(sizeFlag{&cfg.DedupSize}, "dedup-size", "bytes written into each of the four dedup volumes")
	fl.Var(countsFlag{&cfg.SnapFiles}, "snap-files", "file counts for snapshot and clone latency, comma-separated")
	fl.IntVar(&cfg.SnapReps, "snap-reps", cfg.SnapReps, "snapshots and clones timed at each file count")
	fl.StringVar(&cfg.Compression, "compression", cfg.Compression, "fusevol compression for the compressible workload")
	fl.DurationVar(&cfg.SoakDuration, "soak-duration", cfg.SoakDuration, "duration of the fusevol-only overwrite+fsync soak")
	fl.Var(sizeFlag{&cfg.SoakSize}, "soak-size", "file size of the soak (a multiple of 1 MiB)")
	fl.Var(sizeFlag{&cfg.FioSize}, "fio-size", "most bytes each write+fsync writer writes (it also stops after --fsync-duration)")
	fl.IntVar(&cfg.SQLiteCommits, "sqlite-commits", cfg.SQLiteCommits, "one-row commits in each SQLite journal mode")
	fl.IntVar(&cfg.PgScale, "pg-scale", cfg.PgScale, "pgbench scale factor (-i -s)")
	fl.DurationVar(&cfg.PgDuration, "pg-duration", cfg.PgDuration, "pgbench run time (-T, whole seconds)")
	fl.IntVar(&cfg.DBReps, "db-reps", cfg.DBReps, "repetitions of the database workloads (SQLite, pgbench), at most --reps")
	only := fl.String("only", "", "run only these workload groups, comma-separated: "+strings.Join(bench.GroupNames(), ", "))
	fl.BoolVar(&cfg.Verify, "verify", cfg.Verify, "read data back and compare it (adds CPU time to read phases)")
	if err := fl.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *smoke {
		applySmoke(fl, &cfg)
	}
	for _, g := range strings.Split(*only, ",") {
		if g = strings.TrimSpace(g); g != "" {
			cfg.Only = append(cfg.Only, g)
		}
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fl.Arg(0))
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var targets []string
	for _, t := range strings.Split(*builtin, ",") {
		if t = strings.TrimSpace(t); t != "" {
			targets = append(targets, t)
		}
	}
	if *volctl == "" && contains(targets, bench.TargetFusevol) {
		bin, cleanup, err := buildVolctl(ctx)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer cleanup()
		*volctl = bin
	}
	rep, err := bench.Run(ctx, bench.Options{
		Config: cfg, Builtin: targets, External: ext, WorkDir: *work, Volctl: *volctl,
		OutDir: *out, Command: strings.Join(append([]string{"fusevol-bench"}, args[1:]...), " "), Logger: logger, Out: stdout,
	})
	if err != nil {
		fmt.Fprintln(stderr, "fusevol-bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nwrote %s, %s and %s in %s (%.0f s)\n", bench.MarkdownFile, bench.JSONFile, bench.SVGFile, *out, rep.Meta.Seconds)
	if f := rep.Failures(); len(f) > 0 {
		fmt.Fprintf(stderr, "fusevol-bench: %d figure(s) could not be measured:\n  %s\n", len(f), strings.Join(f, "\n  "))
		return 1
	}
	return 0
}

// applySmoke replaces every configuration value the command line did not set with its smoke value.
func applySmoke(fl *flag.FlagSet, cfg *bench.Config) {
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	s := bench.Smoke()
	for name, apply := range map[string]func(){
		"reps":           func() { cfg.Reps = s.Reps },
		"seq-size":       func() { cfg.SeqSize = s.SeqSize },
		"rand-duration":  func() { cfg.RandDuration = s.RandDuration },
		"fsync-duration": func() { cfg.FsyncDuration = s.FsyncDuration },
		"small-files":    func() { cfg.SmallFiles = s.SmallFiles },
		"small-size":     func() { cfg.SmallSize = s.SmallSize },
		"tree-files":     func() { cfg.TreeFiles = s.TreeFiles },
		"compress-size":  func() { cfg.CompressSize = s.CompressSize },
		"dedup-size":     func() { cfg.DedupSize = s.DedupSize },
		"snap-files":     func() { cfg.SnapFiles = s.SnapFiles },
		"snap-reps":      func() { cfg.SnapReps = s.SnapReps },
		"compression":    func() { cfg.Compression = s.Compression },
		"fio-size":       func() { cfg.FioSize = s.FioSize },
		"soak-duration":  func() { cfg.SoakDuration = s.SoakDuration },
		"soak-size":      func() { cfg.SoakSize = s.SoakSize },
		"sqlite-commits": func() { cfg.SQLiteCommits = s.SQLiteCommits },
		"pg-scale":       func() { cfg.PgScale = s.PgScale },
		"pg-duration":    func() { cfg.PgDuration = s.PgDuration },
		"db-reps":        func() { cfg.DBReps = s.DBReps },
		"verify":         func() { cfg.Verify = s.Verify },
	} {
		if !set[name] {
			apply()
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// buildVolctl builds ./cli/volctl into a temporary directory (run from the module root).
func buildVolctl(ctx context.Context) (string, func(), error) {
	dir, err := os.MkdirTemp("", "fusevol-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "volctl")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cli/volctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build volctl (pass --volctl to use a built binary): %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}
