package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/plugin/client"
)

// Volumes the fusevol target creates in its private daemon.
const (
	volMain       = "bench"
	volCompressed = "bench-compressed"
)

// daemon is a `volctl daemon` process with a private root, socket and mount root, run as a
// separate process so that its memory can be measured.
type daemon struct {
	root, sock, mountRoot string
	logPath               string
	cmd                   *exec.Cmd
	exited                chan struct{}
	client                *client.Client
}

// startDaemon runs `volctl daemon` with everything under dir and waits until it is ready.
func startDaemon(ctx context.Context, volctl, dir string) (*daemon, error) {
	d := &daemon{
		root:      filepath.Join(dir, "root"),
		sock:      filepath.Join(dir, "fv.sock"),
		mountRoot: filepath.Join(dir, "mounts"),
		logPath:   filepath.Join(dir, "daemon.log"),
		exited:    make(chan struct{}),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(volctl, "daemon", "--root", d.root, "--socket", d.sock,
		"--mount-root", d.mountRoot, "--log-level", "info") // info: the soak reads the "gc pass" lines
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s daemon: %w", volctl, err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	d.client = client.New(d.sock)
	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

func (d *daemon) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := d.client.Status(ctx)
		if err == nil && st.Ready {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("fusevol daemon exited during start-up (%v): %s", d.cmd.ProcessState, d.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fusevol daemon not ready after %v (last: %v): %s", limit, err, d.logTail())
		}
	}
}

// newVolume creates a volume and mounts it on dir.
func (d *daemon) newVolume(ctx context.Context, name string, opts map[string]string, dir string) error {
	if _, err := d.client.CreateVolume(ctx, name, opts); err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := d.client.Mount(ctx, name, dir); err != nil {
		return fmt.Errorf("mount volume %s on %s: %w", name, dir, err)
	}
	return nil
}

// close unmounts every volctl mount, stops the daemon (SIGTERM, which must make it exit cleanly)
// and removes its store.
func (d *daemon) close(ctx context.Context) error {
	var errs []error
	if mounts, err := d.client.Mounts(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list mounts: %w", err))
	} else {
		for _, m := range mounts {
			if err := d.client.Unmount(ctx, m.Dir); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m.Dir, err))
			}
		}
	}
	if err := d.stop(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		errs = append(errs, os.RemoveAll(d.root))
	}
	return errors.Join(errs...)
}

// stop sends SIGTERM and waits; a daemon that does not exit in 15 s is killed and reported.
func (d *daemon) stop() error {
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop fusevol daemon: %w", err)
	}
	select {
	case <-d.exited:
		if st := d.cmd.ProcessState; st != nil && !st.Success() {
			return fmt.Errorf("fusevol daemon exited with %v: %s", st, d.logTail())
		}
		return nil
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("fusevol daemon ignored SIGTERM for 15 s and was killed")
	}
}

// fusevolTarget is a fresh volume of a daemon the harness starts, plus a second volume with
// compression on for the compressible workload, and the volumes of the concurrent writers (made
// when first needed).
type fusevolTarget struct {
	*daemon
	volctl, work string
	mnt, cmpMnt  string
	extra        []string // mount points of the writers' volumes
}

// extraVolumes returns the mount points of n volumes of their own, creating those not made yet.
func (t *fusevolTarget) extraVolumes(ctx context.Context, n int) ([]string, error) {
	for i := len(t.extra); i < n; i++ {
		dir := filepath.Join(t.work, fmt.Sprintf("fv-w%d", i))
		if err := t.newVolume(ctx, fmt.Sprintf("bench-w%d", i), nil, dir); err != nil {
			return nil, err
		}
		t.extra = append(t.extra, dir)
	}
	return t.extra[:n], nil
}

// startFusevol starts the daemon and mounts the benchmark volumes.
func startFusevol(ctx context.Context, volctl, work, compression string) (*fusevolTarget, error) {
	d, err := startDaemon(ctx, volctl, filepath.Join(work, "fusevol"))
	if err != nil {
		return nil, err
	}
	t := &fusevolTarget{daemon: d, volctl: volctl, work: work,
		mnt: filepath.Join(work, "fv-mnt"), cmpMnt: filepath.Join(work, "fv-cmp")}
	if err := t.newVolume(ctx, volMain, nil, t.mnt); err != nil {
		return nil, errors.Join(err, d.close(ctx))
	}
	if err := t.newVolume(ctx, volCompressed, map[string]string{"compression": compression}, t.cmpMnt); err != nil {
		return nil, errors.Join(err, d.close(ctx))
	}
	return t, nil
}

func (t *fusevolTarget) Name() string                    { return TargetFusevol }
func (t *fusevolTarget) Dir() string                     { return t.mnt }
func (t *fusevolTarget) CompressedDir() string           { return t.cmpMnt }
func (t *fusevolTarget) Close(ctx context.Context) error { return t.daemon.close(ctx) }

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return fmt.Sprintf("daemon log %s: %q", d.logPath, bytes.TrimSpace(b))
}

// ResetPeak clears the daemon's peak RSS (VmHWM) so the next reading covers what follows.
func (d *daemon) ResetPeak() error {
	p := fmt.Sprintf("/proc/%d/clear_refs", d.cmd.Process.Pid)
	if err := os.WriteFile(p, []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	return nil
}

// PeakMiB reads the daemon's peak resident set size (VmHWM: anonymous and file-backed pages).
func (d *daemon) PeakMiB() (float64, error) { return d.statusMiB("VmHWM") }

// AnonMiB reads the daemon's current anonymous resident memory (RssAnon: heap and stacks, not
// the page cache of files it maps, such as Badger's).
func (d *daemon) AnonMiB() (float64, error) { return d.statusMiB("RssAnon") }

// statusMiB reads one "Field:   N kB" line of /proc/PID/status.
func (d *daemon) statusMiB(field string) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("daemon %s: %w", field, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("daemon %s: parse %q: %w", field, v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("daemon %s: not in /proc/%d/status", field, d.cmd.Process.Pid)
}
