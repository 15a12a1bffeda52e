package reliability

import (
	"context"
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loadClient is one goroutine speaking Docker's protocol. It owns a private volume name nobody
// else touches, and shares a few names with every other client.
type loadClient struct {
	t      *testing.T
	d      *daemon
	id     int
	rng    *rand.Rand
	shared []string
	held   map[[2]string]int // (volume, mount ID) -> references this client holds
	errs   *errorLog
	ops    int
	okOps  map[string]int // successful requests per endpoint
}

func (c *loadClient) private() string { return fmt.Sprintf("priv-%d", c.id) }

func (c *loadClient) name() string {
	if c.rng.IntN(3) == 0 {
		return c.private()
	}
	return c.shared[c.rng.IntN(len(c.shared))]
}

// call sends one request; an error answer is accepted when it contains one of okErrs.
func (c *loadClient) call(ep string, body any, okErrs ...string) (dockerReply, bool) {
	c.ops++
	r, err := c.d.docker("VolumeDriver."+ep, body)
	if err != nil {
		c.errs.add("%s %v: %v", ep, body, err)
		return r, false
	}
	if r.Status == 200 {
		c.okOps[ep]++
		return r, true
	}
	for _, e := range okErrs {
		if strings.Contains(r.Err, e) {
			return r, false
		}
	}
	c.errs.add("%s %v: unexpected error %q", ep, body, r.Err)
	return r, false
}

func (c *loadClient) step() {
	name := c.name()
	switch op := c.rng.IntN(20); {
	case op < 3:
		c.call("Create", map[string]any{"Name": name, "Opts": nil})
	case op < 6:
		if _, ok := c.call("Remove", map[string]string{"Name": name}, "in use"); ok && name == c.private() {
			c.checkGone(name)
		}
	case op < 9:
		r, ok := c.call("List", "{}")
		for _, v := range r.Volumes {
			if ok && !strings.HasPrefix(v.Name, "priv-") && !slices.Contains(c.shared, v.Name) {
				c.errs.add("List shows %q, which no client created", v.Name)
			}
		}
	case op < 11:
		c.call("Get", map[string]string{"Name": name}, "not found")
	case op < 13:
		if r, ok := c.call("Path", map[string]string{"Name": name}, "not found"); ok && r.Mountpoint != filepath.Join(c.d.mountRoot(), name) {
			c.errs.add("Path %s: %q", name, r.Mountpoint)
		}
	case op < 17:
		// A few IDs per client, so the same ID often arrives twice.
		id := fmt.Sprintf("c%d-%d", c.id, c.rng.IntN(3))
		r, ok := c.call("Mount", map[string]string{"Name": name, "ID": id}, "not found")
		if !ok {
			return
		}
		c.held[[2]string{name, id}]++
		var st unix.Statfs_t
		if err := unix.Statfs(r.Mountpoint, &st); err != nil || st.Type != unix.FUSE_SUPER_MAGIC {
			c.errs.add("Mount %s returned %q, which is not a live FUSE mount (%v, type %#x)", name, r.Mountpoint, err, st.Type)
		}
	default:
		if len(c.held) == 0 {
			return
		}
		keys := slices.SortedFunc(maps.Keys(c.held), func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) })
		k := keys[c.rng.IntN(len(keys))]
		if _, ok := c.call("Unmount", map[string]string{"Name": k[0], "ID": k[1]}); ok {
			if c.held[k]--; c.held[k] == 0 {
				delete(c.held, k)
			}
		}
	}
}

// checkGone checks that a volume this client alone uses, just removed, is neither listed nor
// found.
func (c *loadClient) checkGone(name string) {
	r, ok := c.call("List", "{}")
	for _, v := range r.Volumes {
		if ok && v.Name == name {
			c.errs.add("List still shows %s after its Remove succeeded", name)
		}
	}
	if g, err := c.d.docker("VolumeDriver.Get", map[string]string{"Name": name}); err != nil || g.Status == 200 || !strings.Contains(g.Err, "not found") {
		c.errs.add("Get %s after its Remove succeeded: %d %q %v", name, g.Status, g.Err, err)
	}
}

