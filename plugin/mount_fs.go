package plugin

import (
	"context"
	"log/slog"

	"github.com/fusevol/fusevol/backend"
)

// mountFS mounts a view with the fs package. TEMPORARY until fs lands.
func mountFS(ctx context.Context, dir string, view *backend.View, log *slog.Logger) (fsMount, error) {
	return nil, backend.ErrNotSupp
}
