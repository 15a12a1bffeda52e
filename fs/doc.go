// Package fs serves one backend view (a read-write volume or a read-only snapshot) as a FUSE
// filesystem, using go-fuse's raw protocol API.
//
// Invariants:
//   - A FUSE node id is the backend inode number for the mounted view; nodes of snapshots
//     browsed under <mount>/.snapshots carry the snapshot's slot in the high 16 bits.
//   - Written data lives in per-file chunk buffers until it is committed; while buffered it is
//     visible to reads and getattr of the same mount. Close (FLUSH), fsync and Mount.Flush commit it.
//   - Buffered bytes stay within the mount's share of its WriteBudget (Options.WriteBudget, shared
//     by the daemon's mounts, or one of Options.DirtyLimit): writers wait for commits.
//   - Written data is stored or reported lost: a commit that fails records the file's lost ranges,
//     and every later fsync and close of the file fails until they are written again; until a
//     commit succeeds, writes to the file are stored at once, so they fail unacknowledged.
//   - Reads return only verified bytes: the chunk cache (cache.go) holds chunks and 16 KiB spans of
//     chunks checked against their hash by the backend; a small read of a chunk not cached whole
//     verifies only the spans it touches.
//   - An inode unlinked while the kernel still references it is handed to View.Forget only when the
//     last kernel reference and the last open handle are gone.
//   - Metrics cost nothing when off: a mount without Options.Observe serves its fsys to go-fuse
//     directly; with one, every request passes through the timing wrapper of observe.go, and
//     every commit of buffered writes is reported (OpCommit).
//
// What the kernel forwards of file copies (copy.go; checked on 6.18 by copy_test.go):
//   - copy_file_range(2) between two files of this mount (a .snapshots file as the source
//     included) is one FUSE_COPY_FILE_RANGE request, after the VFS has checked the flags, the
//     open modes, overlap within one file (EINVAL) and shortened the length to the source's end.
//     fsys flushes both files' buffers and hands it to View.CloneRange(From), which shares whole
//     chunks. An error other than EXDEV or EOPNOTSUPP goes back to the caller; those two make the
//     kernel copy the bytes itself; ENOSYS would switch the request off for the connection.
//   - Across two mounts (every volume is its own connection) the kernel does not send the
//     request: it copies by splice, reads and writes through both mounts.
//   - FICLONE and FICLONERANGE (cp --reflink=always) go to the VFS's remap_file_range, which FUSE
//     does not implement: EOPNOTSUPP, and no request reaches the daemon.
package fs