type errorLog struct {
	mu   sync.Mutex
	msgs []string
	n    int
}

func (e *errorLog) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.msgs) < 20 {
		e.msgs = append(e.msgs, fmt.Sprintf(format, args...))
	}
}

// TestDockerProtocolUnderLoad runs many concurrent clients of Docker's volume protocol on
// overlapping names for a fixed time, then checks that the daemon's mount counts equal what the
// clients hold, that releasing every reference unmounts everything, and that removed volumes
// stay removed.
func TestDockerProtocolUnderLoad(t *testing.T) {
	fusetest.Require(t)
	d := newDaemon(t, fusetest.TempRoot(t, "fvrel-"))
	n, dur := pick(12, 32), pick(8*time.Second, 90*time.Second)
	shared := []string{"load-a", "load-b", "load-c"}
	errs := &errorLog{}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d clients for %v", seed, n, dur)
	clients := make([]*loadClient, n)
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := range clients {
		c := &loadClient{t: t, d: d, id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))), shared: shared,
			held: map[[2]string]int{}, errs: errs, okOps: map[string]int{}}
		clients[i] = c
		wg.Go(func() {
			for time.Now().Before(deadline) && c.ops < 100000 {
				c.step()
			}
		})
	}
	wg.Wait()
	ops, okOps := 0, map[string]int{}
	for _, c := range clients {
		ops += c.ops
		for ep, k := range c.okOps {
			okOps[ep] += k
		}
	}
	t.Logf("%d requests; successful ones: %v", ops, okOps)
	for _, ep := range []string{"Create", "Remove", "List", "Get", "Path", "Mount", "Unmount"} {
		if okOps[ep] == 0 {
			t.Errorf("no %s succeeded: the load did not exercise it", ep)
		}
	}
	if errs.n > 0 {
		t.Fatalf("%d protocol violations, first ones:\n%s", errs.n, strings.Join(errs.msgs, "\n"))
	}

	// What the clients hold, per volume and mount ID, against what the daemon counts.
	want := map[string]map[string]int{}
	for _, c := range clients {
		for k, refs := range c.held {
			if want[k[0]] == nil {
				want[k[0]] = map[string]int{}
			}
			want[k[0]][k[1]] += refs
		}
	}
	ctx := context.Background()
	vols, err := d.client.ListVolumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		got := v.MountIDs
		if got == nil {
			got = map[string]int{}
		}
		w := want[v.Name]
		if w == nil {
			w = map[string]int{}
		}
		if !maps.Equal(got, w) || v.Mounted != (len(w) > 0) {
			t.Errorf("volume %s: daemon counts %v (mounted %v), clients hold %v", v.Name, got, v.Mounted, w)
		}
		delete(want, v.Name)
	}
	if len(want) > 0 {
		t.Errorf("clients hold mounts of volumes that are not listed: %v", want)
	}
	for _, c := range clients {
		for k, refs := range c.held {
			for range refs {
				d.mustDocker("VolumeDriver.Unmount", map[string]string{"Name": k[0], "ID": k[1]})
			}
		}
	}
	if m := fusetest.MountsUnder(d.mountRoot()); len(m) != 0 {
		t.Errorf("mounts left after every reference was released: %v", m)
	}
	for _, v := range vols {
		d.mustDocker("VolumeDriver.Remove", map[string]string{"Name": v.Name})
		if r, err := d.docker("VolumeDriver.Get", map[string]string{"Name": v.Name}); err != nil || r.Status == 200 {
			t.Errorf("Get %s after Remove: %+v %v", v.Name, r, err)
		}
	}
	if r := d.mustDocker("VolumeDriver.List", "{}"); len(r.Volumes) != 0 {
		t.Errorf("volumes listed after removing every one: %s", r.raw)
	}
	if out, err := d.volctl("fsck"); err != nil {
		t.Errorf("fsck after the load: %v\n%s", err, out)
	}
	d.stop()
}
