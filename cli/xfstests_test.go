package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// xfstests (the Linux filesystems' regression suite) against fusevol, through the mount helper.
// The pinned source stays outside the repository (GPL): FUSEVOL_XFSTESTS_SRC, else
// ../shared/third_party/xfstests beside the checkout. It runs when CI=true or FUSEVOL_XFSTESTS=1;
// in CI a missing source or build tool fails the test. Any failure not in
// testdata/xfstests-exclude (one test per line, with the reason) fails it.

// xfstestsBudget bounds the whole run (build included): CI runs it on a 2-core machine.
const xfstestsBudget = 20 * time.Minute

// xfstestsVolumeSize is the test and scratch volumes' quota.
const xfstestsVolumeSize = "2GiB"

// xfstestsTools are what building and running the suite needs besides the Debian libraries.
var xfstestsTools = []string{"make", "gcc", "autoconf", "automake", "libtoolize", "xfs_io", "fio",
	"unshare", "df", "findmnt", "gawk", "bc", "attr", "setfacl", "python3"}

func TestXfstests(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Getenv("FUSEVOL_XFSTESTS") != "1" {
		t.Skip("xfstests run when CI=true or FUSEVOL_XFSTESTS=1")
	}
	needMount(t)
	for _, tool := range xfstestsTools {
		if _, err := exec.LookPath(tool); err != nil {
			fusetest.Missing(t, "xfstests needs "+tool+" (.ci/run installs its build dependencies)")
		}
	}
	src := xfstestsSource(t)
	ctx, cancel := context.WithTimeout(context.Background(), xfstestsBudget)
	defer cancel()
	start := time.Now()
	tree := xfstestsTree(ctx, t, src)
	bin := buildVolctl(t)
	installMountHelper(t, bin)
	env := startHiddenDaemon(t, bin)
	// A size quota makes statfs tell the truth about free space (without one a volume shows
	// 1 TiB, whatever the disk holds), which the ENOSPC tests fill.
	env.volctl(t, "volume", "create", "-o", "size="+xfstestsVolumeSize, env.testVol)
	env.volctl(t, "volume", "create", "-o", "size="+xfstestsVolumeSize, env.scratchVol)
	if err := os.WriteFile(filepath.Join(tree, "local.config"), []byte(env.localConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	exclude, err := filepath.Abs(filepath.Join("testdata", "xfstests-exclude"))
	if err != nil {
		t.Fatal(err)
	}
	excluded := excludedTests(t, exclude)

	tests := xfstestsTests(t)
	args := append([]string{"-E", exclude}, tests...)
	cmd := exec.CommandContext(ctx, "./check", args...)
	cmd.Dir = tree
	cmd.Env = append(os.Environ(), "FUSEVOL_SOCKET="+env.socket)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("./check %s (%v):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Second), out)
	if ctx.Err() != nil {
		t.Fatalf("xfstests ran out of its %v budget: shorten testdata/xfstests-list", xfstestsBudget)
	}
	res := parseCheckLog(t, filepath.Join(tree, "results", "check.log"))
	var unexplained []string
	for _, f := range res.failed {
		if !excluded[f] {
			unexplained = append(unexplained, f)
		}
	}
	// check's "Ran:" names the tests that were not run too.
	run := len(res.ran) - len(res.notRun)
	t.Logf("xfstests: %d run, %d passed, %d not run, %d failed, %d excluded, in %v",
		run, run-len(res.failed), len(res.notRun), len(res.failed),
		strings.Count(string(out), "[expunged]"), time.Since(start).Round(time.Second))
	if len(unexplained) > 0 {
		for _, f := range unexplained {
			t.Logf("%s:\n%s", f, readTail(filepath.Join(tree, "results", f+".out.bad"), 40))
		}
		t.Errorf("xfstests failures not in testdata/xfstests-exclude: %s", strings.Join(unexplained, " "))
	}
	if err != nil && len(res.failed) == 0 {
		t.Errorf("./check: %v with no failure in its log", err)
	}
}

// xfstestsTests is what to run: FUSEVOL_XFSTESTS_TESTS (./check's arguments, e.g. "-g quick"),
// else testdata/xfstests-list, the generic/quick tests that fit the budget here.
func xfstestsTests(t *testing.T) []string {
	t.Helper()
	if args := strings.Fields(os.Getenv("FUSEVOL_XFSTESTS_TESTS")); len(args) > 0 {
		return args
	}
	data, err := os.ReadFile(filepath.Join("testdata", "xfstests-list"))
	if err != nil {
		t.Fatal(err)
	}
	var tests []string
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		tests = append(tests, strings.Fields(line)...)
	}
	if len(tests) == 0 {
		t.Fatal("testdata/xfstests-list names no test")
	}
	return tests
}

// xfstestsSource finds the pinned xfstests source.
func xfstestsSource(t *testing.T) string {
	t.Helper()
	src := os.Getenv("FUSEVOL_XFSTESTS_SRC")
	if src == "" {
		src = filepath.Join("..", "..", "shared", "third_party", "xfstests")
	}
	src, err := filepath.Abs(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "check")); err != nil {
		fusetest.Missing(t, "xfstests source: "+err.Error()+" (set FUSEVOL_XFSTESTS_SRC)")
	}
	return src
}

// xfstestsTree returns a private, built copy of the source. Builds are cached in
// $HOME/.cache/fusevol-xfstests by a hash of the source tree (a build takes minutes here); each
// run copies the cached build, since the suite writes its results into its tree.
func xfstestsTree(ctx context.Context, t *testing.T, src string) string {
	t.Helper()
	key, err := treeHash(src)
	if err != nil {
		t.Fatal(err)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(home, ".cache", "fusevol-xfstests")
	built := filepath.Join(cacheDir, key)
	if _, err := os.Stat(filepath.Join(built, "ltp", "fsx")); err != nil {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			t.Fatal(err)
		}
		work, err := os.MkdirTemp(cacheDir, key+".building-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(work)
		runCmd(ctx, t, "", "cp", "-a", src+"/.", work)
		runCmd(ctx, t, "", "chmod", "-R", "u+w", work)
		runCmd(ctx, t, work, "make", "-j2")
		os.RemoveAll(built)
		if err := os.Rename(work, built); err != nil {
			t.Fatal(err)
		}
	}
	tree := filepath.Join(t.TempDir(), "xfstests")
	runCmd(ctx, t, "", "cp", "-a", built, tree)
	return tree
}

// treeHash hashes every path, mode and content under dir.
func treeHash(dir string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s\x00%o\x00", rel, info.Mode())
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(h, f)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

func runCmd(ctx context.Context, t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(string(out), 4000))
	}
}

// hiddenDaemon is a real daemon process whose own mounts are invisible to xfstests.
//
// xfstests finds the test filesystem by its source (findmnt -S fusevol:xt) and refuses one
// mounted twice; a volctl mount is a bind of the daemon's live mount under its mount root, which
// has the same source. So the daemon runs in a mount namespace of its own (unshare -m) with its
// mount root on a private mount, and the directories xfstests mounts on under a shared mount:
// the daemon's bind mounts there propagate out, umount propagates back in.
type hiddenDaemon struct {
	bin, dir, socket string
	// The volumes' names are the mount sources every mount namespace sees (fusevol:NAME), so
	// they are unique to the run.
	testVol, scratchVol string
}

func startHiddenDaemon(t *testing.T, bin string) *hiddenDaemon {
	t.Helper()
	dir := fusetest.TempRoot(t, "xfstests-")
	d := &hiddenDaemon{bin: bin, dir: dir, socket: filepath.Join(dir, "fusevol.sock"),
		testVol: fmt.Sprintf("xfstests-test-%d", os.Getpid()), scratchVol: fmt.Sprintf("xfstests-scratch-%d", os.Getpid())}
	for _, sub := range []string{"mnt/test", "mnt/scratch", "mounts", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	shared, private := filepath.Join(dir, "mnt"), filepath.Join(dir, "mounts")
	runCmd(ctx, t, "", "mount", "--bind", shared, shared)
	t.Cleanup(func() { exec.Command("umount", "-R", "-l", shared).Run() })
	runCmd(ctx, t, "", "mount", "--make-shared", shared)
	runCmd(ctx, t, "", "mount", "--bind", private, private)
	t.Cleanup(func() { exec.Command("umount", "-l", private).Run() })
	runCmd(ctx, t, "", "mount", "--make-private", private)

	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "unchanged", bin, "daemon",
		"--root", filepath.Join(dir, "root"), "--socket", d.socket, "--mount-root", private)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("daemon did not stop within 30s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", readTail(filepath.Join(dir, "daemon.log"), 60))
		}
	})
	fusetest.WaitReady(t, d.socket, done)
	return d
}

