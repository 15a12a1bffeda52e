package backend

import "time"

// Ino is an inode number. Numbers are allocated per snapshot tree and never reused,
// so a clone continues its origin's counter.
type Ino uint64

// RootIno is the inode of every volume's root directory.
const RootIno Ino = 1

// MaxNameLen is the longest directory entry or xattr name, in bytes.
const MaxNameLen = 255

// Attr is an inode's POSIX attributes. Mode holds the file type bits (syscall.S_IFREG, ...)
// as well as the permission bits. Times are Unix nanoseconds.
type Attr struct {
	Ino   Ino
	Mode  uint32
	UID   uint32
	GID   uint32
	Size  uint64
	Nlink uint32
	Rdev  uint32
	Atime int64
	Mtime int64
	Ctime int64
	Gen   uint64 // generation: bumped when... always 1 for now; inode numbers are never reused
	// Blocks is the number of 512-byte blocks allocated (non-hole chunk bytes).
	Blocks uint64
}

// SetAttr selects which attributes SetAttr changes. Only fields whose Valid bit is set are used.
type SetAttr struct {
	Valid uint32 // SetMode | SetUID | ...
	Mode  uint32 // permission bits only (07777)
	UID   uint32
	GID   uint32
	Size  uint64
	Atime int64 // Unix ns; use with SetAtime
	Mtime int64
	Ctime int64 // explicit ctime (rarely needed: SetAttr sets ctime to now on any change)
}

// SetAttr.Valid bits.
const (
	SetMode uint32 = 1 << iota
	SetUID
	SetGID
	SetSize
	SetAtime
	SetMtime
	SetCtime
)

// NewNode describes an inode to create with Mknod. Mode includes the type bits:
// S_IFREG, S_IFDIR, S_IFLNK (Target is the symlink target), S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK.
type NewNode struct {
	Mode   uint32
	UID    uint32
	GID    uint32
	Rdev   uint32
	Target string
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name string
	Ino  Ino
	Mode uint32 // type bits only
}

// Rename flags (same values as Linux renameat2).
const (
	RenameNoReplace uint32 = 1
	RenameExchange  uint32 = 2
)

// Xattr flags (same values as Linux setxattr).
const (
	XattrCreate  uint32 = 1
	XattrReplace uint32 = 2
)

// VolumeInfo is a volume's record.
type VolumeInfo struct {
	Name      string
	ID        string // UUID
	CreatedAt time.Time
	Options   VolumeOptions
}

// SnapshotInfo is a snapshot's record.
type SnapshotInfo struct {
	Volume    string // for a kept snapshot of a removed volume, its record's name (NAME~ID8)
	Name      string
	CreatedAt time.Time
	RemovedAt time.Time // when the snapshot's volume was removed; zero while it exists
	Auto      bool      // taken by the volume's schedule (schedule.go)
}

// Usage is what one volume (or snapshot) holds, before dedup.
type Usage struct {
	Bytes int64 // allocated logical bytes: the sum of non-hole chunk lengths
	Files int64 // number of inodes, the root included
}

// StoreStats is store-wide accounting.
type StoreStats struct {
	Volumes       map[string]Usage
	LogicalBytes  int64   // sum over every chunk reference (all volumes and snapshots)
	UniqueBytes   int64   // plain bytes of distinct chunks
	PhysicalBytes int64   // bytes of chunk bodies as stored (after compression)
	Chunks        int64   // distinct chunks
	DedupRatio    float64 // LogicalBytes / UniqueBytes (1 when empty)
	DiskBytes     int64   // Badger LSM + value log size on disk
}

// FsckReport lists every invariant violation found. Clean() is true when there is none.
type FsckReport struct {
	Problems []string
	Repaired []string
	// Damaged lists "volume:path" (or "snapshot volume@name:path") of files whose chunks are
	// missing or do not hash right.
	Damaged []string
}

// Clean reports whether fsck found nothing wrong.
func (r *FsckReport) Clean() bool { return len(r.Problems) == 0 }
