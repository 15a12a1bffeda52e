package fs

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeMount is a mount as its WriteBudget sees it: it holds the bytes it acquired until a kick
// commits them (releases them all), unless it is stuck (its buffers are still being filled, or
// its commits are slow), when a kick frees nothing.
type fakeMount struct {
	s     *budgetShare
	stuck atomic.Bool

	mu   sync.Mutex
	held int64
}

const fakeUnit = 256 << 10

func newFakeMount(b *WriteBudget, stuck bool) *fakeMount {
	m := &fakeMount{}
	m.stuck.Store(stuck)
	m.s = b.share(fakeUnit, m.kick)
	return m
}

func (m *fakeMount) kick() {
	if m.stuck.Load() {
		return
	}
	m.mu.Lock()
	n := m.held
	m.held = 0
	m.mu.Unlock()
	if n > 0 {
		m.s.release(n)
	}
}

// take acquires units buffers one after the other.
func (m *fakeMount) take(units int) {
	for range units {
		m.s.acquire(fakeUnit)
		m.mu.Lock()
		m.held += fakeUnit
		m.mu.Unlock()
	}
}

// hammer keeps acquiring until stop is closed, as a busy writer does.
func (m *fakeMount) hammer(stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				m.take(1)
			}
		}
	}()
}

// used reads the share's bytes and whether a writer of it waits.
func (m *fakeMount) used() (used int64, waiting bool) {
	m.s.b.mu.Lock()
	defer m.s.b.mu.Unlock()
	return m.s.used, m.s.waiting > 0
}

// takeWithin runs take(units) and reports whether it returned within d.
func (m *fakeMount) takeWithin(units int, d time.Duration) (done <-chan struct{}, ok bool) {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		m.take(units)
	}()
	select {
	case <-ch:
		return ch, true
	case <-time.After(d):
		return ch, false
	}
}

// waitBlocked waits until a writer of m sleeps in acquire (deterministic: waiting is counted
// under the budget's lock before it sleeps).
func (m *fakeMount) waitBlocked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, w := m.used(); w {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer never blocked")
		}
		time.Sleep(time.Millisecond)
	}
}

// A mount writing as hard as it can cannot starve another: whatever the hog holds, a second
// mount gets its floor at once, and its equal share of the budget as soon as the hog's buffers
// can be committed, whether the hog sits on them or keeps writing.
func TestWriteBudgetFairness(t *testing.T) {
	const limitUnits = 32
	tests := []struct {
		name    string
		hogs    int  // mounts that first fill the whole budget
		stuck   bool // the hogs' kicks commit nothing
		writers int  // goroutines per hog that keep acquiring after that
		want    int  // buffers the victim must get (and hold at once)
	}{
		{"floor while a stuck hog holds everything", 1, true, 0, 2},
		{"equal share from an idle hog", 1, false, 0, limitUnits / 2},
		{"equal share from a hog that keeps writing", 1, false, 4, limitUnits / 2},
		{"a third next to two hogs that keep writing", 2, false, 3, limitUnits / 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewWriteBudget(limitUnits * fakeUnit)
			var hogs []*fakeMount
			for range tt.hogs {
				h := newFakeMount(b, tt.stuck)
				h.take(limitUnits / tt.hogs)
				hogs = append(hogs, h)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, h := range hogs {
				for range tt.writers {
					h.hammer(stop, &wg)
				}
			}
			// The victim keeps what it takes (its buffers are being filled), so it must get
			// its share at once, not one buffer at a time.
			victim := newFakeMount(b, true)
			_, ok := victim.takeWithin(tt.want, 10*time.Second)
			close(stop)
			wg.Wait()
			if !ok {
				used, _ := victim.used()
				t.Fatalf("the victim got %d of %d buffers in 10 s next to %d hog(s)", used/fakeUnit, tt.want, tt.hogs)
			}
			if used, _ := victim.used(); used != int64(tt.want)*fakeUnit {
				t.Fatalf("victim holds %d bytes, want %d", used, tt.want*fakeUnit)
			}
			b.mu.Lock()
			total, floors := b.used, int64(len(b.shares))*2*fakeUnit
			b.mu.Unlock()
			if total > b.limit+floors {
				t.Errorf("budget holds %d bytes, over its limit %d plus the floors %d", total, b.limit, floors)
			}
			if tt.stuck {
				// Beyond its floor the victim waits for the hog's commits, and gets them.
				done, ok := victim.takeWithin(1, 50*time.Millisecond)
				if ok {
					t.Fatal("the victim went past its floor while the budget was full")
				}
				victim.waitBlocked(t)
				for _, h := range hogs {
					h.stuck.Store(false)
					h.kick()
				}
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("the victim stayed blocked after the hog's buffers were committed")
				}
			}
		})
	}
}

// A mount alone may use the whole budget (sharing must not waste it), and it gets it back when
// the other mount's writers go.
func TestWriteBudgetAloneTakesAll(t *testing.T) {
	b := NewWriteBudget(16 * fakeUnit)
	a, other := newFakeMount(b, true), newFakeMount(b, true)
	if _, ok := a.takeWithin(16, 10*time.Second); !ok {
		t.Fatal("a mount alone could not fill the budget")
	}
	a.stuck.Store(false)
	a.kick()
	if _, ok := other.takeWithin(8, 10*time.Second); !ok {
		t.Fatal("second mount did not get its half")
	}
	a.stuck.Store(true)
	if _, ok := a.takeWithin(8, 10*time.Second); !ok {
		t.Fatal("first mount did not get its half back")
	}
	other.stuck.Store(false)
	other.kick()
	if _, ok := a.takeWithin(8, 10*time.Second); !ok {
		t.Fatal("the first mount could not take the whole budget again once the other released it")
	}
}

// A hog stops at its equal share while another mount holds buffers, even with the budget not
// full, so that mount can grow to its share at once instead of waiting for the hog's commits.
func TestWriteBudgetLeavesRoom(t *testing.T) {
	const limitUnits = 32
	b := NewWriteBudget(limitUnits * fakeUnit)
	victim, hog := newFakeMount(b, true), newFakeMount(b, true)
	victim.take(1) // filling a buffer: active, not waiting
	done, ok := hog.takeWithin(limitUnits, 50*time.Millisecond)
	if ok {
		t.Fatal("the hog took the whole budget next to an active mount")
	}
	hog.waitBlocked(t)
	if used, _ := hog.used(); used != limitUnits/2*fakeUnit {
		t.Errorf("the hog holds %d buffers, want its half (%d)", used/fakeUnit, limitUnits/2)
	}
	if _, ok := victim.takeWithin(limitUnits/2-1, 10*time.Second); !ok {
		t.Fatal("the victim had to wait for the hog's commits to reach its half")
	}
	hog.stuck.Store(false)
	victim.stuck.Store(false)
	victim.kick()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the hog stayed blocked once it was alone")
	}
}
