package plugin

import (
	"context"
	"fmt"
	"net/http"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

func (d *Daemon) ctlSnapshotDiff(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	if from == "" {
		return nil, invalid("diff of %s: the from snapshot is required", name)
	}
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	a, err := st.OpenSnapshot(ctx, name, from)
	if err != nil {
		return nil, err // it names the snapshot
	}
	var b *backend.View
	if to == "" {
		// The live state: make what applications wrote visible first. The lock is held only
		// for the flush, not the walk.
		if err := d.mounts.flush(ctx, name); err != nil {
			return nil, err
		}
		b, err = st.OpenVolume(ctx, name)
	} else {
		b, err = st.OpenSnapshot(ctx, name, to)
	}
	if err != nil {
		return nil, fmt.Errorf("%s@%s: %w", name, to, err)
	}
	diff, err := backend.DiffViews(ctx, a, b)
	if err != nil {
		return nil, fmt.Errorf("diff %s: %w", name, err)
	}
	return api.Diff{Volume: name, From: from, To: to, Added: diff.Added, Modified: diff.Modified, Removed: diff.Removed}, nil
}
