package backend_test

// Crash consistency of the intent log: TestCrashIntentLog re-executes its test binary as a child
// that plays the fs on one file: random writes buffered in memory, fsyncs that log what was written
// since the last one (backend.View.LogWrites), chunk commits of newer data (CommitChunks, as at
// close or under memory pressure), commits of chunks holding only logged or stored data
// (CommitLoggedChunks, which leave the next fsync to the log alone) and truncations. The log is small, so segments fill, switch and
// are checkpointed while the child runs. Before each operation that changes what the store holds,
// the child writes the digest of the file's content after it to a side file; after an fsync it
// writes "ack". The parent SIGKILLs the child at a random moment, and in every other round also
// kills a second child inside Open, while it replays the log. The reopened store must be fsck clean
// and hold the content of the last acknowledged fsync or of an operation after it: every fsynced
// byte is there and no replay ever undid a newer commit.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

const (
	iChunk   = 64 << 10
	iMaxSize = 6 * iChunk
	iLogSize = 128 << 10
)

func iOptions() backend.Options {
	return backend.Options{GCInterval: -1, IntentLogSize: iLogSize}
}

func iDigest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:12])
}

// openIntentFile opens the store, creating the volume and its file when needed.
func openIntentFile(ctx context.Context, dir string) (*backend.Store, *backend.View, backend.Ino, error) {
	st, err := backend.Open(ctx, dir, iOptions())
	if err != nil {
		return nil, nil, 0, err
	}
	if _, err := st.GetVolume(ctx, "v"); errors.Is(err, backend.ErrNotFound) {
		o, err := backend.ParseVolumeOptions(map[string]string{"chunk-size": "64KiB"})
		if err == nil {
			_, err = st.CreateVolume(ctx, "v", o)
		}
		if err != nil {
			st.Close()
			return nil, nil, 0, err
		}
	}
	v, err := st.OpenVolume(ctx, "v")
	if err != nil {
		st.Close()
		return nil, nil, 0, err
	}
	a, err := v.Lookup(ctx, backend.RootIno, "f")
	if errors.Is(err, backend.ErrNotFound) {
		a, err = v.Mknod(ctx, backend.RootIno, "f", backend.NewNode{Mode: syscall.S_IFREG | 0o644})
		if err == nil {
			err = st.Sync(ctx)
		}
	}
	if err != nil {
		st.Close()
		return nil, nil, 0, err
	}
	return st, v, a.Ino, nil
}

func readIntentFile(ctx context.Context, v *backend.View, ino backend.Ino) ([]byte, error) {
	a, err := v.GetAttr(ctx, ino)
	if err != nil {
		return nil, err
	}
	b := make([]byte, a.Size)
	n, err := v.ReadAt(ctx, ino, b, 0)
	if err == nil && n != len(b) {
		err = fmt.Errorf("read %d of %d bytes", n, len(b))
	}
	return b, err
}

// intentChild is the child's fs: logical holds every write, durable what the store holds,
// pending the ranges written since the last fsync that no commit has covered.
type intentChild struct {
	ctx     context.Context
	st      *backend.Store
	v       *backend.View
	ino     backend.Ino
	side    *os.File
	r       *rand.Rand
	logical []byte
	durable []byte
	pending [][2]int // [off, end)
}

func (c *intentChild) note(line string) error {
	if _, err := c.side.WriteString(line + "\n"); err != nil {
		return err
	}
	return c.side.Sync()
}

func (c *intentChild) write() {
	off := c.r.IntN(iMaxSize)
	n := 1 + c.r.IntN(min(12<<10, iMaxSize-off))
	if end := off + n; end > len(c.logical) {
		c.logical = append(c.logical, make([]byte, end-len(c.logical))...)
	}
	for i := off; i < off+n; i++ {
		c.logical[i] = byte(c.r.Uint32())
	}
	c.pending = append(c.pending, [2]int{off, off + n})
}

