package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// TestDaemonCommand runs the built `volctl daemon` as a user would: flags, then environment
// variables and the global --socket; SIGTERM makes it exit 0 and the store survives.
func TestDaemonCommand(t *testing.T) {
	bin := fusetest.BuildVolctl(t, t.TempDir())
	dir := fusetest.TempRoot(t, "volctl-daemon-")
	root, sock := filepath.Join(dir, "root"), filepath.Join(dir, "d.sock")

	d := fusetest.StartProcess(t, exec.Command(bin, "daemon", "--root", root, "--socket", sock,
		"--mount-root", filepath.Join(dir, "mnt"), "--log-format", "json", "--log-level", "debug"),
		filepath.Join(dir, "first.log"))
	d.WaitReady(t, sock)
	volctl(t, "--socket", sock, "volume", "create", "kept").ok(t)
	d.StopClean(t, 10*time.Second)
	sc := bufio.NewScanner(strings.NewReader(d.Output()))
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
	cmd := exec.Command(bin, "--socket", sock, "daemon")
	cmd.Env = append(os.Environ(), "FUSEVOL_ROOT="+root, "FUSEVOL_LOG_LEVEL=warn")
	d = fusetest.StartProcess(t, cmd, filepath.Join(dir, "second.log"))
	d.WaitReady(t, sock)
	t.Setenv("FUSEVOL_SOCKET", sock)
	if r := volctl(t, "volume", "ls", "-q").ok(t); r.stdout != "kept\n" {
		t.Errorf("after a restart the daemon lists %q", r.stdout)
	}
	d.StopClean(t, 10*time.Second)
	if strings.Contains(d.Output(), "level=INFO") {
		t.Errorf("FUSEVOL_LOG_LEVEL=warn still logs info:\n%s", d.Output())
	}
}
