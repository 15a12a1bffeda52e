package fs

import (
	"context"

	"github.com/fusevol/fusevol/backend"
)

// Volume is what the filesystem needs from a backend view. *backend.View implements it.
type Volume interface {
	ReadOnly() bool
	ChunkSize() int
	Quota(ctx context.Context) (limit int64, used backend.Usage, err error)

	GetAttr(ctx context.Context, ino backend.Ino) (backend.Attr, error)
	SetAttr(ctx context.Context, ino backend.Ino, in backend.SetAttr) (backend.Attr, error)
	Lookup(ctx context.Context, parent backend.Ino, name string) (backend.Attr, error)
	ReadDir(ctx context.Context, dir backend.Ino) ([]backend.DirEntry, error)
	Mknod(ctx context.Context, parent backend.Ino, name string, n backend.NewNode) (backend.Attr, error)
	Readlink(ctx context.Context, ino backend.Ino) (string, error)
	Link(ctx context.Context, ino, newParent backend.Ino, newName string) (backend.Attr, error)
	Unlink(ctx context.Context, parent backend.Ino, name string) error
	Rmdir(ctx context.Context, parent backend.Ino, name string) error
	Rename(ctx context.Context, oldParent backend.Ino, oldName string, newParent backend.Ino, newName string, flags uint32) error
	Forget(ctx context.Context, ino backend.Ino) error

	GetXattr(ctx context.Context, ino backend.Ino, name string) ([]byte, error)
	SetXattr(ctx context.Context, ino backend.Ino, name string, value []byte, flags uint32) error
	ListXattr(ctx context.Context, ino backend.Ino) ([]string, error)
	RemoveXattr(ctx context.Context, ino backend.Ino, name string) error

	ReadChunk(ctx context.Context, ino backend.Ino, index uint64, dst []byte) (int, error)
	PrepareChunk(index uint64, data []byte) backend.Chunk
	CommitChunks(ctx context.Context, ino backend.Ino, chunks []backend.Chunk, minSize uint64) (backend.Attr, error)
	Fallocate(ctx context.Context, ino backend.Ino, off, length int64, mode uint32) error
	SeekData(ctx context.Context, ino backend.Ino, off int64, whence int) (int64, error)

	Volume() backend.VolumeInfo
	// Sync makes committed changes durable (fsync).
	Sync(ctx context.Context) error
}

// snapshotter is implemented by volume views whose snapshots can be browsed under .snapshots.
type snapshotter interface {
	Snapshots(ctx context.Context) ([]backend.SnapshotInfo, error)
	Snapshot(ctx context.Context, name string) (*backend.View, error)
}

var _ Volume = (*backend.View)(nil)

var _ snapshotter = (*backend.View)(nil)
