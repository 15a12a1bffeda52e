package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs"
	"github.com/fusevol/fusevol/fs/mountinfo"
)

// fakeMounter is a mount table in memory: mounting adds an entry, unmounting removes the topmost
// one on the directory, and no FUSE is involved.
type fakeMounter struct {
	mu        sync.Mutex
	table     mountinfo.Table
	dead      map[string]bool // statfs answers ENOTCONN: the server is gone
	busy      map[string]bool // a plain unmount answers EBUSY
	failMount error           // returned by Mount
	fuse      int             // FUSE mounts made
	detaches  []string        // lazy unmounts, in order
	atime     fs.Atime        // the live mount's, set by the latest volctl mount
}

type fakeMount struct {
	f   *fakeMounter
	dir string
}

func (m *fakeMount) Dir() string                  { return m.dir }
func (m *fakeMount) SetAtime(a fs.Atime)          { m.f.atime = a }
func (m *fakeMount) Flush(context.Context) error  { return nil }
func (m *fakeMount) Freeze(context.Context) error { return nil }
func (m *fakeMount) Unmount(ctx context.Context) error {
	// Like fs.Mounted, a mount already gone (unmounted behind the daemon's back) is no error.
	if err := m.f.Unmount(m.dir, false); !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

func (f *fakeMounter) Mount(ctx context.Context, dir string, view *backend.View, log *slog.Logger) (fsMount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failMount != nil {
		return nil, f.failMount
	}
	f.fuse++
	f.table = append(f.table, mountinfo.Entry{Dir: dir, FSType: "fuse.fusevol"})
	return &fakeMount{f: f, dir: dir}, nil
}

func (f *fakeMounter) Bind(src, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.table.Find(src)
	if !ok {
		return fmt.Errorf("bind %s: %w", src, syscall.ENOENT)
	}
	f.table = append(f.table, mountinfo.Entry{Dir: dir, FSType: e.FSType})
	return nil
}

func (f *fakeMounter) Unmount(dir string, detach bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.table) - 1; i >= 0; i-- {
		if f.table[i].Dir != dir {
			continue
		}
		if f.busy[dir] && !detach {
			return syscall.EBUSY
		}
		if detach {
			f.detaches = append(f.detaches, dir)
		}
		f.table = slices.Delete(f.table, i, i+1)
		return nil
	}
	return syscall.EINVAL
}

func (f *fakeMounter) Mounts() (mountinfo.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.table), nil
}

func (f *fakeMounter) Statfs(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead[dir] {
		return syscall.ENOTCONN
	}
	return nil
}

// mounted lists the fake's table as "dir fstype" lines.
func (f *fakeMounter) mounted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []string{}
	for _, e := range f.table {
		out = append(out, e.Dir+" "+e.FSType)
	}
	return out
}

