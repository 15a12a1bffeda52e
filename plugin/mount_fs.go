package plugin

import (
	"context"
	"log/slog"

	"github.com/fusevol/fusevol/fs"
)

// mountFS mounts a view with the fs package; it returns once the mount answers requests.
func mountFS(ctx context.Context, dir string, view fs.Volume, log *slog.Logger) (fsMount, error) {
	m, err := fs.Mount(ctx, dir, view, fs.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	return m, nil
}
