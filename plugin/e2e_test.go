package plugin

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/fs/mountinfo"
	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// The end-to-end test drives a real dockerd (private data root, exec root and socket) against
// the volctl binary, then against the managed plugin built from plugin/config.json.

const e2eImage = "fusevol-test:busybox"

// e2eEnv is one test's Docker engine and fusevol daemon.
type e2eEnv struct {
	t       *testing.T // the running subtest
	top     *testing.T
	work    string // everything the test creates on the host
	bin     string // volctl binary
	driver  string // legacy plugin name: the socket is /run/docker/plugins/<driver>.sock
	sock    string
	root    string
	dsock   string // dockerd's API socket
	dockerd *fusetest.Process
	fusevol *fusetest.Process
}

// e2ePrereqs makes sure root, /dev/fuse, dockerd and busybox-static are there, installing the
// packages with apt-get when missing. Outside CI a machine that cannot run the test skips it.
func e2ePrereqs(t *testing.T) {
	t.Helper()
	if os.Getenv("CI") != "true" && testing.Short() {
		t.Skip("-short: skipping the Docker end-to-end test")
	}
	fusetest.Require(t)
	missing := func() bool {
		for _, p := range []string{"dockerd", "docker", "containerd", "runc"} {
			if _, err := exec.LookPath(p); err != nil {
				return true
			}
		}
		_, err := os.Stat("/bin/busybox")
		return err != nil
	}
	if missing() {
		install := func() error {
			cmd := exec.Command("apt-get", "install", "-y", "-qq", "docker.io", "busybox-static")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, tail(string(out), 2000))
			}
			return nil
		}
		if err := install(); err != nil {
			exec.Command("apt-get", "update", "-qq").Run()
			if err := install(); err != nil {
				fusetest.Missing(t, fmt.Sprintf("apt-get install docker.io busybox-static: %v", err))
			}
		}
		if missing() {
			fusetest.Missing(t, "docker.io or busybox-static still missing after apt-get install")
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// e2eLock serializes end-to-end runs on one machine (they share /run/docker/plugins and load
// the machine); it is released when the test ends.
func e2eLock(t *testing.T) {
	f, err := os.OpenFile("/run/fusevol-e2e.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Log("another end-to-end run holds /run/fusevol-e2e.lock; waiting")
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { f.Close() })
}

func newE2E(t *testing.T) *e2eEnv {
	e2ePrereqs(t)
	e2eLock(t)
	work, err := os.MkdirTemp("", "fusevol-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &e2eEnv{t: t, top: t, work: work, driver: fmt.Sprintf("fusevol-e2e-%d", os.Getpid())}
	e.sock = filepath.Join("/run/docker/plugins", e.driver+".sock")
	e.root = filepath.Join(work, "fusevol")
	e.dsock = filepath.Join(work, "docker.sock")
	t.Cleanup(e.cleanup)
	e.bin = fusetest.BuildVolctl(t, work)
	e.startDockerd()
	e.importImage()
	e.startFusevol()
	return e
}

func (e *e2eEnv) startDockerd() {
	e.t.Helper()
	cmd := exec.Command("dockerd",
		"--data-root", filepath.Join(e.work, "docker"),
		"--exec-root", filepath.Join(e.work, "exec"),
		"--pidfile", filepath.Join(e.work, "docker.pid"),
		"--host", "unix://"+e.dsock,
		"--iptables=false", "--bridge=none",
		// A system containerd, if one runs, is shared: keep this engine's containers apart.
		"--containerd-namespace", e.driver, "--containerd-plugins-namespace", e.driver+"-plugins")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	e.dockerd = e.start(cmd, "dockerd.log")
	e.dockerd.WaitUntil(e.t, "dockerd", func() error { _, err := e.docker("version"); return err })
}

// start starts a program of the environment; e.cleanup stops it.
func (e *e2eEnv) start(cmd *exec.Cmd, log string) *fusetest.Process {
	e.t.Helper()
	p, err := fusetest.Start(cmd, filepath.Join(e.work, log))
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// stopDockerd stops dockerd the way an init system does.
func (e *e2eEnv) stopDockerd() {
	e.t.Helper()
	if e.dockerd == nil {
		return
	}
	if !e.dockerd.Stop(syscall.SIGTERM, 60*time.Second) {
		e.t.Error("dockerd did not stop within 60s of SIGTERM")
	}
	e.dockerd = nil
}

func (e *e2eEnv) logContains(name, s string) bool {
	b, _ := os.ReadFile(filepath.Join(e.work, name))
	return strings.Contains(string(b), s)
}

// logTail is the end of a log, without go-fuse's splice chatter.
func (e *e2eEnv) logTail(name string) string {
	return fusetest.LogTail(filepath.Join(e.work, name), 6000)
}

// importImage builds the test image from busybox-static: no image can be pulled here.
func (e *e2eEnv) importImage() {
	e.t.Helper()
	if _, err := e.docker("image", "inspect", e2eImage); err == nil {
		return
	}
	rootfs := filepath.Join(e.work, "busybox-rootfs")
	for _, d := range []string{"bin", "tmp", "etc", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		e.t.Fatal(err)
	}
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		e.t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			os.Symlink("busybox", filepath.Join(rootfs, "bin", applet))
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc", "group"), []byte("root:x:0:\nuser:x:1000:\n"), 0o644)
	cmd := exec.Command("sh", "-c", "tar -C \"$1\" -c . | docker import - \"$2\"", "sh", rootfs, e2eImage)
	cmd.Env = append(os.Environ(), e.dockerHost()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("docker import: %v\n%s", err, out)
	}
}

func (e *e2eEnv) dockerHost() []string { return []string{"DOCKER_HOST=unix://" + e.dsock} }

// docker runs the docker CLI against the private engine and returns its combined output.
func (e *e2eEnv) docker(args ...string) (string, error) {
	return fusetest.Output(3*time.Minute, e.dockerHost(), "docker", args...)
}

func (e *e2eEnv) mustDocker(args ...string) string {
	e.t.Helper()
	return fusetest.MustOutput(e.t, 3*time.Minute, e.dockerHost(), "docker", args...)
}

// run runs a throw-away container with the given docker run flags and shell script.
func (e *e2eEnv) run(flags []string, script string) (string, error) {
	args := append([]string{"run", "--rm", "--network", "none"}, flags...)
	return e.docker(append(args, e2eImage, "sh", "-c", script)...)
}

func (e *e2eEnv) mustRun(flags []string, script string) string {
	e.t.Helper()
	out, err := e.run(flags, script)
	if err != nil {
		e.t.Fatalf("docker run %v %q: %v\n%s", flags, script, err, out)
	}
	return out
}

// vol is the -v flag mounting a fusevol volume on /data.
func (e *e2eEnv) vol(name string) []string { return []string{"-v", name + ":/data"} }

// startFusevol starts `volctl daemon` on the legacy plugin socket and waits until it answers.
func (e *e2eEnv) startFusevol() {
	e.t.Helper()
	e.fusevol = e.start(exec.Command(e.bin, "daemon", "--root", e.root, "--socket", e.sock, "--log-level", "debug"), "fusevol.log")
	e.fusevol.WaitReady(e.t, e.sock)
}

// stopFusevol sends sig to the daemon and waits for it to exit; for SIGTERM it must exit 0
// within Docker's 10 s grace.
func (e *e2eEnv) stopFusevol(sig syscall.Signal) {
	e.t.Helper()
	if e.fusevol == nil {
		return
	}
	start := time.Now()
	if !e.fusevol.Stop(sig, 10*time.Second) {
		e.t.Errorf("volctl daemon still running 10s after %v:\n%s", sig, e.logTail("fusevol.log"))
	}
	if st := e.fusevol.Cmd.ProcessState; sig == syscall.SIGTERM && !st.Success() {
		e.t.Errorf("volctl daemon exited with %v after SIGTERM:\n%s", st, e.logTail("fusevol.log"))
	}
	e.t.Logf("volctl daemon stopped by %v in %v", sig, time.Since(start).Round(time.Millisecond))
	e.fusevol = nil
}

// volctl runs the CLI against the test daemon.
func (e *e2eEnv) volctl(args ...string) (string, error) {
	return fusetest.Volctl{Bin: e.bin, Socket: e.sock}.Run(args...)
}

func (e *e2eEnv) mustVolctl(args ...string) string {
	e.t.Helper()
	return fusetest.Volctl{Bin: e.bin, Socket: e.sock}.Must(e.t, args...)
}

// inspect reads a volume's state through the control API.
func (e *e2eEnv) inspect(name string) api.Volume {
	e.t.Helper()
	v, err := client.New(e.sock).InspectVolume(context.Background(), name)
	if err != nil {
		e.t.Fatalf("inspect %s: %v", name, err)
	}
	return v
}

// cleanup removes containers, stops both daemons, detaches whatever they left mounted and
// deletes the work directory.
func (e *e2eEnv) cleanup() {
	e.t = e.top
	if e.dockerd != nil {
		if ids, err := e.docker("ps", "-aq"); err == nil && ids != "" {
			e.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		if out, err := e.docker("plugin", "ls", "-q"); err == nil && out != "" {
			for _, p := range strings.Fields(out) {
				e.docker("plugin", "disable", "-f", p)
				e.docker("plugin", "rm", "-f", p)
			}
		}
		e.stopDockerd()
	}
	if e.fusevol != nil {
		e.stopFusevol(syscall.SIGTERM)
	}
	if e.top.Failed() {
		e.top.Logf("fusevol log:\n%s", e.logTail("fusevol.log"))
		e.top.Logf("dockerd log:\n%s", e.logTail("dockerd.log"))
	}
	fusetest.DetachUnder(e.work)
	os.Remove(e.sock)
	if os.Getenv("FUSEVOL_E2E_KEEP") != "" {
		e.top.Logf("FUSEVOL_E2E_KEEP: leaving %s", e.work)
		return
	}
	os.RemoveAll(e.work)
}

// sha256Hex is the checksum busybox's sha256sum prints.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDockerEndToEnd(t *testing.T) {
	e := newE2E(t)
	drv := []string{"-d", e.driver}

	t.Run("create-and-64MiB-checksum", func(t *testing.T) {
		e.t = t
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "-o", "size=1GiB", "big")...)
		if got := e.mustDocker("volume", "inspect", "-f", "{{.Driver}} {{.Mountpoint}}", "big"); got != e.driver+" "+filepath.Join(e.root, "mounts", "big") {
			t.Errorf("docker volume inspect: %q", got)
		}
		if v := e.inspect("big"); v.Options.Size != 1<<30 {
			t.Errorf("size option not applied: %+v", v.Options)
		}
		w := e.mustRun(e.vol("big"), "dd if=/dev/urandom of=/data/rand bs=1M count=64 2>/dev/null && sha256sum /data/rand")
		r := e.mustRun(e.vol("big"), "sha256sum /data/rand")
		if w == "" || w != r || !strings.Contains(r, "/data/rand") {
			t.Fatalf("written %q, read back %q", w, r)
		}
		// Inside a container, df shows the quota as the volume's size.
		df := e.mustRun(e.vol("big"), "df -Pk /data | tail -n 1")
		if f := strings.Fields(df); len(f) < 4 || f[1] != "1048576" {
			t.Errorf("df in the container: %q, want 1048576 KiB blocks (the 1GiB quota)", df)
		}
		if v := e.inspect("big"); v.Mounted || len(v.MountIDs) != 0 {
			t.Errorf("still mounted after both containers exited: %+v", v)
		}
	})

	t.Run("shared-and-docker-cp", func(t *testing.T) {
		e.t = t
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "shared")...)
		for _, c := range []string{"sa", "sb"} {
			e.mustDocker("run", "-d", "--name", c, "--network", "none", "-v", "shared:/data", e2eImage, "sleep", "600")
		}
		e.mustDocker("exec", "sb", "sh", "-c", "echo from-b > /data/b")
		if got := e.mustDocker("exec", "sa", "cat", "/data/b"); got != "from-b" {
			t.Errorf("sa reads %q", got)
		}
		e.mustDocker("rm", "-f", "sb")
		if got := e.mustDocker("exec", "sa", "sh", "-c", "echo after > /data/a && cat /data/a /data/b"); got != "after\nfrom-b" {
			t.Errorf("sa after sb exited: %q", got)
		}
		// docker cp into the running container's volume mounts it again under the same ID.
		src := filepath.Join(e.work, "cp-src")
		os.WriteFile(src, []byte("copied in"), 0o644)
		e.mustDocker("cp", src, "sa:/data/copied")
		if got := e.mustDocker("exec", "sa", "cat", "/data/copied"); got != "copied in" {
			t.Errorf("after docker cp: %q", got)
		}
		if got := e.mustDocker("exec", "sa", "cat", "/data/a"); got != "after" {
			t.Errorf("volume broken after docker cp: %q", got)
		}
		e.mustDocker("rm", "-f", "sa")
		if v := e.inspect("shared"); v.Mounted || len(v.MountIDs) != 0 {
			t.Errorf("references left after every container exited: %+v", v)
		}
	})

	t.Run("implicit-create", func(t *testing.T) {
		e.t = t
		e.mustRun([]string{"--volume-driver", e.driver, "-v", "implicit:/data"}, "echo hi > /data/f")
		if got := e.mustDocker("volume", "inspect", "-f", "{{.Driver}}", "implicit"); got != e.driver {
			t.Errorf("implicit volume driver %q", got)
		}
		if got := e.mustRun(e.vol("implicit"), "cat /data/f"); got != "hi" {
			t.Errorf("implicit volume holds %q", got)
		}
	})

	t.Run("remove-in-use", func(t *testing.T) {
		e.t = t
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "rmv")...)
		e.mustDocker("run", "-d", "--name", "holder", "--network", "none", "-v", "rmv:/data", e2eImage,
			"sh", "-c", "echo old > /data/old; sleep 600")
		waitFor(t, func() bool { return e.inspect("rmv").Mounted })
		out, err := e.docker("volume", "rm", "rmv")
		if err == nil || !strings.Contains(out, "in use") {
			t.Fatalf("volume rm while in use: %v %q; want refused as in use", err, out)
		}
		out, err = e.volctl("volume", "rm", "rmv")
		if err == nil || !strings.Contains(out, "in use") {
			t.Fatalf("volctl volume rm while in use: %v %q; want refused as in use", err, out)
		}
		e.mustDocker("rm", "-f", "holder")
		e.mustDocker("volume", "rm", "rmv")
		if _, err := client.New(e.sock).InspectVolume(context.Background(), "rmv"); !api.HasCode(err, api.CodeNotFound) {
			t.Fatalf("rmv after docker volume rm: %v", err)
		}
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "rmv")...)
		if got := e.mustRun(e.vol("rmv"), "ls -A /data | grep -v '^.snapshots$'; true"); got != "" {
			t.Errorf("re-created volume holds %q", got)
		}
	})

	t.Run("snapshot-and-clone", func(t *testing.T) {
		e.t = t
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "snapv")...)
		e.mustRun(e.vol("snapv"), "echo v1 > /data/f")
		e.mustVolctl("snapshot", "create", "snapv", "snap1")
		e.mustRun(e.vol("snapv"), "echo v2 > /data/f")
		if got := e.mustRun(e.vol("snapv"), "cat /data/.snapshots/snap1/f /data/f"); got != "v1\nv2" {
			t.Errorf("snapshot then live: %q", got)
		}
		out, err := e.run(e.vol("snapv"), "echo x > /data/.snapshots/snap1/f")
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("write into a snapshot: %v %q; want EROFS", err, out)
		}
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "-o", "from=snapv@snap1", "clonev")...)
		if got := e.mustRun(e.vol("clonev"), "cat /data/f; echo c > /data/f"); got != "v1" {
			t.Errorf("clone holds %q, want v1", got)
		}
		if got := e.mustRun(e.vol("snapv"), "cat /data/f"); got != "v2" {
			t.Errorf("origin holds %q after the clone was written, want v2", got)
		}
	})

	t.Run("uid-1000-permissions", func(t *testing.T) {
		e.t = t
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0755", "perm")...)
		e.mustRun(e.vol("perm"), "mkdir /data/rootonly && echo secret > /data/rootonly/s && chmod 600 /data/rootonly/s && chmod 755 /data/rootonly")
		out := e.mustRun(append([]string{"-u", "1000:1000"}, e.vol("perm")...), "echo mine > /data/mine && cat /data/mine")
		if out != "mine" {
			t.Errorf("uid 1000 in its own root directory: %q", out)
		}
		for _, script := range []string{"echo x > /data/rootonly/x", "cat /data/rootonly/s"} {
			out, err := e.run(append([]string{"-u", "1000:1000"}, e.vol("perm")...), script)
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("uid 1000 %q: %v %q; want EACCES", script, err, out)
			}
		}
	})

	t.Run("daemon-sigkill", func(t *testing.T) {
		e.t = t
		e.mustDocker(append(append([]string{"volume", "create"}, drv...), "crash")...)
		// Each line is printed only after the file and its checksum were fsynced.
		script := `i=0; while [ $i -lt 2000 ]; do i=$((i+1)); dd if=/dev/urandom of=/data/f$i bs=64k count=2 conv=fsync 2>/dev/null || exit 0; s=$(sha256sum /data/f$i) || exit 0; echo "ACK $s"; done`
		e.mustDocker("run", "-d", "--name", "writer", "--network", "none", "-v", "crash:/data", e2eImage, "sh", "-c", script)
		waitFor(t, func() bool {
			out, _ := e.docker("logs", "writer")
			return strings.Count(out, "ACK") >= 10
		})
		vmnt := filepath.Join(e.work, "volctl-mount")
		os.Mkdir(vmnt, 0o755)
		e.mustVolctl("mount", "crash", vmnt)
		e.stopFusevol(syscall.SIGKILL)
		e.startFusevol()
		// The new daemon never saw that volctl mount; unmounting its dead remains still works.
		e.mustVolctl("unmount", vmnt)
		if isMountPoint(t, vmnt) {
			t.Errorf("%s still mounted after volctl unmount", vmnt)
		}
		if dead := filepath.Join(e.root, "mounts", "crash"); !e.logContains("fusevol.log", `stale mount removed" dir=`+dead) {
			t.Errorf("the restarted daemon did not report removing the dead mount %s", dead)
		}
		logs := e.mustDocker("logs", "writer")
		e.mustDocker("rm", "-f", "writer") // its Unmount carries an ID the new daemon never saw
		acked := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(logs))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "ACK" {
				acked[f[2]] = f[1]
			}
		}
		if len(acked) < 10 {
			t.Fatalf("only %d acknowledged files in the writer's log", len(acked))
		}
		out := e.mustRun(e.vol("crash"), "sha256sum /data/f*")
		found := map[string]string{}
		sc = bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 {
				found[f[1]] = f[0]
			}
		}
		for path, sum := range acked {
			if found[path] != sum {
				t.Errorf("%s: acknowledged %s, found %q after the crash", path, sum, found[path])
			}
		}
		if out, err := e.volctl("fsck"); err != nil {
			t.Errorf("volctl fsck after SIGKILL: %v\n%s", err, out)
		}
	})

	t.Run("dockerd-restart", func(t *testing.T) {
		e.t = t
		e.mustDocker("run", "-d", "--name", "survivor", "--stop-timeout", "1", "--network", "none", "-v", "big:/data", e2eImage, "sleep", "600")
		waitFor(t, func() bool { return e.inspect("big").Mounted })
		e.stopDockerd()
		e.startDockerd()
		ls := e.mustDocker("volume", "ls", "-q", "--filter", "driver="+e.driver)
		for _, name := range []string{"big", "shared", "implicit", "rmv", "snapv", "clonev", "perm", "crash"} {
			if !strings.Contains("\n"+ls+"\n", "\n"+name+"\n") {
				t.Errorf("volume %s not listed after dockerd restart: %q", name, ls)
			}
		}
		if v := e.inspect("big"); v.Mounted {
			t.Errorf("big still mounted after dockerd stopped its container: %+v", v)
		}
		e.mustDocker("start", "survivor")
		if got := e.mustDocker("exec", "survivor", "sha256sum", "/data/rand"); !strings.Contains(got, "/data/rand") {
			t.Errorf("read after dockerd restart: %q", got)
		}
		e.mustDocker("rm", "-f", "survivor")
		if v := e.inspect("big"); v.Mounted {
			t.Errorf("big still mounted after its container was removed: %+v", v)
		}
	})

	t.Run("sigterm-clean-exit", func(t *testing.T) {
		e.t = t
		e.mustDocker("run", "-d", "--name", "busy", "--network", "none", "-v", "big:/data", e2eImage, "sleep", "600")
		waitFor(t, func() bool { return e.inspect("big").Mounted })
		e.stopFusevol(syscall.SIGTERM)
		if m, _ := mountinfo.Under(filepath.Join(e.root, "mounts")); len(m) != 0 {
			t.Errorf("mounts left after SIGTERM: %v", m)
		}
		e.startFusevol()
		e.mustDocker("rm", "-f", "busy") // its Unmount reaches a daemon that never saw its ID
		if v := e.inspect("big"); v.Mounted {
			t.Errorf("big mounted after the restart: %+v", v)
		}
	})

	t.Run("managed-plugin", func(t *testing.T) {
		e.t = t
		name := "fusevol-e2e:test"
		dir := filepath.Join(e.work, "managed")
		for _, d := range []string{"run/docker/plugins", "mnt/volumes", "mnt/state", "tmp", "dev", "proc", "sys", "etc"} {
			if err := os.MkdirAll(filepath.Join(dir, "rootfs", d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		fusetest.BuildVolctl(t, filepath.Join(dir, "rootfs"))
		cfg, err := os.ReadFile("config.json")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
		state := filepath.Join(e.work, "plugin-state")
		os.MkdirAll(state, 0o700)
		e.mustDocker("plugin", "create", name, dir)
		e.mustDocker("plugin", "set", name, "state.source="+state)
		e.mustDocker("plugin", "enable", name)
		e.mustDocker("volume", "create", "-d", name, "mv")
		buf := make([]byte, 1<<20)
		rand.Read(buf)
		src := filepath.Join(e.work, "managed-src")
		os.WriteFile(src, buf, 0o644)
		e.mustRun(append(e.vol("mv"), "-v", src+":/src:ro"), "cp /src /data/blob && echo ok > /data/ok")
		got := e.mustRun(e.vol("mv"), "cat /data/ok; sha256sum /data/blob")
		if want := "ok\n" + sha256Hex(buf) + "  /data/blob"; got != want {
			t.Errorf("through the managed plugin: %q, want %q", got, want)
		}
		if _, err := os.Stat(filepath.Join(state, "fusevol")); err != nil {
			t.Errorf("store not in the state mount: %v", err)
		}
		// A plugin that dies is restarted by dockerd without unmounting: the new instance
		// clears the dead mount in its propagated mount and serves the volume again.
		e.mustDocker("run", "-d", "--name", "mholder", "--network", "none", "-v", "mv:/data", e2eImage, "sleep", "600")
		id := e.mustDocker("plugin", "inspect", "-f", "{{.Id}}", name)
		// volctl reaches the managed plugin through its socket.
		psock := e.managedSocket(t, id)
		if out, err := exec.Command(e.bin, "--socket", psock, "volume", "ls").CombinedOutput(); err != nil || !strings.Contains(string(out), "mv") {
			t.Errorf("volctl --socket %s volume ls: %v\n%s", psock, err, out)
		}
		pid := managedPluginPID(id)
		if pid == 0 {
			t.Fatalf("cannot find the process of plugin %s", id)
		}
		syscall.Kill(pid, syscall.SIGKILL)
		waitFor(t, func() bool { p := managedPluginPID(id); return p != 0 && p != pid })
		e.mustDocker("rm", "-f", "mholder")
		if got := e.mustRun(e.vol("mv"), "cat /data/ok"); got != "ok" {
			t.Errorf("after the plugin was killed and restarted: %q", got)
		}
		e.mustDocker("volume", "rm", "mv")
		e.mustDocker("plugin", "disable", name)
		e.mustDocker("plugin", "rm", name)
	})
}

// managedSocket is the host path of a managed plugin's socket: dockerd 20.10 keeps it in
// /run/docker/plugins/<id> whatever its exec root, later versions under the exec root (whose
// path here is too long for a socket address, so it is reached through a short link).
func (e *e2eEnv) managedSocket(t *testing.T, id string) string {
	if p := filepath.Join("/run/docker/plugins", id, "fusevol.sock"); fileExists(p) {
		return p
	}
	dir := filepath.Join(e.work, "exec", "plugins", id)
	if !fileExists(filepath.Join(dir, "fusevol.sock")) {
		t.Fatalf("socket of plugin %s not found", id)
	}
	link := filepath.Join(os.TempDir(), fmt.Sprintf("fusevol-e2e-%d-plugin", os.Getpid()))
	os.Remove(link)
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	return filepath.Join(link, "fusevol.sock")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// managedPluginPID finds the process of the managed plugin with the given ID: a volctl daemon
// whose cgroup is named after the plugin. 0 when there is none.
func managedPluginPID(id string) int {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmd), "/volctl\x00daemon\x00") {
			continue
		}
		if cg, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cgroup")); err == nil && strings.Contains(string(cg), id) {
			return pid
		}
	}
	return 0
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
