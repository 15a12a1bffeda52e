package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the terminal side of a new pseudo-terminal (and closes both sides at the end).
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	// Drain what volctl writes to the terminal so it never blocks on a full buffer.
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := ptmx.Read(buf); err != nil {
				return
			}
		}
	}()
	return pts
}

// Long operations show progress on stderr when stdout is a terminal, and nothing otherwise.
func TestProgressOnlyOnTerminal(t *testing.T) {
	td := startDaemon(t)
	td.run(t, "volume", "create", "v").ok(t)
	td.run(t, "snapshot", "create", "v", "s").ok(t)
	tty := openPTY(t)
	for _, args := range [][]string{{"gc"}, {"fsck"}, {"snapshot", "restore", "v", "s"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			if r := td.run(t, args...).ok(t); r.stderr != "" {
				t.Errorf("stdout is not a terminal, yet stderr got %q", r.stderr)
			}
			var stderr bytes.Buffer
			code := Main(context.Background(), append([]string{"volctl", "--socket", td.socket}, args...), tty, &stderr)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			got := stderr.String()
			if !strings.HasPrefix(got, "\r") || !strings.Contains(got, "0s") || !strings.HasSuffix(got, "\r\033[K") {
				t.Errorf("on a terminal, stderr got %q; want a spinner line, cleared at the end", got)
			}
		})
	}
}
