package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Target names the harness knows.
const (
	TargetNative   = "native"
	TargetLoopback = "loopback"
	TargetFusevol  = "fusevol"
)

// Target is a filesystem the workloads run on.
type Target interface {
	Name() string
	// Dir is an empty directory the harness owns on that filesystem.
	Dir() string
	// Close unmounts or stops whatever the target started and removes what the harness wrote.
	Close(ctx context.Context) error
}

// compressedTarget is a target with a separate directory where compression is switched on; the
// compressible workload runs there instead of in Dir.
type compressedTarget interface {
	CompressedDir() string
}

// dirTarget is a plain directory: the native target and every --target NAME=PATH.
type dirTarget struct {
	name string
	dir  string
}

func (t *dirTarget) Name() string                { return t.name }
func (t *dirTarget) Dir() string                 { return t.dir }
func (t *dirTarget) Close(context.Context) error { return os.RemoveAll(t.dir) }

// newDirTarget makes a fresh directory for the harness inside parent.
func newDirTarget(name, parent string) (*dirTarget, error) {
	dir, err := os.MkdirTemp(parent, "fusevol-bench-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", name, err)
	}
	// The pgbench workload's server runs as user postgres, which must reach it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("target %s: %w", name, err)
	}
	return &dirTarget{name: name, dir: dir}, nil
}

// ParseTargetSpec reads --target NAME=PATH.
func ParseTargetSpec(s string) (name, path string, err error) {
	name, path, ok := strings.Cut(s, "=")
	if !ok || name == "" || path == "" {
		return "", "", fmt.Errorf("--target %q: want NAME=PATH", s)
	}
	switch name {
	case TargetNative, TargetLoopback, TargetFusevol:
		return "", "", fmt.Errorf("--target %q: %s is a built-in target name, choose another", s, name)
	}
	if strings.ContainsAny(name, " \t/") {
		return "", "", fmt.Errorf("--target %q: the name may not contain spaces or slashes", s)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("--target %q: %w", s, err)
	}
	if !st.IsDir() {
		return "", "", fmt.Errorf("--target %q: %s is not a directory", s, path)
	}
	return name, path, nil
}

// loopbackTarget is go-fuse's loopback filesystem over a native directory, served by this
// process: the cost of FUSE itself in Go. It gets the same transport settings as fusevol's mounts
// (1 MiB writes, 1 MiB read-ahead in the mount options and in the kernel's per-mount setting,
// 128 background requests, 1 s entry and attribute timeouts, allow_other and
// default_permissions, so that other users such as postgres can use it) so the comparison is
// between filesystems, not between mount options. go-fuse hands open files to the kernel for
// passthrough I/O where the kernel offers it (FUSE passthrough, Linux 6.9 and later, as root).
type loopbackTarget struct {
	work   string
	mnt    string
	server *fuse.Server
}

func startLoopback(work string) (*loopbackTarget, error) {
	backing, mnt := filepath.Join(work, "loopback-data"), filepath.Join(work, "loopback-mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("loopback: %w", err)
		}
	}
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("loopback root: %w", err)
	}
	sec := time.Second
	srv, err := gofs.Mount(mnt, root, &gofs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{
			DirectMount: true, FsName: "bench-loopback", Name: "loopback",
			AllowOther: true, Options: []string{"default_permissions"},
			MaxWrite: 1 << 20, MaxReadAhead: 1 << 20, MaxBackground: 128,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount loopback on %s: %w", mnt, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("loopback mount %s does not answer: %w", mnt, err)
	}
	// Best effort, as fs.Mount does it: the kernel's default FUSE read-ahead is 128 KiB.
	ra := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	_ = os.WriteFile(ra, []byte("1024"), 0)
	return &loopbackTarget{work: work, mnt: mnt, server: srv}, nil
}

func (t *loopbackTarget) Name() string { return TargetLoopback }
func (t *loopbackTarget) Dir() string  { return t.mnt }

func (t *loopbackTarget) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 50; i++ {
			if err = t.server.Unmount(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- err
	}()
	// go-fuse's Unmount waits for its request readers, and once (after a pgbench run) one
	// stayed blocked in read(/dev/fuse) after the unmount, for good: the whole run hung there.
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("unmount loopback %s: %w", t.mnt, err)
		}
	case <-time.After(loopbackUnmountWait):
		return fmt.Errorf("unmount loopback %s: still waiting for its FUSE server after %v; left behind", t.mnt, loopbackUnmountWait)
	}
	return os.RemoveAll(filepath.Join(t.work, "loopback-data"))
}

const loopbackUnmountWait = time.Minute
