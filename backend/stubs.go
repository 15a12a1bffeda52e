package backend

// TEMPORARY: method signatures of the backend, stubbed until the implementation lands.
// The signatures are the contract for fs and plugin; bodies are being written.

import (
	"context"
	"log/slog"
	"time"
)

// Options configures Open.
type Options struct {
	Logger *slog.Logger
	// InMemory runs Badger without disk (tests only).
	InMemory bool
	// GCInterval is how often value-log GC runs in the background (0 = 1 minute; <0 = never).
	GCInterval time.Duration
}

// Store is one Badger database holding every volume, snapshot and chunk.
// Safe for concurrent use.
type Store struct{}

// Open opens (creating if needed) the store in dir and reclaims orphaned inodes left by a dead process.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) { return nil, ErrNotSupp }

// Close flushes and closes the store. Views become unusable (ErrClosed).
func (s *Store) Close() error { return ErrNotSupp }

// Sync makes every committed change durable (fsync of Badger's files).
func (s *Store) Sync(ctx context.Context) error { return ErrNotSupp }

// CreateVolume creates a volume; opts.From ("VOL@SNAP") makes it a clone. ErrExists if the name is taken.
func (s *Store) CreateVolume(ctx context.Context, name string, opts VolumeOptions) (VolumeInfo, error) {
	return VolumeInfo{}, ErrNotSupp
}

// GetVolume returns ErrNotFound for an unknown name.
func (s *Store) GetVolume(ctx context.Context, name string) (VolumeInfo, error) {
	return VolumeInfo{}, ErrNotSupp
}

// ListVolumes returns every volume, sorted by name.
func (s *Store) ListVolumes(ctx context.Context) ([]VolumeInfo, error) { return nil, ErrNotSupp }

// DeleteVolume deletes a volume and its snapshots (clones made from them survive).
// Space is reclaimed in the background. The caller must make sure it is not mounted.
func (s *Store) DeleteVolume(ctx context.Context, name string) error { return ErrNotSupp }

// CreateSnapshot takes a read-only snapshot of the volume's live state, in constant time.
func (s *Store) CreateSnapshot(ctx context.Context, volume, name string) (SnapshotInfo, error) {
	return SnapshotInfo{}, ErrNotSupp
}

// ListSnapshots returns a volume's snapshots, oldest first. volume=="" lists all.
func (s *Store) ListSnapshots(ctx context.Context, volume string) ([]SnapshotInfo, error) {
	return nil, ErrNotSupp
}

// DeleteSnapshot deletes a snapshot; clones made from it are unaffected.
func (s *Store) DeleteSnapshot(ctx context.Context, volume, name string) error { return ErrNotSupp }

// RestoreSnapshot rolls the volume back to the snapshot. The caller must make sure it is not mounted.
func (s *Store) RestoreSnapshot(ctx context.Context, volume, name string) error { return ErrNotSupp }

// Usage returns one volume's logical bytes and file count.
func (s *Store) Usage(ctx context.Context, volume string) (Usage, error) { return Usage{}, ErrNotSupp }

// Stats returns store-wide accounting (a full scan of refcounts: not for hot paths).
func (s *Store) Stats(ctx context.Context) (StoreStats, error) { return StoreStats{}, ErrNotSupp }

// GC drops the keys of deleted snapshots and volumes, then runs value-log GC until nothing is
// left to rewrite, so disk space is returned now.
func (s *Store) GC(ctx context.Context) error { return ErrNotSupp }

// Fsck checks every invariant; with repair it fixes refcounts, unreferenced bodies and orphans.
func (s *Store) Fsck(ctx context.Context, repair bool) (*FsckReport, error) { return nil, ErrNotSupp }

// OpenVolume returns a read-write view of the volume's live state. The view follows the volume
// across snapshots taken while it is open.
func (s *Store) OpenVolume(ctx context.Context, name string) (*View, error) { return nil, ErrNotSupp }

// OpenSnapshot returns a read-only view of a snapshot: every mutation returns ErrReadOnly.
func (s *Store) OpenSnapshot(ctx context.Context, volume, snapshot string) (*View, error) {
	return nil, ErrNotSupp
}

// View is the filesystem of one volume (read-write) or one snapshot (read-only).
// Every mutating method is one Badger transaction. Safe for concurrent use.
type View struct{}

func (v *View) ReadOnly() bool     { return false }
func (v *View) ChunkSize() int     { return 0 }
func (v *View) Volume() VolumeInfo { return VolumeInfo{} }

// Quota returns the volume's size limit in bytes (0 = none) and its current usage.
func (v *View) Quota(ctx context.Context) (limit int64, used Usage, err error) {
	return 0, Usage{}, ErrNotSupp
}

