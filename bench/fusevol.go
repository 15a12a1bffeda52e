package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// fusevolTarget is a fresh volume of a daemon the harness starts as a separate process (so its
// memory can be measured) with a private root and socket under the work directory.
type fusevolTarget struct {
	work, root, sock, mountRoot string
	mnt, cmpMnt                 string
	cmd                         *exec.Cmd
	exited                      chan struct{}
	client                      *client.Client
	logPath                     string
}

// startFusevol runs `volctl daemon`, waits until it is ready, and mounts the benchmark volumes.
func startFusevol(ctx context.Context, volctl, work, compression string) (*fusevolTarget, error) {
	t := &fusevolTarget{
		work:      work,
		root:      filepath.Join(work, "fv-root"),
		sock:      filepath.Join(work, "fv.sock"),
		mountRoot: filepath.Join(work, "fv-mounts"),
		mnt:       filepath.Join(work, "fv-mnt"),
		cmpMnt:    filepath.Join(work, "fv-cmp"),
		logPath:   filepath.Join(work, "daemon.log"),
		exited:    make(chan struct{}),
	}
	logf, err := os.Create(t.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	t.cmd = exec.Command(volctl, "daemon", "--root", t.root, "--socket", t.sock,
		"--mount-root", t.mountRoot, "--log-level", "warn")
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s daemon: %w", volctl, err)
	}
	go func() { t.cmd.Wait(); close(t.exited) }()
	t.client = client.New(t.sock)
	if err := t.waitReady(ctx, 60*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	if err := t.newVolume(ctx, volMain, nil, t.mnt); err != nil {
		t.stop()
		return nil, err
	}
	if err := t.newVolume(ctx, volCompressed, map[string]string{"compression": compression}, t.cmpMnt); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

func (t *fusevolTarget) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := t.client.Status(ctx)
		if err == nil && st.Ready {
			return nil
		}
		select {
		case <-t.exited:
			return fmt.Errorf("fusevol daemon exited during start-up (%v): %s", t.cmd.ProcessState, t.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fusevol daemon not ready after %v (last: %v): %s", limit, err, t.logTail())
		}
	}
}

// newVolume creates a volume and mounts it on dir.
func (t *fusevolTarget) newVolume(ctx context.Context, name string, opts map[string]string, dir string) error {
	if _, err := t.client.CreateVolume(ctx, name, opts); err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := t.client.Mount(ctx, name, dir); err != nil {
		return fmt.Errorf("mount volume %s on %s: %w", name, dir, err)
	}
	return nil
}

func (t *fusevolTarget) Name() string          { return TargetFusevol }
func (t *fusevolTarget) Dir() string           { return t.mnt }
func (t *fusevolTarget) CompressedDir() string { return t.cmpMnt }

// Close unmounts every volume, stops the daemon (SIGTERM, which must make it exit cleanly) and
// removes its store.
func (t *fusevolTarget) Close(ctx context.Context) error {
	var errs []error
	if mounts, err := t.client.Mounts(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list mounts: %w", err))
	} else {
		for _, m := range mounts {
			if err := t.client.Unmount(ctx, m.Dir); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m.Dir, err))
			}
		}
	}
	if err := t.stop(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		errs = append(errs, os.RemoveAll(t.root))
	}
	return errors.Join(errs...)
}

// stop sends SIGTERM and waits; a daemon that does not exit in 15 s is killed and reported.
func (t *fusevolTarget) stop() error {
	if err := t.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop fusevol daemon: %w", err)
	}
	select {
	case <-t.exited:
		if st := t.cmd.ProcessState; st != nil && !st.Success() {
			return fmt.Errorf("fusevol daemon exited with %v: %s", st, t.logTail())
		}
		return nil
	case <-time.After(15 * time.Second):
		t.cmd.Process.Kill()
		<-t.exited
		return fmt.Errorf("fusevol daemon ignored SIGTERM for 15 s and was killed")
	}
}

func (t *fusevolTarget) logTail() string {
	b, _ := os.ReadFile(t.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return fmt.Sprintf("daemon log %s: %q", t.logPath, bytes.TrimSpace(b))
}

// ResetPeak clears the daemon's peak RSS (VmHWM) so the next reading covers what follows.
func (t *fusevolTarget) ResetPeak() error {
	p := fmt.Sprintf("/proc/%d/clear_refs", t.cmd.Process.Pid)
	if err := os.WriteFile(p, []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	return nil
}

// PeakMiB reads the daemon's peak resident set size from /proc/PID/status.
func (t *fusevolTarget) PeakMiB() (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", t.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("daemon peak RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("daemon peak RSS: parse %q: %w", v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("daemon peak RSS: no VmHWM in /proc/%d/status", t.cmd.Process.Pid)
}

// storeBytes is the disk space the store really occupies: allocated blocks, not file sizes
// (Badger preallocates sparse files).
func (t *fusevolTarget) storeBytes() (int64, error) {
	var total int64
	err := filepath.WalkDir(t.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}
