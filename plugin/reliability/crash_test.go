package reliability

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// writer is a helper process writing durably into a mount. Its output is applied to a
// crashState as it arrives.
type writer struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once its output is consumed and it exited
	errs []string      // its ERR lines: how it stopped
}

// crashState is what the writers acknowledged, shared with the goroutine taking snapshots.
type crashState struct {
	mu      sync.Mutex
	acked   map[string]string // name -> checksum: must exist with these bytes
	limbo   map[string]string // deletion started, not acknowledged: absent or intact
	deleted map[string]bool   // deletion acknowledged: must not exist
	round   int               // files acknowledged by the current writer
}

func (s *crashState) apply(f []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(f) == 3 && f[0] == "ACK":
		s.acked[f[1]] = f[2]
		s.round++
	case len(f) == 2 && f[0] == "DELETING":
		s.limbo[f[1]] = s.acked[f[1]]
		delete(s.acked, f[1])
	case len(f) == 2 && f[0] == "DEL":
		delete(s.limbo, f[1])
		s.deleted[f[1]] = true
	}
}

// durable returns the acknowledged files that are never deleted.
func (s *crashState) durable() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for name, sum := range s.acked {
		var i int
		if fmt.Sscanf(name, "f%d", &i); !ephemeral(i) {
			out[name] = sum
		}
	}
	return out
}

func startWriter(t *testing.T, dir string, start, count int, seed uint64, st *crashState) *writer {
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
	st.mu.Lock()
	st.round = 0
	st.mu.Unlock()
	w := &writer{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 0 && f[0] == "ERR" {
				w.errs = append(w.errs, sc.Text())
			}
			st.apply(f)
		}
		cmd.Wait()
	}()
	return w
}