func (d *hiddenDaemon) volctl(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(d.bin, append([]string{"--socket", d.socket}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("volctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// localConfig is xfstests' configuration: FSTYP=fuse with fusevol's subtype, so it mounts with
// `mount -t fuse.fusevol fusevol:VOLUME DIR`. TEST_DEV and SCRATCH_DEV are what the mount table
// shows as the source. DF_PROG is df with the type column reading fuse for fuse.fusevol:
// xfstests checks a mount's type against FSTYP (as it maps fuse.glusterfs to glusterfs).
func (d *hiddenDaemon) localConfig() string {
	df := filepath.Join(d.dir, "df")
	script := "#!/bin/sh\ndf \"$@\" | sed -E 's/^([^ ]+ +)fuse\\.fusevol /\\1fuse /'\n"
	if err := os.WriteFile(df, []byte(script), 0o755); err != nil {
		panic(err) // the directory was made writable above
	}
	return strings.Join([]string{
		"export FSTYP=fuse",
		"export FUSE_SUBTYP=.fusevol",
		"export TEST_DEV=fusevol:" + d.testVol,
		"export TEST_DIR=" + filepath.Join(d.dir, "mnt", "test"),
		"export SCRATCH_DEV=fusevol:" + d.scratchVol,
		"export SCRATCH_MNT=" + filepath.Join(d.dir, "mnt", "scratch"),
		"export FUSEVOL_SOCKET=" + d.socket,
		`export DF_PROG="` + df + ` -T -P"`,
		"",
	}, "\n")
}

// checkResult is what xfstests' results/check.log says about the run.
type checkResult struct {
	ran, notRun, failed []string
}

func parseCheckLog(t *testing.T, path string) checkResult {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("xfstests left no log: %v", err)
	}
	defer f.Close()
	var res checkResult
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for prefix, dst := range map[string]*[]string{"Ran:": &res.ran, "Not run:": &res.notRun, "Failures:": &res.failed} {
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				*dst = append(*dst, strings.Fields(rest)...)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(res.ran) == 0 {
		t.Fatalf("%s names no test run", path)
	}
	return res
}

var excludeLine = regexp.MustCompile(`^([a-z0-9]+/[0-9]+)\s+#\s*\S`)

// excludedTests reads the exclude list, requiring a reason on every entry.
func excludedTests(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := excludeLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s:%d: want `suite/NNN # reason`, got %q", path, i+1, line)
		}
		out[m[1]] = true
	}
	return out
}

// readTail is the end of a file, for failure reports.
func readTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }
