package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	"github.com/fusevol/fusevol/backend"
)

// quotaSource reports a volume's quota and usage (quota.go: the estimate; dirs.go: statfs).
// QuotaLimit is the quota alone, cheap enough to ask on every write: it changes while the
// volume is mounted (volctl volume set -o size=...).
type quotaSource interface {
	Quota(ctx context.Context) (limit int64, used backend.Usage, err error)
	QuotaLimit() int64
}

var _ quotaSource = (*backend.View)(nil)

// quotaEstimate tracks a volume's usage between store queries so that a write that would
// exceed the quota fails with ENOSPC at write time, not later at commit.
//
// The write-back owns it (newWriteback builds it, writeback.write reserves): the write-back
// is its only reserver, and the one thing that makes a stale estimate exact again is
// committing the write-back's own buffers, so reserve, flush and refresh stay in one place
// instead of going from the write-back up into fsys and back down. fsys only invalidates
// it, after changes that allocate outside the write-back (fallocate).
type quotaEstimate struct {
	ctx   context.Context // the mount's
	src   quotaSource
	flush func(context.Context) error // commits every buffered write, so usage is exact
	// awaitReclaims, when set, waits a little for deleted files whose last close is still on
	// its way (the kernel sends RELEASE after close returns) and reports whether any were left.
	awaitReclaims func(context.Context) bool

	mu    sync.Mutex
	known bool
	limit int64
	used  int64 // store usage at the last refresh plus bytes reserved since
}

func newQuotaEstimate(ctx context.Context, src quotaSource, flush func(context.Context) error) *quotaEstimate {
	return &quotaEstimate{ctx: ctx, src: src, flush: flush}
}

func (q *quotaEstimate) invalidate() {
	q.mu.Lock()
	q.known = false
	q.mu.Unlock()
}

// reserve accounts for need more bytes of file data and returns how many fit under the quota.
func (q *quotaEstimate) reserve(need int64) (int64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.known {
		if err := q.refresh(); err != nil {
			return 0, err
		}
	}
	// A new quota applies to the next write; the usage estimate stays what it was.
	q.limit = q.src.QuotaLimit()
	if q.limit <= 0 || q.used+need <= q.limit {
		q.used += need
		return need, nil
	}
	// The estimate may be stale (deleted files): commit what is buffered and ask the store.
	q.mu.Unlock()
	err := q.flush(q.ctx)
	q.mu.Lock()
	if err != nil {
		return 0, err
	}
	if err := q.refresh(); err != nil {
		return 0, err
	}
	if q.used+need > q.limit && q.awaitReclaims != nil {
		q.mu.Unlock()
		waited := q.awaitReclaims(q.ctx)
		q.mu.Lock()
		if waited {
			if err := q.refresh(); err != nil {
				return 0, err
			}
		}
	}
	avail := min(need, q.limit-q.used)
	if avail <= 0 {
		return 0, fmt.Errorf("volume quota of %d bytes reached: %w", q.limit, syscall.ENOSPC)
	}
	q.used += avail
	return avail, nil
}

// refresh asks the store (under q.mu).
func (q *quotaEstimate) refresh() error {
	limit, used, err := q.src.Quota(q.ctx)
	if err != nil {
		return err
	}
	q.known, q.limit, q.used = true, limit, used.Bytes
	return nil
}
