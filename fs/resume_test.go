package fs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
)

// The cross-process test of live restart: each server of the mount is a child process (this
// test binary under resumeChild), and the test itself keeps the connection's descriptor and
// state between them, as the daemon's fd keeper does.

const resumeChild = "FUSEVOL_RESUME_CHILD"

// resumeSpec tells a child what to serve. The control socket is fd 3; a resumed connection's
// descriptor is fd 4.
type resumeSpec struct {
	Store string       `json:"store"`
	Dir   string       `json:"dir"`
	State *ResumeState `json:"state,omitempty"` // nil: a fresh mount
}

// runResumeChild serves the volume "vol" of the store until SIGTERM (Freeze, then exit: a
// planned handover), SIGUSR1 (unmount) or SIGKILL. Every ResumeState goes to fd 3 with the
// connection's descriptor.
func runResumeChild(spec string) error {
	var rs resumeSpec
	if err := json.Unmarshal([]byte(spec), &rs); err != nil {
		return err
	}
	ctl := os.NewFile(3, "control")
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := backend.Open(ctx, rs.Store, backend.Options{Logger: log, GCInterval: -1,
		KeepOrphans: func(string) bool { return rs.State != nil }})
	if err != nil {
		return err
	}
	view, err := st.OpenVolume(ctx, "vol")
	if err != nil {
		return err
	}
	opts := Options{Logger: log, Restartable: true, Persist: func(s ResumeState, dev *os.File) {
		if err := sendState(ctl, s, dev); err != nil {
			log.Error("send state", "err", err)
		}
	}}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1)
	var m *Mounted
	if rs.State == nil {
		m, err = Mount(ctx, rs.Dir, view, opts)
	} else {
		m, err = Resume(ctx, rs.Dir, os.NewFile(4, "/dev/fuse"), *rs.State, view, opts)
	}
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if <-sigs == syscall.SIGTERM {
		if err := m.Freeze(sctx); err != nil {
			return err
		}
	} else if err := m.Unmount(sctx); err != nil {
		return err
	}
	return st.Close()
}

func sendState(ctl *os.File, s ResumeState, dev *os.File) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return unix.Sendmsg(int(ctl.Fd()), b, unix.UnixRights(int(dev.Fd())), nil, 0)
}

// resumeKeeper holds what the latest child sent: the connection's descriptor and its state.
type resumeKeeper struct {
	mu    sync.Mutex
	dev   *os.File
	state *ResumeState
}

func (k *resumeKeeper) receive(t *testing.T, sock *os.File) {
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil || n == 0 {
			return
		}
		var s ResumeState
		if err := json.Unmarshal(buf[:n], &s); err != nil {
			t.Errorf("child sent bad state: %v", err)
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&msgs[0])
		k.mu.Lock()
		if k.dev != nil {
			k.dev.Close()
		}
		k.dev, k.state = os.NewFile(uintptr(fds[0]), "/dev/fuse"), &s
		k.mu.Unlock()
	}
}

