package plugin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/fs/mountinfo"
	"github.com/fusevol/fusevol/plugin/api"
)

// testDaemon is a daemon running in-process on a temporary root and socket.
type testDaemon struct {
	*Daemon
	root string
	sock string
	run  *fusetest.Daemon
	http *http.Client
}

// startDaemon runs a daemon on root (a new temporary directory when "") and waits for its socket.
// The daemon is stopped at the end of the test.
func startDaemon(t testing.TB, root string, mod ...func(*Config)) *testDaemon {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	cfg := Config{
		Root:   root,
		Socket: filepath.Join(root, "fusevol.sock"),
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	d, err := NewDaemon(cfg)
	if err != nil {
		t.Fatalf("NewDaemon: %v", err)
	}
	td := &testDaemon{Daemon: d, root: root, sock: d.Socket(), http: fusetest.UnixHTTP(d.Socket())}
	td.run = fusetest.StartDaemon(t, td.sock, 10*time.Second, d.Run)
	return td
}

// stop cancels the daemon and checks that Run returns nil within Docker's 10 s grace.
func (td *testDaemon) stop(t testing.TB) {
	t.Helper()
	td.run.Stop(t, 10*time.Second)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// post sends body to a Docker protocol endpoint the way dockerd does and decodes the answer.
func (td *testDaemon) post(t testing.TB, endpoint, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://plugin.moby.localhost/"+endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := td.http.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read: %v", endpoint, err)
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: answer is not a JSON object (status %d): %q", endpoint, resp.StatusCode, data)
	}
	return resp.StatusCode, out
}

// ok calls an endpoint that must succeed.
func (td *testDaemon) ok(t testing.TB, endpoint, body string) map[string]any {
	t.Helper()
	status, out := td.post(t, endpoint, body)
	if status != http.StatusOK || out["Err"] != nil && out["Err"] != "" {
		t.Fatalf("%s %s: status %d, answer %v", endpoint, body, status, out)
	}
	return out
}

// fails calls an endpoint that must fail with an Err containing want.
func (td *testDaemon) fails(t testing.TB, endpoint, body, want string) {
	t.Helper()
	status, out := td.post(t, endpoint, body)
	msg, _ := out["Err"].(string)
	if status == http.StatusOK || msg == "" {
		t.Fatalf("%s %s: status %d, answer %v; want an error", endpoint, body, status, out)
	}
	if !strings.Contains(msg, want) {
		t.Fatalf("%s %s: error %q does not mention %q", endpoint, body, msg, want)
	}
}

// mountsUnderRoot lists mount points under dir from this process's mount table.
func mountedUnder(t testing.TB, dir string) []string {
	t.Helper()
	m, err := mountinfo.Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// isMountPoint reports whether dir is a mount point.
func isMountPoint(t testing.TB, dir string) bool { return fusetest.IsMountPoint(t, dir) }

func mountTmpfs(dir string) error { return unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m") }

func newRequest(method, path, body string) (*http.Request, error) {
	return http.NewRequest(method, "http://fusevol"+path, strings.NewReader(body))
}

func decodeAPIError(t *testing.T, resp *http.Response) api.Error {
	t.Helper()
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	return e
}