func (v *View) GetAttr(ctx context.Context, ino Ino) (Attr, error) { return Attr{}, ErrNotSupp }
func (v *View) SetAttr(ctx context.Context, ino Ino, in SetAttr) (Attr, error) {
	return Attr{}, ErrNotSupp
}
func (v *View) Lookup(ctx context.Context, parent Ino, name string) (Attr, error) {
	return Attr{}, ErrNotSupp
}

// ReadDir lists a directory's entries sorted by name (without "." and "..").
func (v *View) ReadDir(ctx context.Context, dir Ino) ([]DirEntry, error) { return nil, ErrNotSupp }

// Mknod creates a file, directory, symlink, fifo, socket or device node. ErrExists if name is taken.
func (v *View) Mknod(ctx context.Context, parent Ino, name string, n NewNode) (Attr, error) {
	return Attr{}, ErrNotSupp
}
func (v *View) Readlink(ctx context.Context, ino Ino) (string, error) { return "", ErrNotSupp }
func (v *View) Link(ctx context.Context, ino, newParent Ino, newName string) (Attr, error) {
	return Attr{}, ErrNotSupp
}

// Unlink removes a non-directory entry. When the last link goes, the inode becomes an orphan: it
// stays readable and writable by inode number until Forget is called (and is reclaimed at the next
// Open if the process dies first).
func (v *View) Unlink(ctx context.Context, parent Ino, name string) error { return ErrNotSupp }
func (v *View) Rmdir(ctx context.Context, parent Ino, name string) error  { return ErrNotSupp }

// Rename moves an entry; flags are RenameNoReplace / RenameExchange.
func (v *View) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error {
	return ErrNotSupp
}

// Forget tells the store that nothing holds ino open any more: an orphan (nlink 0) is reclaimed.
func (v *View) Forget(ctx context.Context, ino Ino) error { return ErrNotSupp }

func (v *View) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	return nil, ErrNotSupp
}
func (v *View) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	return ErrNotSupp
}
func (v *View) ListXattr(ctx context.Context, ino Ino) ([]string, error)    { return nil, ErrNotSupp }
func (v *View) RemoveXattr(ctx context.Context, ino Ino, name string) error { return ErrNotSupp }

// ReadAt reads file data; holes and the region past the last chunk but below Size read as zeros.
// Returns the number of bytes read (short only at EOF).
func (v *View) ReadAt(ctx context.Context, ino Ino, dst []byte, off int64) (int, error) {
	return 0, ErrNotSupp
}

// WriteAt writes data (read-modify-write of partial chunks), extends Size, updates mtime/ctime.
func (v *View) WriteAt(ctx context.Context, ino Ino, data []byte, off int64) (Attr, error) {
	return Attr{}, ErrNotSupp
}

// Chunk is the new content of one chunk, hashed (and compressed) by PrepareChunk outside any
// transaction so that the CPU work can run in parallel before CommitChunks.
type Chunk struct {
	Index uint64
}

// PrepareChunk hashes (and compresses) data, which must be at most ChunkSize bytes. Pure CPU.
func (v *View) PrepareChunk(index uint64, data []byte) Chunk { return Chunk{} }

// CommitChunks replaces whole chunks of ino in one transaction. The file grows to at least
// minSize (pass 0 to keep the size unless a chunk extends past it); mtime and ctime are set to now.
func (v *View) CommitChunks(ctx context.Context, ino Ino, chunks []Chunk, minSize uint64) (Attr, error) {
	return Attr{}, ErrNotSupp
}

// ReadChunk fills dst (len >= ChunkSize) with chunk index of ino and returns the chunk's stored
// length (0 for a hole; the rest of dst is zeroed).
func (v *View) ReadChunk(ctx context.Context, ino Ino, index uint64, dst []byte) (int, error) {
	return 0, ErrNotSupp
}

// Fallocate: mode 0 extends Size to off+length if smaller (space is not reserved: chunks are
// written lazily, but the quota is checked); FALLOC_FL_KEEP_SIZE (1) does nothing to Size;
// FALLOC_FL_PUNCH_HOLE|KEEP_SIZE (3) zeroes the range (whole chunks become holes).
func (v *View) Fallocate(ctx context.Context, ino Ino, off, length int64, mode uint32) error {
	return ErrNotSupp
}

// SeekData returns the offset of the first data (whence=3, SEEK_DATA) or hole (whence=4,
// SEEK_HOLE) at or after off, with chunk granularity. ErrNotFound (ENXIO) past EOF / no more data.
func (v *View) SeekData(ctx context.Context, ino Ino, off int64, whence int) (int64, error) {
	return 0, ErrNotSupp
}

// Snapshots lists the volume's snapshots (for <mount>/.snapshots). Snapshot opens one read-only.
func (v *View) Snapshots(ctx context.Context) ([]SnapshotInfo, error)    { return nil, ErrNotSupp }
func (v *View) Snapshot(ctx context.Context, name string) (*View, error) { return nil, ErrNotSupp }
