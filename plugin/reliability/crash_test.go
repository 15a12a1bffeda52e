package reliability

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writer is a helper process writing durably into a mount; acks receives "name sum" for every
// file it acknowledged.
type writer struct {
	cmd  *exec.Cmd
	acks chan [2]string
	done chan struct{}
	errs []string // its ERR lines: how it stopped
}

func startWriter(t *testing.T, dir string, start, count int, seed uint64) *writer {
	t.Helper()
	_, helper := binaries(t)
	cmd := exec.Command(helper, dir)
	cmd.Env = append(os.Environ(), helperEnv+"=writer", fmt.Sprintf("FV_START=%d", start),
		fmt.Sprintf("FV_COUNT=%d", count), fmt.Sprintf("FV_SEED=%d", seed))
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start writer: %v", err)
	}
	w := &writer{cmd: cmd, acks: make(chan [2]string, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "ACK":
				w.acks <- [2]string{f[1], f[2]}
			case len(f) > 0 && f[0] == "ERR":
				w.errs = append(w.errs, sc.Text())
			}
		}
		cmd.Wait()
	}()
	return w
}

// TestCrashLoop kills the daemon with SIGKILL at random moments while another process writes
// durably through a Docker mount, and checks after every restart that every acknowledged file
// survived with its checksum, that the dead mount was cleaned and that fsck is clean.
func TestCrashLoop(t *testing.T) {
	needRoot(t)
	rounds := pick(10, 60)
	root := tempRoot(t)
	d := newDaemon(t, root)
	const vol = "crash"
	d.mustDocker("VolumeDriver.Create", map[string]any{"Name": vol, "Opts": map[string]string{"chunk-size": "64KiB"}})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	acked := map[string]string{}
	next := 0
	for round := range rounds {
		id := fmt.Sprintf("round-%d", round)
		mp := d.mustDocker("VolumeDriver.Mount", map[string]string{"Name": vol, "ID": id}).Mountpoint
		if want := filepath.Join(d.mountRoot(), vol); mp != want {
			t.Fatalf("round %d: mounted at %q, want %q", round, mp, want)
		}
		verifyAcked(t, mp, acked, round)
		if round > 0 {
			if out, err := d.volctl("fsck"); err != nil {
				t.Fatalf("fsck after crash %d: %v\n%s", round, err, out)
			}
		}

		w := startWriter(t, mp, next, 5000, seed+uint64(round))
		minAcks := 2 + rng.IntN(6)
		got := collectAcks(t, w, acked, minAcks)
		next += 5000
		// A random moment: somewhere inside the writer's next few files.
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		d.kill()
		select {
		case <-w.done:
		case <-time.After(60 * time.Second):
			w.cmd.Process.Kill()
			t.Fatalf("round %d: writer still running 60s after the daemon was killed", round)
		}
		got += drainAcks(w, acked)
		t.Logf("round %d: %d files acknowledged (%d in all); writer stopped with %v", round, got, len(acked), w.errs)

		if !isMountPoint(mp) {
			t.Fatalf("round %d: the killed daemon's mount is not in the mount table", round)
		}
		if _, err := os.ReadDir(mp); !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("round %d: listing the dead mount: %v, want ENOTCONN", round, err)
		}
		d.start()
		if m := mountsUnder(d.mountRoot()); len(m) != 0 {
			t.Fatalf("round %d: stale mounts left after restart: %v", round, m)
		}
		// dockerd would now unmount the dead container's ID: the new daemon never saw it.
		d.mustDocker("VolumeDriver.Unmount", map[string]string{"Name": vol, "ID": id})
	}
	mp := d.mustDocker("VolumeDriver.Mount", map[string]string{"Name": vol, "ID": "final"}).Mountpoint
	verifyAcked(t, mp, acked, rounds)
	if len(acked) < 2*rounds {
		t.Fatalf("only %d files acknowledged over %d rounds", len(acked), rounds)
	}
	d.mustDocker("VolumeDriver.Unmount", map[string]string{"Name": vol, "ID": "final"})
	if m := mountsUnder(d.mountRoot()); len(m) != 0 {
		t.Fatalf("mounts left after the last unmount: %v", m)
	}
	out := d.mustVolctl("fsck")
	t.Logf("final fsck: %s", out)
	d.stop()
}

// collectAcks waits until the writer acknowledged n files (adding them to acked) and returns n.
func collectAcks(t *testing.T, w *writer, acked map[string]string, n int) int {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for i := 0; i < n; i++ {
		select {
		case a := <-w.acks:
			acked[a[0]] = a[1]
		case <-w.done:
			t.Fatalf("writer stopped after %d files before the daemon was killed: %v", i+drainAcks(w, acked), w.errs)
		case <-timeout:
			t.Fatalf("writer acknowledged only %d files in 2 minutes", i)
		}
	}
	return n
}

// drainAcks adds the acknowledgements already received; the writer has stopped.
func drainAcks(w *writer, acked map[string]string) int {
	n := 0
	for {
		select {
		case a := <-w.acks:
			acked[a[0]] = a[1]
			n++
		default:
			return n
		}
	}
}

// verifyAcked reads every acknowledged file through the mount and checks its checksum.
func verifyAcked(t *testing.T, mp string, acked map[string]string, round int) {
	t.Helper()
	for name, want := range acked {
		data, err := os.ReadFile(filepath.Join(mp, name))
		if err != nil {
			t.Fatalf("after crash %d: acknowledged file %s: %v", round, name, err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("after crash %d: acknowledged file %s has checksum %s, want %s (%d bytes)", round, name, got, want, len(data))
		}
	}
}

// isMountPoint reports whether dir is a mount point in this mount namespace.
func isMountPoint(dir string) bool {
	for _, m := range mountsUnder(filepath.Dir(dir)) {
		if m == dir {
			return true
		}
	}
	return false
}
