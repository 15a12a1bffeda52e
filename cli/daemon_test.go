package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonCommand runs the built `volctl daemon` as a user would: flags, then environment
// variables and the global --socket; SIGTERM makes it exit 0 and the store survives.
func TestDaemonCommand(t *testing.T) {
	bin := buildVolctl(t)
	dir, err := os.MkdirTemp("", "volctl-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root, sock := filepath.Join(dir, "root"), filepath.Join(dir, "d.sock")

	var logs bytes.Buffer
	d := startBinary(t, bin, nil, &logs, "daemon", "--root", root, "--socket", sock,
		"--mount-root", filepath.Join(dir, "mnt"), "--log-format", "json", "--log-level", "debug")
	waitReady(t, sock, d.exited)
	volctl(t, "--socket", sock, "volume", "create", "kept").ok(t)
	d.stop(t)
	sc := bufio.NewScanner(&logs)
	lines := 0
	for sc.Scan() {
		lines++
		if !json.Valid(sc.Bytes()) {
			t.Errorf("--log-format json wrote a non-JSON line: %s", sc.Text())
		}
	}
	if lines == 0 {
		t.Error("the daemon logged nothing at debug level")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after SIGTERM: %v", err)
	}

	// Second run: root from the environment, socket from the global flag.
	logs.Reset()
	d = startBinary(t, bin, []string{"FUSEVOL_ROOT=" + root, "FUSEVOL_LOG_LEVEL=warn"}, &logs, "--socket", sock, "daemon")
	waitReady(t, sock, d.exited)
	t.Setenv("FUSEVOL_SOCKET", sock)
	if r := volctl(t, "volume", "ls", "-q").ok(t); r.stdout != "kept\n" {
		t.Errorf("after a restart the daemon lists %q", r.stdout)
	}
	d.stop(t)
	if strings.Contains(logs.String(), "level=INFO") {
		t.Errorf("FUSEVOL_LOG_LEVEL=warn still logs info:\n%s", logs.String())
	}
}

type daemonProcess struct {
	cmd     *exec.Cmd
	exited  chan error
	stopped bool
}

func startBinary(t *testing.T, bin string, env []string, logs *bytes.Buffer, args ...string) *daemonProcess {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &daemonProcess{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if !p.stopped {
			cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
			}
		}
	})
	return p
}

// stop sends SIGTERM and requires exit status 0 within Docker's 10 second grace.
func (p *daemonProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.stopped = true
		if err != nil {
			t.Fatalf("daemon exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon still running 10s after SIGTERM")
	}
}