func (c *intentChild) fsync(k int) error {
	if err := c.note(fmt.Sprintf("%d %s", k, iDigest(c.logical))); err != nil {
		return err
	}
	ws := make([]backend.Write, len(c.pending))
	for i, p := range c.pending {
		ws[i] = backend.Write{Off: uint64(p[0]), Data: c.logical[p[0]:p[1]]}
	}
	logged, err := c.v.LogWrites(c.ctx, c.ino, uint64(len(c.logical)), time.Now().UnixNano(), ws)
	if err != nil {
		return err
	}
	if !logged { // the log is full: commit instead, as the fs does
		if err := c.commit(c.touched()); err != nil {
			return err
		}
		if err := c.st.Sync(c.ctx); err != nil {
			return err
		}
	}
	c.pending, c.durable = nil, slices.Clone(c.logical)
	return c.note("ack")
}

// touched lists the chunks that pending ranges fall in.
func (c *intentChild) touched() []int {
	var idxs []int
	for _, p := range c.pending {
		for i := p[0] / iChunk; i <= (p[1]-1)/iChunk; i++ {
			if !slices.Contains(idxs, i) {
				idxs = append(idxs, i)
			}
		}
	}
	slices.Sort(idxs)
	return idxs
}

// commit stores the logical content of chunks idxs in one transaction.
func (c *intentChild) commit(idxs []int) error {
	if len(idxs) == 0 {
		return nil
	}
	var chunks []backend.Chunk
	end := len(c.durable)
	for _, i := range idxs {
		lo, hi := i*iChunk, min((i+1)*iChunk, len(c.logical))
		chunks = append(chunks, c.v.PrepareChunk(uint64(i), c.logical[lo:hi]))
		end = max(end, hi)
	}
	next := slices.Clone(c.durable)
	if end > len(next) {
		next = append(next, make([]byte, end-len(next))...)
	}
	for _, i := range idxs {
		lo, hi := i*iChunk, min((i+1)*iChunk, len(c.logical))
		copy(next[lo:hi], c.logical[lo:hi])
	}
	if err := c.note(fmt.Sprintf("0 %s", iDigest(next))); err != nil {
		return err
	}
	if _, err := c.v.CommitChunks(c.ctx, c.ino, chunks, uint64(end)); err != nil {
		return err
	}
	c.durable = next
	c.dropPending(idxs)
	return nil
}

// commitLogged commits, as CommitLoggedChunks, a chunk that no pending range falls in: every byte
// of it is in the log or the store already (as when the fs commits buffers of a file whose writes
// an fsync logged), so it changes no candidate, and the next fsync must not need a store sync for it.
func (c *intentChild) commitLogged() error {
	if len(c.durable) == 0 {
		return nil
	}
	i := c.r.IntN((len(c.durable) + iChunk - 1) / iChunk)
	if slices.Contains(c.touched(), i) {
		return nil
	}
	lo, hi := i*iChunk, min((i+1)*iChunk, len(c.durable))
	_, err := c.v.CommitLoggedChunks(c.ctx, c.ino, []backend.Chunk{c.v.PrepareChunk(uint64(i), c.logical[lo:hi])}, uint64(len(c.durable)))
	return err
}

// dropPending removes the parts of pending ranges inside chunks idxs (committed: not re-logged).
func (c *intentChild) dropPending(idxs []int) {
	var out [][2]int
	for _, p := range c.pending {
		for i := p[0] / iChunk; i <= (p[1]-1)/iChunk; i++ {
			lo, hi := max(p[0], i*iChunk), min(p[1], (i+1)*iChunk)
			if !slices.Contains(idxs, i) {
				out = append(out, [2]int{lo, hi})
			}
		}
	}
	c.pending = out
}

func (c *intentChild) truncate() error {
	if err := c.commit(c.touched()); err != nil { // the fs flushes before a truncation
		return err
	}
	size := c.r.IntN(iMaxSize)
	next := slices.Clone(c.logical)
	if size <= len(next) {
		next = next[:size]
	} else {
		next = append(next, make([]byte, size-len(next))...)
	}
	if err := c.note(fmt.Sprintf("0 %s", iDigest(next))); err != nil {
		return err
	}
	if _, err := c.v.SetAttr(c.ctx, c.ino, backend.SetAttr{Valid: backend.SetSize, Size: uint64(size)}); err != nil {
		return err
	}
	c.logical, c.durable, c.pending = next, slices.Clone(next), nil
	return nil
}

