package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/client"
)

// TestMain runs the helper modes of this binary (processes started by the tests, possibly as
// other users) and removes the shared build directory afterwards.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[len(os.Args)-1]))
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// long reports whether FUSEVOL_LONG=1 asks for the long mode.
func long() bool { return os.Getenv("FUSEVOL_LONG") == "1" }

// pick returns the CI-sized value, or the long one in long mode.
func pick[T any](ci, longMode T) T {
	if long() {
		return longMode
	}
	return ci
}

var (
	buildOnce sync.Once
	buildDir  string // world-readable: other uids run the helper copy in it
	buildErr  error
)

// binaries builds volctl once per test binary and copies this test binary next to it (so that
// processes running as other users can execute both). It returns their paths.
func binaries(t testing.TB) (volctl, helper string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fusevol-reliability-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		os.Chmod(dir, 0o755)
		if _, buildErr = fusetest.Build(dir); buildErr != nil {
			return
		}
		buildErr = fusetest.CopySelf(filepath.Join(dir, "helper"))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "volctl"), filepath.Join(buildDir, "helper")
}

// daemon is a `volctl daemon` process on a private root and socket.
type daemon struct {
	t      testing.TB
	bin    string
	root   string
	sock   string
	args   []string // extra daemon flags
	log    string
	proc   *fusetest.Process // nil while stopped
	client *client.Client
	http   *http.Client
}

// newDaemon prepares a daemon on root (its socket inside it) and starts it. At the end of the
// test it is stopped and whatever it left mounted under root is detached.
func newDaemon(t testing.TB, root string, args ...string) *daemon {
	t.Helper()
	bin, _ := binaries(t)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, bin: bin, root: root, sock: filepath.Join(root, "fusevol.sock"), args: args,
		log: filepath.Join(root, "daemon.log")}
	d.client = client.New(d.sock)
	d.http = fusetest.UnixHTTP(d.sock)
	t.Cleanup(func() {
		if d.proc != nil {
			d.proc.Kill()
		}
		fusetest.DetachUnder(root)
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", d.logTail())
		}
	})
	d.start()
	return d
}

// setup is how most tests begin: FUSE is required, base is a fresh directory other users may
// traverse, and the daemon runs on base/daemon with the extra flags args.
func setup(t testing.TB, args ...string) (d *daemon, base string) {
	t.Helper()
	fusetest.Require(t)
	base = fusetest.TempRoot(t, "fvrel-")
	return newDaemon(t, filepath.Join(base, "daemon"), args...), base
}

// subdir makes the directory name under base (a mount point, say) and returns its path.
func subdir(base, name string) string {
	p := filepath.Join(base, name)
	os.Mkdir(p, 0o755)
	return p
}

// setupMounted is setup, then the volume name created with the volume options opts
// ("key=value") and mounted with volctl on base/mnt, which it returns.
func setupMounted(t testing.TB, name string, opts ...string) (*daemon, string) {
	t.Helper()
	d, base := setup(t)
	mnt := subdir(base, "mnt")
	args := []string{"volume", "create"}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	d.mustVolctl(append(args, name)...)
	d.mustVolctl("mount", name, mnt)
	return d, mnt
}

// start runs the daemon and waits until its store is open.
func (d *daemon) start() {
	d.t.Helper()
	args := append([]string{"daemon", "--root", d.root, "--socket", d.sock, "--log-level", "info"}, d.args...)
	d.proc = fusetest.StartProcess(d.t, exec.Command(d.bin, args...), d.log)
	d.proc.WaitReady(d.t, d.sock)
}

// kill sends SIGKILL and waits for the process to go.
func (d *daemon) kill() {
	d.t.Helper()
	d.proc.Kill()
	d.proc = nil
	d.http.CloseIdleConnections()
}

// stop sends SIGTERM; the daemon must exit 0 within Docker's 10 s grace.
func (d *daemon) stop() {
	d.t.Helper()
	p := d.proc
	d.proc = nil
	d.http.CloseIdleConnections()
	p.StopClean(d.t, 15*time.Second)
}

// alive reports whether the daemon process is still running.
func (d *daemon) alive() bool { return d.proc != nil && d.proc.Alive() }

func (d *daemon) logTail() string { return fusetest.LogTail(d.log, 8000) }

// mountRoot is where the daemon mounts volumes for Docker.
func (d *daemon) mountRoot() string { return filepath.Join(d.root, "mounts") }

// volctl runs the CLI against the daemon and returns its combined output and exit error.
func (d *daemon) volctl(args ...string) (string, error) {
	return fusetest.Volctl{Bin: d.bin, Socket: d.sock}.Run(args...)
}

func (d *daemon) mustVolctl(args ...string) string {
	d.t.Helper()
	return fusetest.Volctl{Bin: d.bin, Socket: d.sock}.Must(d.t, args...)
}

// dockerReply is an answer of Docker's volume plugin protocol.
type dockerReply struct {
	Status     int
	Err        string
	Mountpoint string
	Volume     *struct {
		Name       string
		Mountpoint string
		Status     map[string]any
	}
	Volumes []struct{ Name string }
	raw     []byte
}

// docker POSTs body to a Docker protocol endpoint (e.g. "VolumeDriver.Create") as dockerd does.
// Only a transport failure or an answer that is not a JSON object is an error.
func (d *daemon) docker(endpoint string, body any) (dockerReply, error) {
	var data []byte
	switch b := body.(type) {
	case string:
		data = []byte(b)
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			return dockerReply{}, err
		}
	}
	return postDocker(d.http, endpoint, data)
}

func postDocker(c *http.Client, endpoint string, data []byte) (dockerReply, error) {
	req, err := http.NewRequest(http.MethodPost, "http://plugin/"+endpoint, bytes.NewReader(data))
	if err != nil {
		return dockerReply{}, err
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := c.Do(req)
	if err != nil {
		return dockerReply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return dockerReply{}, err
	}
	r := dockerReply{Status: resp.StatusCode, raw: raw}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("%s: answer is not JSON (status %d): %q", endpoint, resp.StatusCode, raw)
	}
	if r.Status != http.StatusOK && r.Err == "" {
		return r, fmt.Errorf("%s: status %d without an Err: %q", endpoint, r.Status, raw)
	}
	if r.Status == http.StatusOK && r.Err != "" {
		return r, fmt.Errorf("%s: status 200 with Err %q", endpoint, r.Err)
	}
	return r, nil
}

// mustDocker calls an endpoint that must succeed.
func (d *daemon) mustDocker(endpoint string, body any) dockerReply {
	d.t.Helper()
	r, err := d.docker(endpoint, body)
	if err != nil {
		d.t.Fatal(err)
	}
	if r.Status != http.StatusOK {
		d.t.Fatalf("%s %v: status %d: %s", endpoint, body, r.Status, r.Err)
	}
	return r
}