// start runs a child serving the mount: a fresh one the first time, then resuming.
func (k *resumeKeeper) start(t *testing.T, store, dir string) *fusetest.Process {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(sp[0]), "keeper"), os.NewFile(uintptr(sp[1]), "child")
	defer theirs.Close()
	k.mu.Lock()
	spec := resumeSpec{Store: store, Dir: dir, State: k.state}
	files := []*os.File{theirs}
	if k.dev != nil {
		files = append(files, k.dev)
	}
	k.state = nil
	k.mu.Unlock()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), resumeChild+"="+string(b))
	cmd.ExtraFiles = files
	p := fusetest.StartProcess(t, cmd, filepath.Join(t.TempDir(), "child.log"))
	go func() {
		k.receive(t, mine)
		mine.Close()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k.mu.Lock()
		ok := k.state != nil
		k.mu.Unlock()
		if ok {
			return p
		}
		if !p.Alive() || time.Now().After(deadline) {
			t.Fatalf("child did not serve the mount:\n%s", p.LogTail())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestResumeAcrossProcesses: files kept open and a workload that writes, fsyncs, reads back,
// stats, lists and renames, running while the serving process is replaced again and again by a
// SIGTERM (planned handover) or a kill -9 (crash) and a new process. The workload must see no
// error across planned handovers, and across crashes only the EIO that tells a file open for
// writing that what it wrote since its last fsync may be lost (once per crash); every byte an
// fsync acknowledged reads back, a directory listing continues, a flock stays held, and the
// store is clean after. The workload is a process of its own: a process with files open on the
// mount cannot start another while the mount has no server (exec closes the inherited
// descriptors, and each close waits for the server to answer its FLUSH).
func TestResumeAcrossProcesses(t *testing.T) {
	fusetest.Require(t)
	store, dir := t.TempDir(), t.TempDir()
	ctx := context.Background()
	st, err := backend.Open(ctx, store, backend.Options{Logger: testLogger(t), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVolume(ctx, "vol", backendOpts(64<<10)); err != nil {
		t.Fatal(err)
	}
	st.Close()

	k := &resumeKeeper{}
	p := k.start(t, store, dir)
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	w := startWorkload(t, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	const rounds = 12
	crashes := 0
	for i := range rounds {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		crash := i%2 == 1
		if crash {
			crashes++
			p.Kill()
			w.tell(t, "crash")
		} else if !p.Stop(syscall.SIGTERM, 20*time.Second) {
			t.Fatalf("round %d: child did not stop on SIGTERM:\n%s", i, p.LogTail())
		}
		start := time.Now()
		p = k.start(t, store, dir)
		t.Logf("round %d (crash=%v): new server after %v", i, crash, time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(200 * time.Millisecond)
	rep := w.finish(t)
	t.Logf("%d workload rounds across %d restarts (%d crashes); %d fsyncs reported a crash's loss", rep.Ops, rounds, crashes, rep.EIO)
	for _, e := range rep.Problems {
		t.Errorf("workload: %s", e)
	}
	if crashes > 0 && rep.EIO == 0 {
		t.Errorf("%d EIOs for %d crashes", rep.EIO, crashes)
	}
	if rep.Ops < rounds {
		t.Errorf("workload did only %d rounds", rep.Ops)
	}
	if !p.Stop(syscall.SIGUSR1, 30*time.Second) {
		t.Fatalf("last child did not unmount:\n%s", p.LogTail())
	}
	st, err = backend.Open(ctx, store, backend.Options{Logger: testLogger(t), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fr, err := st.Fsck(ctx, false)
	if err != nil || !fr.Clean() {
		t.Fatalf("fsck after the restarts: %v %+v", err, fr)
	}
}

const resumeWorkloadEnv = "FUSEVOL_RESUME_WORKLOAD"

// workloadReport is what the workload process prints when its input ends.
type workloadReport struct {
	Ops      int      `json:"ops"`
	EIO      int      `json:"eio"`
	Problems []string `json:"problems"`
}

type workloadProc struct {
	in  io.WriteCloser
	out *bufio.Reader
}

func startWorkload(t *testing.T, dir string) *workloadProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), resumeWorkloadEnv+"="+dir)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	w := &workloadProc{in: in, out: bufio.NewReader(out)}
	if line, err := w.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("workload did not start: %q %v", line, err)
	}
	return w
}

func (w *workloadProc) tell(t *testing.T, cmd string) {
	if _, err := fmt.Fprintln(w.in, cmd); err != nil {
		t.Fatalf("workload: %v", err)
	}
}

func (w *workloadProc) finish(t *testing.T) workloadReport {
	t.Helper()
	w.in.Close()
	var rep workloadReport
	if err := json.NewDecoder(w.out).Decode(&rep); err != nil {
		t.Fatalf("workload report: %v", err)
	}
	return rep
}

// runResumeWorkload is the workload process: set up, say "ready", work until stdin ends
// ("crash" lines say a server was killed), then verify and print the report.
func runResumeWorkload(dir string) error {
	w, err := newResumeWorkload(dir)
	if err != nil {
		return err
	}
	l, err := openListing(dir, 1000)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	stop := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "crash" {
				w.crashed(true)
			}
		}
		close(stop)
	}()
	w.run(stop)
	w.verify()
	w.errs = append(w.errs, l.finish()...)
	return json.NewEncoder(os.Stdout).Encode(workloadReport{Ops: w.ops, EIO: w.eio, Problems: w.errs})
}

// resumeWorkload works on the mount while its servers come and go.
type resumeWorkload struct {
	dir string
	f   *os.File // opened once, flocked, used across every restart

	mu      sync.Mutex
	errs    []string       // errors the restarts must not cause
	eio     int            // fsyncs and closes that reported a crash's loss
	crashes int            // servers killed so far
	fSeen   int            // crashes f's fsyncs have reported
	acked   map[int64]byte // block -> value an fsync acknowledged
	pending map[int64]byte // written since the last successful fsync
	ops     int
}

const resumeBlock = 4096

func newResumeWorkload(dir string) (*resumeWorkload, error) {
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	return &resumeWorkload{dir: dir, f: f, acked: map[int64]byte{}, pending: map[int64]byte{}}, nil
}

func (w *resumeWorkload) crashed(crash bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if crash {
		w.crashes++
	}
}

func (w *resumeWorkload) fail(op string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, fmt.Sprintf("op %d %s: %v", w.ops, op, err))
}

func (w *resumeWorkload) run(stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		w.mu.Lock()
		w.ops++
		w.mu.Unlock()
		w.writeSync(int64(i%64), byte(i))
		if _, err := os.Stat(filepath.Join(w.dir, "data")); err != nil {
			w.fail("stat", err)
		}
		if i%8 == 0 {
			w.renameOver(i)
		}
	}
}

// writeSync writes a block, fsyncs and reads it back. An fsync that reports a crash's loss is
// answered as a database would: everything since the last good fsync is written again.
func (w *resumeWorkload) writeSync(blk int64, v byte) {
	buf := bytes.Repeat([]byte{v}, resumeBlock)
	if _, err := w.f.WriteAt(buf, blk*resumeBlock); err != nil {
		w.fail("write", err)
		return
	}
	w.pending[blk] = v
	err := w.f.Sync()
	w.mu.Lock()
	switch {
	case err == nil:
		for b, v := range w.pending {
			w.acked[b] = v
		}
		clear(w.pending)
	case errors.Is(err, syscall.EIO) && w.crashes > w.fSeen:
		w.fSeen = w.crashes
		w.eio++
		for b, v := range w.pending {
			if _, err := w.f.WriteAt(bytes.Repeat([]byte{v}, resumeBlock), b*resumeBlock); err != nil {
				w.errs = append(w.errs, fmt.Sprintf("rewrite after EIO: %v", err))
			}
		}
	default:
		w.errs = append(w.errs, fmt.Sprintf("op %d fsync: %v", w.ops, err))
	}
	w.mu.Unlock()
	got := make([]byte, resumeBlock)
	if _, err := w.f.ReadAt(got, blk*resumeBlock); err != nil {
		w.fail("read", err)
	} else if !bytes.Equal(got, buf) {
		w.fail("read", fmt.Errorf("block %d: read %d, wrote %d", blk, got[0], v))
	}
}

func (w *resumeWorkload) renameOver(i int) {
	tmp := filepath.Join(w.dir, fmt.Sprintf("tmp-%d", i))
	w.mu.Lock()
	before := w.crashes
	w.mu.Unlock()
	err := os.WriteFile(tmp, []byte(tmp), 0o644)
	w.mu.Lock()
	if errors.Is(err, syscall.EIO) && w.crashes > before {
		// The close met a crash's loss: written again, as the EIO asks.
		w.eio++
		w.mu.Unlock()
		err = os.WriteFile(tmp, []byte(tmp), 0o644)
	} else {
		w.mu.Unlock()
	}
	if err != nil {
		w.fail("create", err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, fmt.Sprintf("r-%d", i%4))); err != nil {
		w.fail("rename", err)
	}
	if _, err := os.ReadDir(w.dir); err != nil {
		w.fail("readdir", err)
	}
}

// verify checks the flock and every acknowledged block, adding what is wrong to errs.
func (w *resumeWorkload) verify() {
	if err := w.f.Sync(); err != nil && !errors.Is(err, syscall.EIO) {
		w.fail("last fsync", err)
	} else if err == nil {
		for b, v := range w.pending {
			w.acked[b] = v
		}
	}
	other, err := os.Open(filepath.Join(w.dir, "data"))
	if err != nil {
		w.fail("open", err)
		return
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		w.fail("flock taken before the restarts, tried from another open", fmt.Errorf("got %v, want EWOULDBLOCK", err))
	}
	got := make([]byte, resumeBlock)
	for b, v := range w.acked {
		if _, err := other.ReadAt(got, b*resumeBlock); err != nil {
			w.fail("read back", err)
		} else if !bytes.Equal(got, bytes.Repeat([]byte{v}, resumeBlock)) {
			w.fail("read back", fmt.Errorf("block %d: %d after the restarts, fsync acknowledged %d", b, got[0], v))
		}
	}
}

// listing is a directory being read when the restarts begin.
type listing struct {
	d     *os.File
	n     int
	first []string
}

func openListing(dir string, n int) (*listing, error) {
	sub := filepath.Join(dir, "list")
	if err := os.Mkdir(sub, 0o755); err != nil {
		return nil, err
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("an-entry-with-a-long-name-%04d", i)), nil, 0o644); err != nil {
			return nil, err
		}
	}
	d, err := os.Open(sub)
	if err != nil {
		return nil, err
	}
	first, err := d.Readdirnames(10)
	if err != nil {
		return nil, err
	}
	return &listing{d: d, n: n, first: first}, nil
}

// finish reads the rest of the listing and says what is wrong with the whole.
func (l *listing) finish() []string {
	rest, err := l.d.Readdirnames(-1)
	if err != nil {
		return []string{fmt.Sprintf("listing continued across the restarts: %v", err)}
	}
	var bad []string
	seen := map[string]bool{}
	for _, n := range append(l.first, rest...) {
		if seen[n] {
			bad = append(bad, "listing: "+n+" twice")
		}
		seen[n] = true
	}
	if len(seen) != l.n {
		bad = append(bad, fmt.Sprintf("listing across the restarts: %d names, want %d", len(seen), l.n))
	}
	return bad
}
