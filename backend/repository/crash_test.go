package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kill tests run this package's test binary as a child (TestMain sees childEnv) that
// backs up stream files, or forgets and prunes, and kill it with SIGKILL at a random moment.
const childEnv = "FUSEVOL_REPOSITORY_CHILD"

func TestMain(m *testing.M) {
	if job := os.Getenv(childEnv); job != "" {
		if err := runChild(job); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childResult is what a child that finished prints.
type childResult struct {
	Verified, Added int64
	Pruned          int64
}

// runChild runs job: "backup DIR STREAM..." (backups of the stream files in order, those
// there already skipped), "prune DIR" (forget all but the newest backup, prune) or "open DIR"
// (only the start, to time it).
func runChild(job string) error {
	f := strings.Fields(job)
	ctx := context.Background()
	d, err := NewDir(f[1])
	if err != nil {
		return err
	}
	r, err := Open(ctx, d, true, nil)
	if err != nil {
		return err
	}
	var res childResult
	switch f[0] {
	case "backup":
		for _, p := range f[2:] {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st, err := r.Backup(ctx, bytes.NewReader(b))
			if errors.Is(err, ErrExists) {
				continue
			}
			if err != nil {
				return err
			}
			res.Verified += st.Verified
			res.Added += st.Added
		}
	case "prune":
		if _, err := r.Forget(ctx, "", Policy{Last: 1}); err != nil {
			return err
		}
		st, err := r.Prune(ctx)
		if err != nil {
			return err
		}
		res.Pruned = st.Chunks
	case "open":
	default:
		return fmt.Errorf("unknown job %q", job)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// child runs job to its end (kill 0) or kills it after kill.
func child(t *testing.T, job string, kill time.Duration) (childResult, bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+job)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if kill > 0 {
		time.AfterFunc(kill, func() { cmd.Process.Signal(syscall.SIGKILL) })
	}
	err := cmd.Wait()
	var res childResult
	if err != nil {
		var ee *exec.ExitError
		if kill > 0 && errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
			return res, false
		}
		t.Fatalf("child %s: %v\n%s", job, err, errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("child %s printed %q: %v", job, out.String(), err)
	}
	return res, true
}

// crashSeeds is how many kills each test makes: a random moment each.
const crashSeeds = 24

// A backup killed at any moment leaves a repository whose check is clean, whose complete
// backups restore, and which the same backup run again completes, verifying the chunks the
// killed run wrote instead of writing them.
func TestKillDuringBackup(t *testing.T) {
	s := newStore(t)
	vo := newVolume(t, s, "v", 21)
	dir := t.TempDir()
	var files []string
	snaps := []string{"s1", "s2", "s3"}
	for i, snap := range snaps {
		vo.change(map[bool]int{true: 60, false: 25}[i == 0])
		vo.snapshot(snap)
		from := ""
		if i > 0 {
			from = snaps[i-1]
		}
		p := filepath.Join(dir, snap+".stream")
		if err := os.WriteFile(p, send(t, s, "v", snap, from), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	want := map[string]string{}
	for _, snap := range snaps {
		want[snap] = records(t, send(t, s, "v", snap, ""))
	}
	job := func(repo string) string { return "backup " + repo + " " + strings.Join(files, " ") }
	whole := filepath.Join(dir, "whole")
	os.Mkdir(whole, 0o700)
	moment := killMoments(t, job, whole, 16)
	interrupted, resumed := 0, 0
	for seed := range crashSeeds {
		repo := filepath.Join(dir, fmt.Sprint("r", seed))
		if !killedOnce(t, job(repo), moment, func() {
			os.RemoveAll(repo)
			if err := os.Mkdir(repo, 0o700); err != nil {
				t.Fatal(err)
			}
		}) {
			continue
		}
		r := newRepo(t, repo)
		rep := checkClean(t, r)
		list, err := r.List(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range list { // complete backups: the first ones, in order
			if b.Snapshot != snaps[i] {
				t.Fatalf("seed %d: backups %v", seed, list)
			}
			if got := records(t, restored(t, r, "v", b.Snapshot)); got != want[b.Snapshot] {
				t.Fatalf("seed %d: %s restores differently:\n%s", seed, b.Snapshot, firstDiff(want[b.Snapshot], got))
			}
		}
		if len(list) < len(snaps) {
			interrupted++
		}
		res, _ := child(t, job(repo), 0)
		if res.Verified < rep.Unreferenced {
			t.Errorf("seed %d: the resumed run verified %d chunks, the killed one left %d", seed, res.Verified, rep.Unreferenced)
		}
		if rep.Unreferenced > 0 {
			resumed++
		}
		rep = checkClean(t, r)
		if rep.Backups != 3 || rep.Unreferenced != 0 {
			t.Fatalf("seed %d: after the resumed run: %+v", seed, rep)
		}
		if got := records(t, restored(t, r, "v", "s3")); got != want["s3"] {
			t.Fatalf("seed %d: s3 restores differently:\n%s", seed, firstDiff(want["s3"], got))
		}
	}
	t.Logf("%d of %d kills interrupted the backups, %d of them after writing chunks", interrupted, crashSeeds, resumed)
	if interrupted < crashSeeds/2 || resumed == 0 {
		t.Fatalf("only %d of %d kills interrupted a backup (%d with chunks written): the test tests little", interrupted, crashSeeds, resumed)
	}
}

// A forget and prune killed at any moment leaves a clean repository whose remaining backups
// restore; run again, it ends with nothing unreferenced.
func TestKillDuringPrune(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	var files []string
	want := map[string]string{}
	snaps := []string{"s1", "s2", "s3", "s4"}
	for i, snap := range snaps {
		// A volume of its own each time: the forgotten backups leave many chunks to prune.
		if i > 0 {
			if err := s.DeleteVolume(context.Background(), "v"); err != nil {
				t.Fatal(err)
			}
		}
		vo := newVolume(t, s, "v", 22+uint64(i))
		vo.change(40)
		vo.snapshot(snap)
		stream := send(t, s, "v", snap, "")
		want[snap] = records(t, stream)
		p := filepath.Join(dir, snap+".stream")
		if err := os.WriteFile(p, stream, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	template := filepath.Join(dir, "template")
	os.Mkdir(template, 0o700)
	child(t, "backup "+template+" "+strings.Join(files, " "), 0)
	prune := func(dir string) string { return "prune " + dir }
	moment := killMoments(t, prune, copyDir(t, template, filepath.Join(dir, "whole")), 17)
	interrupted := 0
	for seed := range crashSeeds {
		repo := filepath.Join(dir, fmt.Sprint("r", seed))
		if !killedOnce(t, prune(repo), moment, func() {
			os.RemoveAll(repo)
			copyDir(t, template, repo)
		}) {
			continue
		}
		r := newRepo(t, repo)
		rep := checkClean(t, r)
		list, err := r.List(context.Background(), "")
		if err != nil || len(list) == 0 || list[len(list)-1].Snapshot != "s4" {
			t.Fatalf("seed %d: backups %v %v", seed, list, err)
		}
		for _, b := range list {
			if got := records(t, restored(t, r, "v", b.Snapshot)); got != want[b.Snapshot] {
				t.Fatalf("seed %d: %s restores differently:\n%s", seed, b.Snapshot, firstDiff(want[b.Snapshot], got))
			}
		}
		if len(list) > 1 || rep.Unreferenced > 0 {
			interrupted++
		}
		child(t, "prune "+repo, 0)
		if rep := checkClean(t, r); rep.Backups != 1 || rep.Unreferenced != 0 || rep.Leftovers != 0 {
			t.Fatalf("seed %d: after the prune run again: %+v", seed, rep)
		}
	}
	t.Logf("%d of %d kills interrupted the forget or prune", interrupted, crashSeeds)
	if interrupted < crashSeeds/2 {
		t.Fatalf("only %d of %d kills interrupted a prune: the test tests little", interrupted, crashSeeds)
	}
}

// killMoments returns a function giving random moments to kill a child running job in
// repository dir, between its start (timed with an "open" job) and its end (timed by running
// it whole, which leaves dir as job leaves it); a later try draws from the first half of the
// previous try's span (the machine may be faster than when it was timed).
func killMoments(t *testing.T, job func(dir string) string, dir string, seed uint64) func(try int) time.Duration {
	t.Helper()
	start := time.Now()
	child(t, "open "+dir, 0)
	startup := time.Since(start)
	start = time.Now()
	child(t, job(dir), 0)
	took := time.Since(start)
	t.Logf("the child starts in %v, runs the job in %v", startup, took)
	rnd := rand.New(rand.NewPCG(seed, seed))
	return func(try int) time.Duration {
		span := max(took-startup, time.Millisecond) >> try
		return startup + time.Duration(rnd.Int64N(int64(max(span, time.Millisecond))))
	}
}

// killedOnce runs job after setup, killing it at a moment's draw, up to 4 tries while the job
// ends before its kill; it reports whether a kill landed.
func killedOnce(t *testing.T, job string, moment func(int) time.Duration, setup func()) bool {
	t.Helper()
	for try := range 4 {
		setup()
		if _, done := child(t, job, moment(try)); !done {
			return true
		}
	}
	return false
}

func copyDir(t *testing.T, from, to string) string {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return to
}
