package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goBin, "build", "-o", filepath.Join(dir, "volctl"), "./cli/volctl")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cli/volctl: %v\n%s", err, out)
			return
		}
		self, err := os.ReadFile(os.Args[0])
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "helper"), self, 0o755)
		}
		buildErr = err
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
	cmd    *exec.Cmd
	exited chan struct{}
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
	d.http = unixHTTP(d.sock)
	t.Cleanup(func() {
		if d.cmd != nil {
			d.cmd.Process.Kill()
			<-d.exited
			d.cmd = nil
		}
		detachUnder(root)
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", d.logTail())
		}
	})
	d.start()
	return d
}

// start runs the daemon and waits until its store is open.
func (d *daemon) start() {
	d.t.Helper()
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	args := append([]string{"daemon", "--root", d.root, "--socket", d.sock, "--log-level", "info"}, d.args...)
	cmd := exec.Command(d.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		d.t.Fatalf("start daemon: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := d.client.Status(context.Background())
		if err == nil && st.Ready {
			return
		}
		select {
		case <-exited:
			d.cmd = nil
			d.t.Fatalf("daemon exited at start:\n%s", d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon not ready within 60s (%v):\n%s", err, d.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (d *daemon) kill() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	d.cmd = nil
	d.http.CloseIdleConnections()
}

// stop sends SIGTERM; the daemon must exit 0 within Docker's 10 s grace.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.cmd = nil
		d.t.Fatalf("daemon still running 15s after SIGTERM:\n%s", d.logTail())
	}
	if !d.cmd.ProcessState.Success() {
		d.t.Errorf("daemon exited with %v after SIGTERM:\n%s", d.cmd.ProcessState, d.logTail())
	}
	d.cmd = nil
	d.http.CloseIdleConnections()
}

// alive reports whether the daemon process is still running.
func (d *daemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return d.cmd != nil
	}
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "trySplice") {
			keep = append(keep, line)
		}
	}
	s := strings.Join(keep, "\n")
	if len(s) > 8000 {
		s = "..." + s[len(s)-8000:]
	}
	return s
}

// mountRoot is where the daemon mounts volumes for Docker.
func (d *daemon) mountRoot() string { return filepath.Join(d.root, "mounts") }

// volctl runs the CLI against the daemon and returns its combined output and exit error.
func (d *daemon) volctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.bin, append([]string{"--socket", d.sock}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (d *daemon) mustVolctl(args ...string) string {
	d.t.Helper()
	out, err := d.volctl(args...)
	if err != nil {
		d.t.Fatalf("volctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
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

func unixHTTP(sock string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			MaxIdleConnsPerHost: 64,
		},
		Timeout: 2 * time.Minute,
	}
}

// mountsUnder lists the mount points strictly under dir from this process's mount table.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	prefix := filepath.Clean(dir) + "/"
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(unescapeMount(fields[4]), prefix) {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// detachUnder lazily unmounts everything mounted under dir, deepest first.
func detachUnder(dir string) {
	m := mountsUnder(dir)
	for i := len(m) - 1; i >= 0; i-- {
		unix.Unmount(m[i], unix.MNT_DETACH)
	}
}

// tempRoot is a fresh directory other users may traverse, removed (after detaching whatever
// is mounted under it) at the end of the test.
func tempRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fvrel-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() {
		detachUnder(dir)
		os.RemoveAll(dir)
	})
	return dir
}