// waitAcks waits until the current writer acknowledged n files.
func waitAcks(t *testing.T, w *writer, st *crashState, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st.mu.Lock()
		got := st.round
		st.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-w.done:
			t.Fatalf("writer stopped after %d files before the daemon was killed: %v", got, w.errs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer acknowledged only %d files in 2 minutes", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// snapshotRecord is a snapshot the daemon acknowledged, with the files it must hold.
type snapshotRecord struct {
	name   string
	expect map[string]string
}

// chaos takes snapshots and runs gc through the control API while the writer runs, until stop
// is closed. Failures before the daemon is killed are test errors.
func chaos(t *testing.T, d *daemon, vol string, round int, rng *rand.Rand, st *crashState, stop <-chan struct{}, killing *atomic.Bool, gcs *atomic.Int64) []snapshotRecord {
	var snaps []snapshotRecord
	ctx := context.Background()
	for k := 0; k < 4; k++ {
		select {
		case <-stop:
			return snaps
		case <-time.After(time.Duration(20+rng.IntN(150)) * time.Millisecond):
		}
		if k%2 == 1 {
			_, err := d.client.GC(ctx)
			if err != nil && !killing.Load() {
				t.Errorf("round %d: gc: %v", round, err)
			}
			if err == nil {
				gcs.Add(1)
			}
			continue
		}
		rec := snapshotRecord{name: fmt.Sprintf("r%d-%d", round, k), expect: st.durable()}
		if _, err := d.client.CreateSnapshot(ctx, vol, rec.name); err != nil {
			if !killing.Load() {
				t.Errorf("round %d: snapshot %s: %v", round, rec.name, err)
			}
			continue
		}
		snaps = append(snaps, rec)
	}
	return snaps
}

// TestCrashLoop kills the daemon with SIGKILL at random moments while another process writes
// and deletes durably through a Docker mount and snapshots and gc run through the control API.
// After every restart the dead mount must be gone, every acknowledged file must read back with
// its checksum, every acknowledged deletion must hold, every acknowledged snapshot must hold the
// files acknowledged before it was asked for, and fsck must be clean.
func TestCrashLoop(t *testing.T) {
	fusetest.Require(t)
	rounds := pick(10, 60)
	root := fusetest.TempRoot(t, "fvrel-")
	d := newDaemon(t, root)
	const vol = "crash"
	d.mustDocker("VolumeDriver.Create", map[string]any{"Name": vol, "Opts": map[string]string{"chunk-size": "64KiB"}})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	st := &crashState{acked: map[string]string{}, limbo: map[string]string{}, deleted: map[string]bool{}}
	var pending, allSnaps []snapshotRecord
	var gcs atomic.Int64
	for round := range rounds {
		id := fmt.Sprintf("round-%d", round)
		mp := d.mustDocker("VolumeDriver.Mount", map[string]string{"Name": vol, "ID": id}).Mountpoint
		if want := filepath.Join(d.mountRoot(), vol); mp != want {
			t.Fatalf("round %d: mounted at %q, want %q", round, mp, want)
		}
		verifyState(t, mp, st, round)
		for _, s := range pending {
			verifyFiles(t, filepath.Join(mp, ".snapshots", s.name), s.expect, "snapshot "+s.name, round)
		}
		if round > 0 {
			if out, err := d.volctl("fsck"); err != nil {
				t.Fatalf("fsck after crash %d: %v\n%s", round, err, out)
			}
		}

		w := startWriter(t, mp, round*100000, 100000, seed+uint64(round), st)
		var killing atomic.Bool
		stop, chaosDone := make(chan struct{}), make(chan []snapshotRecord, 1)
		crng := rand.New(rand.NewPCG(seed, uint64(round)+2))
		go func() { chaosDone <- chaos(t, d, vol, round, crng, st, stop, &killing, &gcs) }()
		waitAcks(t, w, st, 2+rng.IntN(6))
		// A random moment: somewhere inside the writer's next few files.
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		killing.Store(true)
		d.kill()
		close(stop)
		pending = <-chaosDone
		allSnaps = append(allSnaps, pending...)
		select {
		case <-w.done:
		case <-time.After(60 * time.Second):
			w.cmd.Process.Kill()
			t.Fatalf("round %d: writer still running 60s after the daemon was killed", round)
		}
		st.mu.Lock()
		t.Logf("round %d: %d files acknowledged (%d live, %d deleted), %d snapshots; writer stopped with %v",
			round, st.round, len(st.acked), len(st.deleted), len(pending), w.errs)
		st.mu.Unlock()

		if !fusetest.IsMountPoint(t, mp) {
			t.Fatalf("round %d: the killed daemon's mount is not in the mount table", round)
		}
		if _, err := os.ReadDir(mp); !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("round %d: listing the dead mount: %v, want ENOTCONN", round, err)
		}
		d.start()
		if m := fusetest.MountsUnder(d.mountRoot()); len(m) != 0 {
			t.Fatalf("round %d: stale mounts left after restart: %v", round, m)
		}
		// dockerd would now unmount the dead container's ID: the new daemon never saw it.
		d.mustDocker("VolumeDriver.Unmount", map[string]string{"Name": vol, "ID": id})
	}
	mp := d.mustDocker("VolumeDriver.Mount", map[string]string{"Name": vol, "ID": "final"}).Mountpoint
	verifyState(t, mp, st, rounds)
	for _, s := range pending {
		verifyFiles(t, filepath.Join(mp, ".snapshots", s.name), s.expect, "snapshot "+s.name, rounds)
	}
	if len(st.acked) < 2*rounds {
		t.Fatalf("only %d files acknowledged over %d rounds", len(st.acked), rounds)
	}
	snaps, err := d.client.ListSnapshots(context.Background(), vol)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range snaps {
		have[s.Name] = true
	}
	for _, s := range allSnaps {
		if !have[s.name] {
			t.Errorf("acknowledged snapshot %s is gone", s.name)
		}
	}
	if len(allSnaps) == 0 {
		t.Errorf("no snapshot was acknowledged in %d rounds", rounds)
	}
	d.mustDocker("VolumeDriver.Unmount", map[string]string{"Name": vol, "ID": "final"})
	if m := fusetest.MountsUnder(d.mountRoot()); len(m) != 0 {
		t.Fatalf("mounts left after the last unmount: %v", m)
	}
	out := d.mustVolctl("fsck")
	t.Logf("%d snapshots and %d gc runs acknowledged; final fsck: %s", len(allSnaps), gcs.Load(), out)
	d.stop()
}

// verifyState checks acknowledged files, deletions and files whose deletion was under way.
func verifyState(t *testing.T, mp string, st *crashState, round int) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	verifyFiles(t, mp, st.acked, "acknowledged file", round)
	for name := range st.deleted {
		if _, err := os.Lstat(filepath.Join(mp, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("after crash %d: %s, whose deletion was acknowledged: %v", round, name, err)
		}
	}
	for name, want := range st.limbo {
		data, err := os.ReadFile(filepath.Join(mp, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		sum := sha256.Sum256(data)
		if err != nil || hex.EncodeToString(sum[:]) != want {
			t.Fatalf("after crash %d: %s, deleted while the daemon died, is neither gone nor intact: %v", round, name, err)
		}
	}
}

// verifyFiles reads every file of want under dir and checks its checksum.
func verifyFiles(t *testing.T, dir string, want map[string]string, what string, round int) {
	t.Helper()
	for name, sum := range want {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("after crash %d: %s %s: %v", round, what, name, err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != sum {
			t.Fatalf("after crash %d: %s %s has checksum %x, want %s (%d bytes)", round, what, name, got, sum, len(data))
		}
	}
}
