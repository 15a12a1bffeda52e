package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
	"github.com/fusevol/fusevol/plugin/fdkeeper"
)

// Live restart (Config.LiveRestart): every live volume mount's FUSE connection is kept by the
// fd keeper (plugin/fdkeeper), a process of its own, with what a successor needs to serve it
// again: the volume, the mount directory, its Docker references and volctl binds, and
// fs.ResumeState. A daemon that stops (SIGTERM) freezes those mounts instead of unmounting
// them; a daemon that starts resumes what the keeper holds before it cleans stale mounts. A
// daemon that crashed left the same behind, less what it had not fsynced.

// keptMount is what the keeper holds of one live mount, besides its connection.
type keptMount struct {
	Volume string         `json:"volume"`
	Dir    string         `json:"dir"`
	Refs   map[string]int `json:"refs,omitempty"`
	Binds  []string       `json:"binds,omitempty"`
	State  fs.ResumeState `json:"state"`
}

// keptMounts mirrors the daemon's live mounts in the keeper. A nil *keptMounts (live restart
// off) does nothing.
type keptMounts struct {
	cl  *fdkeeper.Client
	log *slog.Logger

	mu   sync.Mutex
	recs map[string]*keptMount // by mount directory
	devs map[string]*os.File
}

// keeperSocket is where the keeper listens, beside the store.
func keeperSocket(root string) string { return filepath.Join(root, "keeper.sock") }

func newKeptMounts(log *slog.Logger) *keptMounts {
	return &keptMounts{log: log, recs: map[string]*keptMount{}, devs: map[string]*os.File{}}
}

// connect connects to the keeper of root, starting one (exe fd-keeper) if none answers.
func (k *keptMounts) connect(ctx context.Context, root, exe string) error {
	sock := keeperSocket(root)
	cl, err := fdkeeper.Dial(sock)
	if err != nil {
		cmd := exec.Command(exe, "fd-keeper", "--socket", sock)
		// A session of its own: a signal to the daemon's process group does not reach it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the fd keeper: %w", err)
		}
		go func() { _ = cmd.Wait() }()
		for cl == nil {
			if cl, err = fdkeeper.Dial(sock); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the fd keeper did not answer: %w", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
		k.log.Info("fd keeper started", "socket", sock, "pid", cmd.Process.Pid)
	}
	k.mu.Lock()
	k.cl = cl
	k.mu.Unlock()
	return nil
}

// held lists the mounts a predecessor left with the keeper. Bad records are dropped.
func (k *keptMounts) held() ([]keptMount, []*os.File, error) {
	es, err := k.cl.List()
	if err != nil {
		return nil, nil, err
	}
	var recs []keptMount
	var devs []*os.File
	for _, e := range es {
		var r keptMount
		if err := json.Unmarshal(e.Data, &r); err != nil || r.Dir != e.Key || r.Volume == "" {
			k.log.Warn("fd keeper: unreadable record dropped", "key", e.Key, "err", err)
			e.FD.Close()
			_ = k.cl.Del(e.Key)
			continue
		}
		recs, devs = append(recs, r), append(devs, e.FD)
	}
	return recs, devs, nil
}

// state records a mount's state and connection (fs.Options.Persist).
func (k *keptMounts) state(dir, volume string, st fs.ResumeState, dev *os.File) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cl == nil {
		return
	}
	r := k.recs[dir]
	if r == nil {
		r = &keptMount{Volume: volume, Dir: dir}
		k.recs[dir] = r
	}
	r.State, k.devs[dir] = st, dev
	k.putLocked(dir)
}

// sync records who holds the live mount on dir now, or forgets it once it is unmounted.
func (k *keptMounts) sync(dir string, mounted bool, refs map[string]int, binds map[string]bool) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.recs[dir]
	switch {
	case r == nil:
	case !mounted:
		delete(k.recs, dir)
		delete(k.devs, dir)
		if err := k.cl.Del(dir); err != nil {
			k.log.Warn("fd keeper: forget", "dir", dir, "err", err)
		}
	case !maps.Equal(r.Refs, refs) || !slices.Equal(r.Binds, slices.Sorted(maps.Keys(binds))):
		r.Refs = maps.Clone(refs)
		r.Binds = slices.Sorted(maps.Keys(binds))
		k.putLocked(dir)
	}
}

func (k *keptMounts) putLocked(dir string) {
	if err := k.cl.Put(dir, k.recs[dir], k.devs[dir]); err != nil {
		k.log.Error("fd keeper: mount not kept; a restart will lose it", "dir", dir, "err", err)
	}
}

func (k *keptMounts) close() {
	if k != nil && k.cl != nil {
		k.cl.Close()
	}
}

// resumer is the mounter's side of a resume (sysMounter; the tests' fake has none).
type resumer interface {
	resume(ctx context.Context, r keptMount, dev *os.File, view *backend.View, log *slog.Logger) (fsMount, error)
}

// resumeAll serves again the live mounts a predecessor left with the keeper, with their
// references. One that cannot be served is detached, so its users get errors, not a hang.
func (t *mountTable) resumeAll(ctx context.Context, st *backend.Store, recs []keptMount, devs []*os.File) {
	rs, _ := t.sys.(resumer)
	for i, r := range recs {
		start := time.Now()
		if err := t.resumeOne(ctx, rs, st, r, devs[i]); err != nil {
			t.log.Error("live mount not resumed; detached", "volume", r.Volume, "dir", r.Dir, "err", err)
			_ = t.sys.Unmount(r.Dir, true)
			_ = t.keep.cl.Del(r.Dir)
			continue
		}
		t.log.Info("live mount resumed", "volume", r.Volume, "dir", r.Dir, "refs", len(r.Refs), "binds", len(r.Binds),
			"after_crash", !r.State.Frozen, "took", time.Since(start).Round(time.Microsecond))
	}
}

func (t *mountTable) resumeOne(ctx context.Context, rs resumer, st *backend.Store, r keptMount, dev *os.File) error {
	if rs == nil || r.Dir != t.dir(r.Volume) {
		dev.Close()
		return errors.New("not a live mount of this daemon")
	}
	view, err := st.OpenVolume(ctx, r.Volume)
	if err != nil {
		dev.Close()
		return err
	}
	v := t.lock(r.Volume)
	defer t.unlock(r.Volume, v)
	m, err := rs.resume(ctx, r, dev, view, t.log.With("volume", r.Volume))
	if err != nil {
		return err
	}
	t.update(func() {
		v.mnt = m
		maps.Copy(v.refs, r.Refs)
		for _, b := range r.Binds {
			v.binds[b] = true
			t.dirs[b] = r.Volume
		}
	})
	return nil
}

// freezeAll hands every live mount over to a successor (Config.LiveRestart's shutdown): each is
// frozen, with its buffered writes committed, and stays mounted; snapshot mounts are unmounted
// as without live restart.
func (t *mountTable) freezeAll(ctx context.Context) {
	all := t.flushForShutdown(ctx)
	for _, h := range all {
		for dir, s := range h.v.snaps {
			t.unmountWithin(ctx, dir, s.mnt)
		}
		if m := h.v.mnt; m != nil {
			if err := m.Freeze(ctx); err != nil {
				t.log.Error("live mount not frozen: its successor will treat it as after a crash", "dir", m.Dir(), "err", err)
			} else {
				t.log.Info("live mount handed over", "dir", m.Dir())
			}
		}
		// The locks stay held: nothing may change the mounts before the process exits.
	}
}
