// Package fs serves one backend view (a read-write volume or a read-only snapshot) as a FUSE
// filesystem, using go-fuse's raw protocol API.
//
// Invariants:
//   - A FUSE node id is the backend inode number for the mounted view; nodes of snapshots
//     browsed under <mount>/.snapshots carry the snapshot's slot in the high 16 bits.
//   - Written data lives in per-file chunk buffers until it is committed; while buffered it is
//     visible to reads and getattr of the same mount. Close (FLUSH), fsync and Mount.Flush commit it.
//   - Buffered bytes across the mount never exceed Options.DirtyLimit: writers wait for commits.
//   - An inode unlinked while the kernel still references it is handed to View.Forget only when the
//     last kernel reference and the last open handle are gone.
package fs
