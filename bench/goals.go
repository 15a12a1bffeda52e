package bench

import (
	"fmt"
	"io"
)

// Goal check outcomes.
const (
	Pass = "PASS"
	Fail = "FAIL"
	Skip = "SKIP" // the run did not include what the goal compares
)

// GoalResult is one line of the goals check: a goal applied to one figure.
type GoalResult struct {
	Goal   string `json:"goal"`
	Metric string `json:"metric"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// CheckGoals applies the project's performance goals (issues 6 and 11) to the fusevol target's
// figures. It only reports; nothing fails because a goal is missed.
func CheckGoals(r *Report) []GoalResult {
	byID := map[string]Workload{}
	for _, w := range r.Workloads {
		byID[w.ID] = w
	}
	var out []GoalResult
	// vsRef checks fusevol's ratio to the reference target (oriented so that above 1 is better:
	// for latencies, min 0.5 means "at most twice the reference's latency").
	vsRef := func(goal, ref string, min float64, note string, ids ...string) {
		for _, id := range ids {
			g := GoalResult{Goal: goal, Metric: id}
			w, ran := byID[id]
			ratios := w.VsLoopback
			if ref == TargetNative {
				ratios = w.VsNative
			}
			ratio, ok := ratios[TargetFusevol]
			switch {
			case !ran:
				g.Status, g.Detail = Skip, "workload not run"
			case !r.has(TargetFusevol) || !r.has(ref):
				g.Status, g.Detail = Skip, "needs the fusevol and "+ref+" targets"
			case !ok && len(w.Values) == 0 && len(w.Errors) == 0:
				g.Status, g.Detail = Skip, "workload skipped on every target (see the warnings)"
			case !ok:
				g.Status, g.Detail = Fail, "not measured: "+firstError(w)+firstErrorOf(w, ref)
			case w.Lower:
				g.Status = passIf(ratio >= min)
				g.Detail = fmt.Sprintf("fusevol %s %s = %.2f× %s's (%s %s), goal ≤ %.1f×",
					formatValue(w.Values[TargetFusevol]), w.Unit, 1/ratio, ref, formatValue(w.Values[ref]), w.Unit, 1/min)
			default:
				g.Status = passIf(ratio >= min)
				g.Detail = fmt.Sprintf("fusevol %s %s = %.2f× %s (%s %s), goal ≥ %.1f×",
					formatValue(w.Values[TargetFusevol]), w.Unit, ratio, ref, formatValue(w.Values[ref]), w.Unit, min)
			}
			if note != "" && g.Status != Skip {
				g.Detail += " " + note
			}
			out = append(out, g)
		}
	}
	vsLoop := func(goal string, min float64, ids ...string) { vsRef(goal, TargetLoopback, min, "", ids...) }
	vsLoop("sequential I/O ≥ 0.8× loopback", 0.8, MSeqWrite, MSeqReadCold, MSeqReadWarm)
	vsLoop("small I/O and metadata ≥ 0.7× loopback", 0.7, MRandReadCold, MRandReadWarm, MRandWrite,
		MFsyncOps, MSmallCreate, MSmallStat, MSmallReadCold, MSmallUnlink, MReaddir, MUntar, MRmRf)

	cfg := r.Meta.Config
	if len(cfg.SnapFiles) >= 2 {
		lo, hi := cfg.SnapFiles[0], cfg.SnapFiles[len(cfg.SnapFiles)-1]
		for _, kind := range []struct {
			name   string
			metric func(int) string
		}{{"snapshot", SnapshotMetric}, {"clone", CloneMetric}} {
			g := GoalResult{Goal: kind.name + " latency flat and < 50 ms", Metric: kind.metric(hi)}
			wlo, ran := byID[kind.metric(lo)]
			whi := byID[kind.metric(hi)]
			vlo, ok1 := wlo.Values[TargetFusevol]
			vhi, ok2 := whi.Values[TargetFusevol]
			switch {
			case !ran:
				g.Status, g.Detail = Skip, "workload not run"
			case !r.has(TargetFusevol):
				g.Status, g.Detail = Skip, "needs the fusevol target"
			case !ok1 || !ok2:
				g.Status, g.Detail = Fail, "not measured: "+firstError(wlo)+firstError(whi)
			default:
				g.Status = passIf(vhi <= 1.5*vlo && vhi < 50)
				g.Detail = fmt.Sprintf("%.2f ms at %d files, %.2f ms at %d files (%.2f×), goal ≤ 1.5× and < 50 ms",
					vhi, hi, vlo, lo, vhi/vlo)
			}
			out = append(out, g)
		}
	}

	single := func(goal, id string, ok func(v float64) bool, detail string) {
		g := GoalResult{Goal: goal, Metric: id}
		w, ran := byID[id]
		v, have := w.Values[TargetFusevol]
		switch {
		case !ran:
			g.Status, g.Detail = Skip, "workload not run"
		case !r.has(TargetFusevol):
			g.Status, g.Detail = Skip, "needs the fusevol target"
		case !have && len(w.Values) == 0 && len(w.Errors) == 0:
			g.Status, g.Detail = Skip, "workload skipped on every target (see the warnings)"
		case !have:
			g.Status, g.Detail = Fail, "not measured: "+firstError(w)
		default:
			g.Status, g.Detail = passIf(ok(v)), fmt.Sprintf(detail, v)
		}
		out = append(out, g)
	}
	single("dedup: four copies cost ≤ 1.1× one", MDedup, func(v float64) bool { return v <= 1.1 },
		"store grew %.2f× as much for four copies as for one, goal ≤ 1.1×")
	single("daemon peak RSS < 512 MiB", MPeakRSS, func(v float64) bool { return v < 512 },
		fmt.Sprintf("%%.0f MiB during the %d MiB sequential write and reads, goal < 512 MiB", cfg.SeqSize>>20))
	if anon, ok := byID[MPeakAnon].Values[TargetFusevol]; ok && out[len(out)-1].Status != Skip {
		out[len(out)-1].Detail += fmt.Sprintf(" (anonymous memory peaked at %.0f MiB; the rest is mapped files)", anon)
	}

	// Issue 11: the write path for databases.
	vsLoop("pgbench TPS ≥ 0.8× loopback", 0.8, MPgbenchTPS)
	vsLoop("SQLite commits ≥ 0.8× loopback", 0.8, MSQLiteWAL, MSQLiteRollback)
	vsLoop("write+fsync ≥ 1.0× loopback", 1.0, MFsyncOps)
	vsRef("write+fsync ≥ 0.8× native (aim)", TargetNative, 0.8, "", MFsyncOps)
	vsRef("fsync p99 ≤ 2× native", TargetNative, 0.5, "", MFsyncP99)
	vsRef("random 4 KiB writes ≥ 1.0× loopback", TargetLoopback, 1.0,
		"(the issue's reference is loopback without passthrough; the harness's loopback uses FUSE passthrough where the kernel has it, a stricter reference)",
		MRandWrite)
	for _, id := range []string{MFsync4OneX, MFsync4VolsX} {
		single("4 fsync writers ≥ 2.5× one writer", id, func(v float64) bool { return v >= 2.5 },
			"4 writers did %.2f× the write+fsync operations of one, goal ≥ 2.5×")
	}
	// Issue 18: no stalls.
	single("soak: fsync p99.9 ≤ 10× p50", MSoakTail, func(v float64) bool { return v <= 10 },
		"fsync p99.9 was %.1f× p50 over the soak, goal ≤ 10×")
	if ref, ok := byID[MSoakRefTail].Values[TargetFusevol]; ok && out[len(out)-1].Status != Skip {
		out[len(out)-1].Detail += fmt.Sprintf(" (a native file on the same disk just before: %.1f×)", ref)
	}
	single("soak: no fsync > 100 ms during GC", MSoakSlowGC, func(v float64) bool { return v == 0 },
		"%.0f fsyncs over 100 ms overlapped a GC pass, goal 0")
	return out
}

func passIf(ok bool) string {
	if ok {
		return Pass
	}
	return Fail
}

func firstError(w Workload) string { return firstErrorOf(w, TargetFusevol) }

func firstErrorOf(w Workload, target string) string {
	if e, ok := w.Errors[target]; ok {
		return target + ": " + e
	}
	return ""
}

// WriteGoals prints one PASS/FAIL/SKIP line per goal and figure.
func (r *Report) WriteGoals(w io.Writer) {
	fmt.Fprintln(w, "Goals (report only):")
	for _, g := range r.Goals {
		fmt.Fprintf(w, "%s  %-40s %-28s %s\n", g.Status, g.Goal, g.Metric, g.Detail)
	}
}