func runIntentChild(dir, side string, seed uint64, openOnly bool) error {
	ctx := context.Background()
	st, v, ino, err := openIntentFile(ctx, dir)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	if openOnly {
		time.Sleep(time.Hour)
	}
	data, err := readIntentFile(ctx, v, ino)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(side, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c := &intentChild{ctx: ctx, st: st, v: v, ino: ino, side: f, r: rand.New(rand.NewPCG(seed, 7)),
		logical: data, durable: slices.Clone(data)}
	for k := 1; ; k++ {
		switch p := c.r.IntN(100); {
		case p < 55:
			c.write()
		case p < 85:
			err = c.fsync(k)
		case p < 91:
			if idxs := c.touched(); len(idxs) > 0 {
				err = c.commit(idxs[:1+c.r.IntN(len(idxs))])
			}
		case p < 96:
			err = c.commitLogged()
		default:
			err = c.truncate()
		}
		if err != nil {
			return fmt.Errorf("op %d: %w", k, err)
		}
	}
}

// intentCandidates returns the digests the store may hold after the child was killed: the state
// of the last acknowledged fsync (start when there was none) and every state noted after it.
func intentCandidates(t *testing.T, side, start string) []string {
	b, err := os.ReadFile(side)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	cands := []string{start}
	var last string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && f[0] == "ack":
			cands = []string{last}
		case len(f) == 2:
			last = f[1]
			cands = append(cands, last)
		}
	}
	return cands
}

func TestCrashIntentLog(t *testing.T) {
	if dir := os.Getenv("FUSEVOL_ILOG_DIR"); dir != "" {
		seed, _ := strconv.ParseUint(os.Getenv("FUSEVOL_ILOG_SEED"), 10, 64)
		err := runIntentChild(dir, os.Getenv("FUSEVOL_ILOG_SIDE"), seed, os.Getenv("FUSEVOL_ILOG_OPEN") != "")
		fmt.Fprintln(os.Stderr, "intent log child failed:", err)
		os.Exit(3)
	}
	rounds := envInt("FUSEVOL_CRASH_ROUNDS", 16)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	timing := rand.New(rand.NewPCG(seed, 1))
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "store")
	ctx := context.Background()
	start := iDigest(nil)
	acks := 0
	for round := range rounds {
		side := filepath.Join(tmp, fmt.Sprintf("side-%d", round))
		env := []string{"FUSEVOL_ILOG_DIR=" + dir, "FUSEVOL_ILOG_SIDE=" + side,
			"FUSEVOL_ILOG_SEED=" + strconv.FormatUint(seed+uint64(round), 10)}
		killChild(t, "TestCrashIntentLog", env, round, false, time.Duration(20+timing.IntN(200))*time.Millisecond)
		if round%2 == 1 { // kill a second child while it replays the log
			killChild(t, "TestCrashIntentLog", append(env, "FUSEVOL_ILOG_OPEN=1"), round, true,
				time.Duration(timing.IntN(40))*time.Millisecond)
		}
		cands := intentCandidates(t, side, start)
		st, v, ino, err := openIntentFile(ctx, dir)
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		rep, err := st.Fsck(ctx, false)
		if err != nil || !rep.Clean() {
			t.Fatalf("round %d: fsck: %v %v", round, err, rep)
		}
		data, err := readIntentFile(ctx, v, ino)
		if err != nil {
			t.Fatalf("round %d: read: %v", round, err)
		}
		st.Close()
		got := iDigest(data)
		if !slices.Contains(cands, got) {
			t.Fatalf("round %d (seed %d): the file (%d bytes, %s) is in none of the states since the last fsync: %v",
				round, seed, len(data), got, cands)
		}
		b, _ := os.ReadFile(side)
		acks += strings.Count(string(b), "ack\n")
		start = got
	}
	t.Logf("%d rounds, %d acknowledged fsyncs checked", rounds, acks)
	if acks == 0 {
		t.Fatal("no fsync was acknowledged: the test tested nothing")
	}
}
