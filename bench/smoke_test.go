package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"github.com/fusevol/fusevol/fs/fusetest"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmokeAllTargets runs the whole harness at smoke size against every kind of target (the
// fusevol daemon built from ./cli/volctl, the loopback mount, native and an external directory)
// and checks that every output is well-formed and holds every workload for every target.
func TestSmokeAllTargets(t *testing.T) {
	fusetest.Require(t)
	volctl := fusetest.BuildVolctl(t, t.TempDir())
	cfg := Smoke()
	cfg.Reps = 2 // so that medians of several samples are exercised
	ext := t.TempDir()
	o := Options{
		Config:   cfg,
		Builtin:  []string{TargetNative, TargetLoopback, TargetFusevol},
		External: []ExternalTarget{{Name: "other", Path: ext}},
		WorkDir:  reachableTempDir(t),
		Volctl:   volctl,
		OutDir:   t.TempDir(),
		Command:  "go test ./bench",
	}
	runAndCheck(t, o, []string{TargetNative, TargetLoopback, TargetFusevol, "other"})
	if left, _ := os.ReadDir(ext); len(left) != 0 {
		t.Errorf("the external target's directory was not cleaned up: %d entries left", len(left))
	}
}

// TestSmokeNativeOnly runs the harness where FUSE may be missing: one target, every output.
func TestSmokeNativeOnly(t *testing.T) {
	o := Options{Config: Smoke(), Builtin: []string{TargetNative}, WorkDir: reachableTempDir(t), OutDir: t.TempDir()}
	runAndCheck(t, o, []string{TargetNative})
}

// reachableTempDir is a test directory that other users can reach, as the pgbench workload's
// server (user postgres) must: the test's temporary directories are private to root.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// skippedGroups lists the workload groups that cannot run on this machine (their programs are
// missing, outside CI): their figures are absent and their goals skipped.
func skippedGroups(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if _, err := findPostgres(); err != nil {
		if _, ok := isSkip(err); ok {
			out["pgbench"] = true
			t.Log(err)
		}
	}
	if err := exec.Command("python3", "-c", "import sqlite3").Run(); err != nil && !inCI() {
		out["sqlite"] = true
		t.Logf("SQLite workload skipped: %v", err)
	}
	return out
}

func TestRunRejectsBadTargets(t *testing.T) {
	for name, o := range map[string]Options{
		"unknown":    {Config: Smoke(), Builtin: []string{"zfs"}},
		"none":       {Config: Smoke()},
		"no volctl":  {Config: Smoke(), Builtin: []string{TargetFusevol}},
		"bad config": {Config: Config{}, Builtin: []string{TargetNative}},
	} {
		o.WorkDir = t.TempDir()
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
}

func runAndCheck(t *testing.T, o Options, targets []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var table bytes.Buffer
	o.Out = &table
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("figures not measured:\n%s", strings.Join(f, "\n"))
	}
	for _, want := range append([]string{"| workload", "Goals (report only):"}, targets...) {
		if !strings.Contains(table.String(), want) {
			t.Errorf("printed table lacks %q:\n%s", want, table.String())
		}
	}
	checkJSON(t, filepath.Join(o.OutDir, JSONFile), o.Config, targets)
	checkSVG(t, filepath.Join(o.OutDir, SVGFile), o.Config, targets)
	md, err := os.ReadFile(filepath.Join(o.OutDir, MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(md, []byte(table.String()[:strings.Index(table.String(), "\n")])) {
		t.Errorf("%s does not hold the table's header", MarkdownFile)
	}
}

func checkJSON(t *testing.T, path string, cfg Config, targets []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if strings.Join(rep.Targets, ",") != strings.Join(targets, ",") {
		t.Errorf("targets = %v, want %v", rep.Targets, targets)
	}
	if rep.Meta.Config.SeqSize != cfg.SeqSize || rep.Meta.Config.Reps != cfg.Reps {
		t.Errorf("config in JSON = %+v, want %+v", rep.Meta.Config, cfg)
	}
	fusevol, loopback := contains(targets, TargetFusevol), contains(targets, TargetLoopback)
	byID := map[string]Workload{}
	for _, w := range rep.Workloads {
		byID[w.ID] = w
	}
	skipped := skippedGroups(t)
	for _, m := range Catalogue(cfg) {
		w, ok := byID[m.ID]
		if !ok {
			t.Errorf("workload %s missing from JSON", m.ID)
			continue
		}
		if skipped[groupOf(cfg, m.ID)] {
			if len(w.Values) != 0 || len(w.Errors) != 0 {
				t.Errorf("%s: skipped, yet it has values %v and errors %v", m.ID, w.Values, w.Errors)
			}
			continue
		}
		want := targets
		if m.FusevolOnly {
			if want = nil; fusevol {
				want = []string{TargetFusevol}
			}
		}
		if len(w.Values) != len(want) {
			t.Errorf("%s: values for %d targets (%v), want %v", m.ID, len(w.Values), w.Values, want)
		}
		for _, tg := range want {
			v, ok := w.Values[tg]
			if !ok || v < 0 || v == 0 && !m.Count || math.IsInf(v, 0) {
				t.Errorf("%s on %s = %v (present %v), want a positive figure", m.ID, tg, v, ok)
			}
			if n, wantN := len(w.Samples[tg]), samplesWanted(m, cfg); n != wantN {
				t.Errorf("%s on %s: %d samples, want %d", m.ID, tg, n, wantN)
			}
			if m.FusevolOnly {
				continue
			}
			if _, ok := w.VsNative[tg]; !ok {
				t.Errorf("%s on %s: no ratio to native", m.ID, tg)
			}
			if _, ok := w.VsLoopback[tg]; loopback && !ok {
				t.Errorf("%s on %s: no ratio to loopback", m.ID, tg)
			}
		}
	}
	if n := len(rep.Histograms); fusevol && (n != 1 || rep.Histograms[0].Samples < 3) || !fusevol && n != 0 {
		t.Errorf("histograms %+v, want one of the soak's fsyncs on fusevol only", rep.Histograms)
	}
	wantGoals := 3 + 11 + 2 + 2 + 9 + 2 // issue 6's, issue 11's, issue 18's
	if len(rep.Goals) != wantGoals {
		t.Errorf("%d goal lines, want %d", len(rep.Goals), wantGoals)
	}
	for _, g := range rep.Goals {
		skip := g.Status == Skip
		if skip && skipped[groupOf(cfg, g.Metric)] {
			continue
		}
		if g.Status != Pass && g.Status != Fail && !skip || skip == (fusevol && loopback) {
			t.Errorf("goal %s on %s: status %s (%s)", g.Goal, g.Metric, g.Status, g.Detail)
		}
	}
}

func samplesWanted(m Metric, cfg Config) int {
	switch {
	case strings.HasPrefix(m.ID, "snapshot_") || strings.HasPrefix(m.ID, "clone_"):
		return cfg.SnapReps
	case m.ID == MDedup || m.ID == MCompression || m.Once:
		return 1
	case groupOf(cfg, m.ID) == "sqlite" || groupOf(cfg, m.ID) == "pgbench":
		return min(cfg.DBReps, cfg.Reps)
	}
	return cfg.Reps
}

// checkSVG parses the chart as XML and looks for a labelled group of bars per workload and a
// colour per target.
func checkSVG(t *testing.T, path string, cfg Config, targets []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	var texts []string
	fills := map[string]int{}
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
			for _, a := range el.Attr {
				if el.Name.Local == "rect" && a.Name.Local == "fill" {
					fills[a.Value]++
				}
			}
		case xml.CharData:
			texts = append(texts, string(el))
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	all := strings.Join(texts, "\n")
	common := 0
	for _, m := range Catalogue(cfg) {
		if !m.FusevolOnly {
			common++
		}
		if !strings.Contains(all, m.Title) {
			t.Errorf("chart does not mention workload %q", m.Title)
		}
	}
	for i, tg := range targets {
		if !strings.Contains(all, tg) {
			t.Errorf("chart legend lacks target %s", tg)
		}
		// One bar per common workload, plus the legend swatch.
		if n := fills[palette[i]]; n != common+1 {
			t.Errorf("target %s: %d rects in its colour, want %d", tg, n, common+1)
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
