package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
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

	pprofSock := filepath.Join(dir, "debug", "pprof.sock")
	d := fusetest.StartProcess(t, exec.Command(bin, "daemon", "--root", root, "--socket", sock,
		"--mount-root", filepath.Join(dir, "mnt"), "--log-format", "json", "--log-level", "debug",
		"--cache-size", "32MiB", "--write-buffer", "16M", "--debug-addr", pprofSock),
		filepath.Join(dir, "first.log"))
	d.WaitReady(t, sock)
	volctl(t, "--socket", sock, "volume", "create", "kept").ok(t)
	resp, err := fusetest.UnixHTTP(pprofSock).Get("http://localhost/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("--debug-addr %s: %v", pprofSock, err)
	}
	dump, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(dump), "plugin.(*Daemon).Run") {
		t.Errorf("goroutine profile (%v) lists no daemon goroutine:\n%s", err, dump)
	}
	d.StopClean(t, 10*time.Second)
	if want := `"cache_size":33554432,"write_buffer":16777216`; !strings.Contains(d.Output(), want) {
		t.Errorf("the daemon's start-up line does not show %s:\n%s", want, d.Output())
	}
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

// Bad --cache-size, --write-buffer and --debug-addr values stop the daemon before it opens
// anything, with a message naming the flag or address.
func TestDaemonRefusedOptions(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--cache-size", "lots"}, 2, []string{`--cache-size "lots"`, "a byte count such as"}},
		{[]string{"--cache-size", "1MiB"}, 2, []string{`--cache-size "1MiB"`, "below the minimum of 4 MiB"}},
		{[]string{"--cache-size", "-5M"}, 2, []string{`--cache-size "-5M"`}},
		{[]string{"--write-buffer", "4MiB"}, 2, []string{`--write-buffer "4MiB"`, "below the minimum of 8 MiB"}},
		{[]string{"--write-buffer", "0"}, 2, []string{`--write-buffer "0"`, "below the minimum"}},
		{[]string{"--debug-addr", "0.0.0.0:6060"}, 1, []string{"0.0.0.0 is not a loopback address"}},
		{[]string{"--debug-addr", ":6060"}, 1, []string{"every interface"}},
		{[]string{"--debug-addr", "192.0.2.1:6060"}, 1, []string{"192.0.2.1 is not a loopback address"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "="), func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"daemon", "--root", filepath.Join(dir, "root"), "--socket", filepath.Join(dir, "s.sock")}, tt.args...)
			volctl(t, args...).fails(t, tt.code, tt.want...)
			if _, err := os.Stat(filepath.Join(dir, "s.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused daemon created its socket: %v", err)
			}
		})
	}
}