// TestMountTable drives the mount bookkeeping through a fake mounter: Docker references, volctl
// bind and snapshot mounts, and recovery from stale mounts. Each case runs steps against a
// fresh table whose root is R; "v" is a volume with a snapshot "s1".
func TestMountTable(t *testing.T) {
	type env struct {
		tb   *mountTable
		fake *fakeMounter
		st   *backend.Store
		root string
	}
	type step struct {
		do      func(ctx context.Context, e env) error
		wantErr string // "" = success
	}
	ref := func(id string) step {
		return step{do: func(ctx context.Context, e env) error { _, err := e.tb.addRef(ctx, e.st, "v", id); return err }}
	}
	unref := func(id string) step {
		return step{do: func(ctx context.Context, e env) error { return e.tb.dropRef(ctx, "v", id) }}
	}
	mountAt := func(snap, dir, wantErr string) step {
		return step{do: func(ctx context.Context, e env) error {
			return e.tb.mountAt(ctx, e.st, "v", snap, dir, "")
		}, wantErr: wantErr}
	}
	unmountAt := func(dir, wantErr string) step {
		return step{do: func(ctx context.Context, e env) error { return e.tb.unmountAt(ctx, dir) }, wantErr: wantErr}
	}
	do := func(fn func(e env) error) step {
		return step{do: func(_ context.Context, e env) error { return fn(e) }}
	}
	// umount is `umount DIR` run by someone else: the kernel's, unseen by the table.
	umount := func(dir string) step {
		return step{do: func(_ context.Context, e env) error { return e.fake.Unmount(dir, false) }}
	}
	listIs := func(dirs ...string) step {
		return step{do: func(ctx context.Context, e env) error {
			var got []string
			for _, m := range e.tb.list(ctx) {
				got = append(got, m.Dir)
			}
			if !slices.Equal(got, dirs) {
				return fmt.Errorf("list = %q, want %q", got, dirs)
			}
			return nil
		}}
	}
	cases := []struct {
		name  string
		setup func(f *fakeMounter, root string) // stale mounts left by an earlier daemon
		steps []step
		// what is left: the mount table ("dir fstype", R for the root), the Docker references
		// of v, and the FUSE mounts made
		mounts []string
		refs   map[string]int
		fuse   int
	}{
		{
			name:   "references of two IDs share one mount; the last unmounts",
			steps:  []step{ref("a"), ref("b"), unref("a")},
			mounts: []string{"R/v fuse.fusevol"}, refs: map[string]int{"b": 1}, fuse: 1,
		},
		{
			name:  "references of two IDs, both dropped",
			steps: []step{ref("a"), ref("b"), unref("b"), unref("a")},
			fuse:  1,
		},
		{
			name:   "the same ID twice counts twice",
			steps:  []step{ref("a"), ref("a"), unref("a")},
			mounts: []string{"R/v fuse.fusevol"}, refs: map[string]int{"a": 1}, fuse: 1,
		},
		{
			name:  "unmount of an unknown ID is a no-op",
			steps: []step{unref("nope")},
		},
		{
			name:   "unmount of an unknown ID leaves other references",
			steps:  []step{ref("a"), unref("nope")},
			mounts: []string{"R/v fuse.fusevol"}, refs: map[string]int{"a": 1}, fuse: 1,
		},
		{
			name:  "a failed mount changes no count",
			steps: []step{do(func(e env) error { e.fake.failMount = errors.New("no fuse"); return nil }), {do: ref("a").do, wantErr: "no fuse"}},
		},
		{
			name: "double volctl mount on one directory",
			steps: []step{
				mountAt("", "/ctl/d", ""),
				mountAt("", "/ctl/d", "already a volctl mount"),
				mountAt("s1", "/ctl/d", "already a volctl mount"),
			},
			mounts: []string{"R/v fuse.fusevol", "/ctl/d fuse.fusevol"}, fuse: 1,
		},
		{
			name: "the latest volctl mount sets the live mount's atime mode",
			steps: []step{ref("a"), do(func(e env) error {
				for _, m := range []struct {
					dir, atime string
					want       fs.Atime
				}{{"/ctl/d", "strictatime", fs.AtimeStrict}, {"/ctl/e", "", fs.AtimeStrict}, {"/ctl/f", "noatime", fs.AtimeNever}} {
					if err := e.tb.mountAt(context.Background(), e.st, "v", "", m.dir, m.atime); err != nil {
						return err
					}
					if e.fake.atime != m.want {
						return fmt.Errorf("after a mount on %s with atime %q, the live mount's atime is %v, want %v", m.dir, m.atime, e.fake.atime, m.want)
					}
				}
				return nil
			})},
			mounts: []string{"R/v fuse.fusevol", "/ctl/d fuse.fusevol", "/ctl/e fuse.fusevol", "/ctl/f fuse.fusevol"}, refs: map[string]int{"a": 1}, fuse: 1,
		},
		{
			name: "volctl bind and Docker share the live mount",
			steps: []step{
				ref("a"), mountAt("", "/ctl/d", ""), unref("a"),
				do(func(e env) error {
					if got := e.tb.list(context.Background()); len(got) != 1 || got[0].Dir != "/ctl/d" || got[0].Volume != "v" {
						return fmt.Errorf("list = %+v", got)
					}
					return nil
				}),
				unmountAt("/ctl/d", ""),
				unmountAt("/ctl/d", errNotVolctlMount.Error()),
			},
			fuse: 1,
		},
		{
			name:   "snapshot mount is a FUSE mount of its own",
			steps:  []step{mountAt("s1", "/ctl/s", ""), ref("a")},
			mounts: []string{"/ctl/s fuse.fusevol", "R/v fuse.fusevol"}, refs: map[string]int{"a": 1}, fuse: 2,
		},
		{
			name:  "snapshot mount unmounted",
			steps: []step{mountAt("s1", "/ctl/s", ""), unmountAt("/ctl/s", "")},
			fuse:  1,
		},
		{
			name: "a busy bind mount is detached lazily",
			steps: []step{
				mountAt("", "/ctl/d", ""),
				do(func(e env) error { e.fake.busy["/ctl/d"] = true; return nil }),
				unmountAt("/ctl/d", ""),
				do(func(e env) error {
					if !slices.Equal(e.fake.detaches, []string{"/ctl/d"}) {
						return fmt.Errorf("detached %q, want the bind mount", e.fake.detaches)
					}
					return nil
				}),
			},
			fuse: 1,
		},
		{
			name: "removal drops every mount",
			steps: []step{
				ref("a"), mountAt("", "/ctl/d", ""), mountAt("s1", "/ctl/s", ""),
				do(func(e env) error {
					v := e.tb.lock("v")
					defer e.tb.unlock("v", v)
					if !v.inUse() {
						return errors.New("volume not in use")
					}
					return e.tb.dropAll(context.Background(), "v", v)
				}),
			},
			fuse: 2,
		},
		{
			name: "stale mounts under the root are detached at start, deepest first",
			setup: func(f *fakeMounter, root string) {
				f.table = append(f.table,
					mountinfo.Entry{Dir: root, FSType: "tmpfs"}, // the root itself stays
					mountinfo.Entry{Dir: root + "/v", FSType: "fuse.fusevol"},
					mountinfo.Entry{Dir: root + "/v/inner", FSType: "tmpfs"},
					mountinfo.Entry{Dir: "/elsewhere", FSType: "fuse.fusevol"})
				f.dead[root+"/v"] = true
			},
			steps: []step{do(func(e env) error {
				e.tb.cleanStale(nil)
				if want := []string{e.root + "/v/inner", e.root + "/v"}; !slices.Equal(e.fake.detaches, want) {
					return fmt.Errorf("detached %q, want %q", e.fake.detaches, want)
				}
				return nil
			})},
			mounts: []string{"R tmpfs", "/elsewhere fuse.fusevol"},
		},
		{
			name: "a stale mount on the live mount directory is detached before mounting",
			setup: func(f *fakeMounter, root string) {
				f.table = append(f.table, mountinfo.Entry{Dir: root + "/v", FSType: "tmpfs"})
			},
			steps:  []step{ref("a")},
			mounts: []string{"R/v fuse.fusevol"}, refs: map[string]int{"a": 1}, fuse: 1,
		},
		{
			name:   "a bind mount removed behind the daemon's back: the directory can be mounted again",
			steps:  []step{mountAt("", "/ctl/d", ""), umount("/ctl/d"), mountAt("", "/ctl/d", "")},
			mounts: []string{"R/v fuse.fusevol", "/ctl/d fuse.fusevol"}, fuse: 2, // the live mount was released in between
		},
		{
			name:  "a bind mount removed behind the daemon's back: list forgets it and releases the live mount",
			steps: []step{mountAt("", "/ctl/d", ""), mountAt("", "/ctl/e", ""), umount("/ctl/d"), listIs("/ctl/e"), umount("/ctl/e"), listIs()},
			fuse:  1,
		},
		{
			name:   "a bind mount removed behind the daemon's back keeps Docker's reference",
			steps:  []step{ref("a"), mountAt("", "/ctl/d", ""), umount("/ctl/d"), listIs()},
			mounts: []string{"R/v fuse.fusevol"}, refs: map[string]int{"a": 1}, fuse: 1,
		},
		{
			name:   "a snapshot mount removed behind the daemon's back: unmount says it is none, mount works",
			steps:  []step{mountAt("s1", "/ctl/s", ""), umount("/ctl/s"), unmountAt("/ctl/s", errNotVolctlMount.Error()), mountAt("s1", "/ctl/s", "")},
			mounts: []string{"/ctl/s fuse.fusevol"}, fuse: 2,
		},
		{
			name: "something else stacked on a bind mount does not hide it",
			steps: []step{mountAt("", "/ctl/d", ""), do(func(e env) error {
				e.fake.table = append(e.fake.table, mountinfo.Entry{Dir: "/ctl/d", FSType: "tmpfs"})
				return nil
			}), listIs("/ctl/d")},
			mounts: []string{"R/v fuse.fusevol", "/ctl/d fuse.fusevol", "/ctl/d tmpfs"}, fuse: 1,
		},
		{
			name: "volctl unmount of a dead mount of an earlier daemon detaches it",
			setup: func(f *fakeMounter, root string) {
				f.table = append(f.table,
					mountinfo.Entry{Dir: "/ctl/dead", FSType: "fuse.fusevol"},
					mountinfo.Entry{Dir: "/ctl/alive", FSType: "fuse.fusevol"},
					mountinfo.Entry{Dir: "/ctl/other", FSType: "tmpfs"})
				f.dead["/ctl/dead"], f.dead["/ctl/other"] = true, true
			},
			steps: []step{
				unmountAt("/ctl/dead", ""),
				unmountAt("/ctl/alive", errNotVolctlMount.Error()),
				unmountAt("/ctl/other", errNotVolctlMount.Error()),
				unmountAt("/ctl/never", errNotVolctlMount.Error()),
			},
			mounts: []string{"/ctl/alive fuse.fusevol", "/ctl/other tmpfs"},
		},
	}
	ctx := context.Background()
	st, err := backend.Open(ctx, "", backend.Options{InMemory: true, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	vo, err := backend.ParseVolumeOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVolume(ctx, "v", vo); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSnapshot(ctx, "v", "s1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "mounts")
			fake := &fakeMounter{dead: map[string]bool{}, busy: map[string]bool{}}
			if tc.setup != nil {
				tc.setup(fake, root)
			}
			e := env{tb: newMountTable(root, fake, slog.New(slog.DiscardHandler)), fake: fake, st: st, root: root}
			for i, s := range tc.steps {
				err := s.do(ctx, e)
				switch {
				case s.wantErr == "" && err != nil:
					t.Fatalf("step %d: %v", i, err)
				case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
					t.Fatalf("step %d: error %v, want one saying %q", i, err, s.wantErr)
				}
			}
			got := fake.mounted()
			for i := range got {
				got[i] = strings.Replace(got[i], root, "R", 1)
			}
			want := tc.mounts
			if want == nil {
				want = []string{}
			}
			if !slices.Equal(got, want) {
				t.Errorf("mount table = %q, want %q", got, want)
			}
			r := e.tb.report("v")
			if fmt.Sprint(r.refs) != fmt.Sprint(tc.refs) {
				t.Errorf("references = %v, want %v", r.refs, tc.refs)
			}
			if r.mounted != slices.Contains(want, "R/v fuse.fusevol") {
				t.Errorf("mounted = %v with mount table %q", r.mounted, got)
			}
			if fake.fuse != tc.fuse {
				t.Errorf("%d FUSE mounts made, want %d", fake.fuse, tc.fuse)
			}
			// A volume that nothing holds leaves no state behind.
			if e.tb.liveMounts() == 0 && len(r.refs) == 0 && len(e.tb.list(context.Background())) == 0 {
				if n := len(e.tb.names()); n != 0 {
					t.Errorf("state kept for %d volume(s) with nothing mounted", n)
				}
			}
		})
	}
}
