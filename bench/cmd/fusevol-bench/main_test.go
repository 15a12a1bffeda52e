package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusevol/fusevol/bench"
)

func TestRunNativeSmokeWithOverrides(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run([]string{"fusevol-bench", "--smoke", "--targets", "native", "--out", out,
		"--workdir", t.TempDir(), "--seq-size", "2MiB", "--only", "seq,small"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	data, err := os.ReadFile(filepath.Join(out, bench.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	smoke := bench.Smoke()
	if c := rep.Meta.Config; c.SeqSize != 2<<20 || c.Reps != smoke.Reps || c.SmallFiles != smoke.SmallFiles {
		t.Errorf("config = %+v: want seq size 2 MiB (flag) and the smoke values otherwise", c)
	}
	// seq: 6 figures and the daemon's two peak RSS figures (fusevol only, empty here); small: 5.
	if len(rep.Workloads) != 6+2+5 {
		t.Errorf("%d workloads, want the 13 of the seq and small groups", len(rep.Workloads))
	}
	if !strings.Contains(stdout.String(), "| seq write 1 MiB + fsync") {
		t.Errorf("table not printed:\n%s", stdout.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--reps", "0"},
		{"--seq-size", "lots"},
		{"--target", "nodir"},
		{"--target", "native=/tmp"},
		{"--only", "everything"},
		{"--snap-files", "10"},
		{"stray"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"fusevol-bench", "--targets", "native"}, args...), &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		} else if stderr.Len() == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
}
