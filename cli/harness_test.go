package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// result is what one volctl invocation produced.
type result struct {
	stdout, stderr string
	code           int
}

// volctl runs the CLI in-process as a user would type it (after "volctl") and captures its output.
func volctl(t testing.TB, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := Main(ctx, append([]string{"volctl"}, args...), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// ok fails the test unless r exited 0.
func (r result) ok(t testing.TB) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// fails checks exit status code and a one-line stderr containing every want.
func (r result) fails(t testing.TB, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	first, _, _ := strings.Cut(r.stderr, "\n")
	if code == 1 && strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr is not one line:\n%s", r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(first, w) {
			t.Errorf("stderr's first line %q does not contain %q", first, w)
		}
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Errorf("stderr holds a stack trace:\n%s", r.stderr)
	}
}

// testDaemon is a real fusevol daemon running in-process on a private root and socket.
type testDaemon struct {
	dir, socket string
	daemon      *fusetest.Daemon
}

// startDaemon runs plugin.NewDaemon with a temporary root, socket and mount root and stops it
// (cleanly, checking that Run returns nil) when the test ends.
func startDaemon(t testing.TB) *testDaemon {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: t.TempDir() can be longer.
	dir := fusetest.TempRoot(t, "volctl-test-")
	td := &testDaemon{dir: dir, socket: filepath.Join(dir, "fusevol.sock")}
	td.start(t)
	return td
}

func (td *testDaemon) start(t testing.TB) {
	t.Helper()
	d, err := plugin.NewDaemon(plugin.Config{
		Root:      td.root(),
		Socket:    td.socket,
		MountRoot: filepath.Join(td.dir, "mounts"),
	})
	if err != nil {
		t.Fatal(err)
	}
	td.daemon = fusetest.Go(d.Run)
	t.Cleanup(func() { td.stop(t) })
	fusetest.WaitReady(t, td.socket, td.daemon.Done())
}

func (td *testDaemon) root() string { return filepath.Join(td.dir, "root") }

// stop shuts the daemon down and checks that Run returned nil; stopping twice is fine.
func (td *testDaemon) stop(t testing.TB) {
	t.Helper()
	td.daemon.Stop(t, 20*time.Second)
}

// run runs volctl against this daemon.
func (td *testDaemon) run(t testing.TB, args ...string) result {
	t.Helper()
	return volctl(t, append([]string{"--socket", td.socket}, args...)...)
}

// mkdir makes a directory under the daemon's temporary directory (for volctl mount).
func (td *testDaemon) mkdir(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(td.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

var normalisers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "<UUID>"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<TIME>"},
	{regexp.MustCompile(`just now|\d+ (second|minute|hour|day)s? ago`), "<AGO>"},
}

// normalise replaces what changes from run to run (temporary paths, UUIDs, times) with markers.
// Relative times are always the last table column, so replacing them keeps the alignment.
func normalise(s string, dirs ...string) string {
	for _, d := range dirs {
		s = strings.ReplaceAll(s, d, "<DIR>")
	}
	for _, n := range normalisers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// golden compares got with testdata/name.golden (rewriting it under -update).
func golden(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cli -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

// columnsAligned checks that every line of a table starts each header column at the same offset.
func columnsAligned(t testing.TB, table string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	starts := columnStarts(lines[0])
	for _, l := range lines[1:] {
		for _, s := range starts[1:] {
			if s >= len(l) || l[s-1] != ' ' || l[s] == ' ' {
				t.Errorf("table not aligned at column %d:\n%s", s, table)
				return
			}
		}
	}
}

func columnStarts(header string) []int {
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	return starts
}
