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
package fs
