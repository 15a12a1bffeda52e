package fs

import (
	"fmt"
	"sync"
	"syscall"
)

// quotaEstimate tracks a volume's usage between store queries so that a write that would
// exceed the quota fails with ENOSPC at write time, not later at commit.
type quotaEstimate struct {
	mu    sync.Mutex
	known bool
	limit int64
	used  int64 // store usage at the last refresh plus bytes reserved since
}

func (q *quotaEstimate) invalidate() {
	q.mu.Lock()
	q.known = false
	q.mu.Unlock()
}

// reserve accounts for need more bytes of file data and returns how many fit under the quota.
func (f *fsys) reserve(need int64) (int64, error) {
	q := &f.quota
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.known {
		if err := f.refreshQuota(); err != nil {
			return 0, err
		}
	}
	if q.limit <= 0 || q.used+need <= q.limit {
		q.used += need
		return need, nil
	}
	// The estimate may be stale (deleted files): commit what is buffered and ask the store.
	q.mu.Unlock()
	err := f.wb.flushAll(f.ctx)
	q.mu.Lock()
	if err != nil {
		return 0, err
	}
	if err := f.refreshQuota(); err != nil {
		return 0, err
	}
	avail := min(need, q.limit-q.used)
	if avail <= 0 {
		return 0, fmt.Errorf("volume quota of %d bytes reached: %w", q.limit, syscall.ENOSPC)
	}
	q.used += avail
	return avail, nil
}

func (f *fsys) refreshQuota() error {
	limit, used, err := f.vol.Quota(f.ctx)
	if err != nil {
		return err
	}
	f.quota.known, f.quota.limit, f.quota.used = true, limit, used.Bytes
	return nil
}
