package fusetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recorder stands in for a test's testing.TB and records how the kit failed it.
type recorder struct {
	testing.TB
	failures []string
	cleanups []func()
}

func (r *recorder) Helper()                   {}
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) { r.failures = append(r.failures, fmt.Sprintf(f, a...)) }
func (r *recorder) Error(a ...any)            { r.Errorf("%s", fmt.Sprint(a...)) }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); runtime.Goexit() }
func (r *recorder) Fatal(a ...any)            { r.Error(a...); runtime.Goexit() }

// failures runs body as a test with its cleanups and returns its failures.
func failures(t *testing.T, body func(tb testing.TB)) []string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			for i := len(r.cleanups) - 1; i >= 0; i-- {
				r.cleanups[i]()
			}
		}()
		body(r)
	}()
	<-done
	return r.failures
}

func wantFailure(t *testing.T, got []string, want string) {
	t.Helper()
	if len(got) != 1 || !strings.Contains(got[0], want) {
		t.Errorf("failures %q, want one containing %q", got, want)
	}
}

// serve is a daemon's Run: it listens on sock until ctx ends and then returns stopErr.
func serve(sock string, stopErr error) func(context.Context) error {
	return func(ctx context.Context) error {
		l, err := net.Listen("unix", sock)
		if err != nil {
			return err
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		<-ctx.Done()
		return stopErr
	}
}

func TestStartDaemon(t *testing.T) {
	sock := filepath.Join(TempRoot(t, "fusetest-"), "d.sock")
	if f := failures(t, func(tb testing.TB) { StartDaemon(tb, sock, 5*time.Second, serve(sock, nil)) }); len(f) != 0 {
		t.Errorf("a daemon that listens and stops cleanly failed the test: %q", f)
	}
	f := failures(t, func(tb testing.TB) {
		StartDaemon(tb, sock, 5*time.Second, serve(sock, errors.New("store not closed")))
	})
	wantFailure(t, f, "store not closed")
	f = failures(t, func(tb testing.TB) {
		StartDaemon(tb, sock, 5*time.Second, func(context.Context) error { return errors.New("bad root") })
	})
	if len(f) != 2 || !strings.Contains(f[0], "exited before it was ready") || !strings.Contains(f[1], "bad root") {
		t.Errorf("a daemon that exits at once: failures %q", f)
	}
	f = failures(t, func(tb testing.TB) {
		d := StartDaemon(tb, sock, 100*time.Millisecond, func(ctx context.Context) error {
			serve(sock, nil)(ctx)
			time.Sleep(time.Second)
			return nil
		})
		d.Stop(tb, 100*time.Millisecond)
	})
	wantFailure(t, f, "did not stop within 100ms")
}

func TestProcess(t *testing.T) {
	dir := TempRoot(t, "fusetest-")
	log := filepath.Join(dir, "p.log")
	var p *Process
	f := failures(t, func(tb testing.TB) {
		p = StartProcess(tb, exec.Command("sh", "-c", `trap "echo bye; exit 0" TERM; echo hello; while :; do sleep 0.01; done`), log)
		p.WaitUntil(tb, "hello", func() error {
			if !strings.Contains(p.Output(), "hello") {
				return errors.New("no hello yet")
			}
			return nil
		})
		p.StopClean(tb, 5*time.Second)
	})
	if len(f) != 0 || p.Alive() || p.Output() != "hello\nbye\n" {
		t.Errorf("clean stop: failures %q, alive %v, log %q", f, p.Alive(), p.Output())
	}

	f = failures(t, func(tb testing.TB) {
		p = StartProcess(tb, exec.Command("sh", "-c", `trap "exit 3" TERM; while :; do sleep 0.01; done`), log)
		time.Sleep(100 * time.Millisecond) // let the shell set its trap
		p.StopClean(tb, 5*time.Second)
	})
	wantFailure(t, f, "exit status 3")

	f = failures(t, func(tb testing.TB) {
		p = StartProcess(tb, exec.Command("sh", "-c", `trap "" TERM; exec sleep 30`), log)
		time.Sleep(100 * time.Millisecond)
		p.StopClean(tb, 200*time.Millisecond)
	})
	wantFailure(t, f, "still running 200ms after SIGTERM")
	if p.Alive() {
		t.Error("a process that outlived its grace is still running")
	}

	f = failures(t, func(tb testing.TB) {
		p = StartProcess(tb, exec.Command("sh", "-c", "echo no store; exit 1"), log)
		p.WaitReady(tb, filepath.Join(dir, "none.sock"))
	})
	wantFailure(t, f, "exited before it was ready")
	if !strings.Contains(f[0], "no store") {
		t.Errorf("the failure does not hold the log's end: %q", f[0])
	}

	f = failures(t, func(tb testing.TB) { p = StartProcess(tb, exec.Command("sleep", "30"), log) })
	if len(f) != 0 || p.Alive() {
		t.Errorf("a process left running is not killed when the test ends (failures %q)", f)
	}
}

func TestMounts(t *testing.T) {
	RequireRoot(t, "to mount")
	var root string
	f := failures(t, func(tb testing.TB) {
		root = TempRoot(tb, "fusetest mounts ") // a space: mountinfo escapes it
		outer := filepath.Join(root, "a")
		inner := filepath.Join(outer, "b")
		os.Mkdir(outer, 0o755)
		if err := unix.Mount("tmpfs", outer, "tmpfs", 0, "size=1m"); err != nil {
			tb.Fatal(err)
		}
		os.Mkdir(inner, 0o755)
		if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
			tb.Fatal(err)
		}
		if !IsMountPoint(tb, outer) || !IsMountPoint(tb, inner) || IsMountPoint(tb, root) {
			tb.Errorf("IsMountPoint: %v %v %v, want true true false",
				IsMountPoint(tb, outer), IsMountPoint(tb, inner), IsMountPoint(tb, root))
		}
		if got := MountsUnder(root); !slices.Equal(got, []string{inner, outer}) {
			tb.Errorf("MountsUnder = %q, want %q (deepest first)", got, []string{inner, outer})
		}
	})
	if len(f) != 0 {
		t.Fatal(f)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) || len(MountsUnder(root)) != 0 {
		t.Errorf("TempRoot left %s behind (%v) or mounts under it: %q", root, err, MountsUnder(root))
	}
}

func TestOutput(t *testing.T) {
	out, err := Output(5*time.Second, []string{"FUSETEST_X=x"}, "sh", "-c", `echo " $FUSETEST_X "; echo oops >&2`)
	if err != nil || out != "x \noops" {
		t.Errorf("Output = %q, %v; want the combined output, trimmed", out, err)
	}
	if _, err := Output(100*time.Millisecond, nil, "sleep", "5"); err == nil {
		t.Error("a command past its timeout did not fail")
	}
	f := failures(t, func(tb testing.TB) { MustOutput(tb, 5*time.Second, nil, "sh", "-c", "echo no such volume; exit 1") })
	wantFailure(t, f, "no such volume")
	if !strings.HasPrefix(f[0], "sh -c echo no such volume; exit 1: exit status 1") {
		t.Errorf("the failure does not name the command: %q", f[0])
	}
}
