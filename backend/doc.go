// Package backend is fusevol's storage engine: one Badger database holding every volume, snapshot
// and clone, their POSIX metadata, and deduplicated, content-addressed file data. It knows nothing of
// FUSE or HTTP; the fs and plugin packages sit on top of it.
//
// # Keys
//
// All integers are big-endian so that Badger's byte order is numeric order.
//
//	V name                        volume record (JSON)
//	S volume 0x00 snapshot        snapshot record (JSON)
//	N node                        snapshot-tree node: tree, parent
//	T tree                        next inode number of a snapshot tree
//	A "node" | "tree"             allocators
//	A "swept" | "format"          body bytes swept since the last full compaction (an idle pass makes one when > 0); store format (vlog.go)
//	U node                        usage of a node: allocated bytes, inode count
//	M tree kind ino [suffix] node versioned metadata (see below)
//	R hash                        chunk refcount, plain length, stored length
//	B hash                        chunk body: codec byte + payload, see Chunks (the value log when 65 KiB or more)
//	D hash                        dead body: refcount reached 0, body to be deleted by GC (vlog.go)
//	L volumeID 0x00 ino           intent-log mark: the highest LSN applied to the file (intent.go)
//	P volume                      snapshot schedule policy of a live volume (binary, schedule.go)
//	I node                        identity a received snapshot was sent under, the base of later incremental streams (send.go)
//
// Metadata kinds: 'i' inode, 'd' directory entry (suffix: name 0x00), 'x' xattr (suffix: name 0x00),
// 'c' chunk-map entry (suffix: chunk index), 'e' extent (suffix: chunk index, 32-bit extent seq),
// 'o' orphan marker. Names cannot contain NUL, so the NUL
// terminator keeps the versions of one name contiguous. Every value starts with a tag byte: 0 is a
// whiteout ("deleted at this node"), 1 is a live value.
//
// # Snapshots: a snapshot-tree node ID inside every key (the bcachefs scheme)
//
// Volumes that share history (a volume, its snapshots, clones of those snapshots) form a tree of nodes.
// Every metadata key ends with the 32-bit ID of the node that wrote it. Node IDs are allocated downwards,
// so a child always has a smaller ID than its parent: scanning forward from key‖S, the first version
// whose node is S or one of its ancestors is the nearest one, the one S sees. Writes only ever go to a
// volume's live node, which is a leaf.
//
//   - CreateSnapshot freezes the live node L as the snapshot and gives the volume a new child of L to
//     write in: two small keys, whatever the volume holds. Writers wait only for that one transaction.
//   - A clone is a new volume whose live node is another child of the snapshot's node.
//   - RestoreSnapshot gives the volume a fresh child of the snapshot's node and retires the old one.
//   - Deleting something that an ancestor still holds writes a whiteout; deleting something that only the
//     live node holds removes the key. Truncation whiteouts the chunk-map entries past the new end, so a
//     later extension reads zeros, never an ancestor's data.
//   - Reads of the live volume seek straight to key‖live; the live version, when there is one, is the
//     first key found, so reads do not slow down as snapshots accumulate.
//   - Deleted snapshots and volumes leave nodes nobody references. Background GC drops the keys of such a
//     node when it has no children and merges it into its only child otherwise (moving down each key the
//     child does not override), batch by batch, each batch one transaction. A crash between batches leaves
//     a consistent store: until the node is unlinked from the tree, the child still sees through it.
//
// # Chunks
//
// File data is cut into fixed-size chunks (per volume). A chunk is addressed by the BLAKE3-256 hash of its
// plain bytes and stored once in the whole store, optionally compressed. All-zero chunks are not stored:
// they are holes. Every chunk-map version holds one reference on its chunk; the refcount key is changed in
// the same transaction as the chunk map, and the body is written in the transaction that takes the first
// reference; the one that drops the last marks it dead (D), and GC deletes it later (see GC below). Snapshots add no versions, so they change no
// counts. Bodies are verified against their hash on every read: a mismatch is ErrCorrupt, never data.
//
// A body is a codec byte and its payload: 1 s2, 2 zstd (used only when smaller), 3 a tree body (what
// every other new body is; blocks.go): the Bao outboard of the chunk's BLAKE3 tree in 16 KiB groups,
// then the plain bytes. Its root is the chunk's hash, so a tree body is just another encoding of the
// same address. View.ReadChunkPart verifies a span of a tree body against the hash by reading only the
// groups under it and the outboard's parent hashes (and lays the chunk's extents over the span);
// compressed bodies and codec 0 (plain bytes, written before tree bodies, still read) are verified
// whole. fsck recomputes outboards.
//
// # Extents (small writes)
//
// A partial-chunk commit (View.PrepareExtent, and WriteAt for the partial chunks of a write) does not
// rewrite the chunk: it stores the written bytes as an extent, M tree 'e' ino index seq node, whose
// value is tag, offset within the chunk (32 bits), CRC-32C of the offset's bytes and the data, then the
// data. A read of the chunk lays the extents its node sees over the chunk-map content in seq order (a
// new extent takes the highest visible seq + 1, so later ones win); the chunk's length is the largest
// of the chunk's and its extents' ends. Extents are versioned metadata like the rest: a snapshot sees
// the extents its node sees, whiteouts hide an ancestor's, GC moves and drops them with their node.
// A checksum mismatch is ErrCorrupt, never data. The inode counts the extents its node sees (in a
// 32-bit slot older inodes hold as zero), so reads of files without extents never look for them.
//
// A settled intent-log record is laid over its chunks as extents too. Every other change of a chunk
// (a whole-chunk commit, truncation, punch or zero range) drops its extents in the same transaction; an extent that a new one covers is
// dropped by it. An extent that would give its chunk more than 16 extents, or more extent bytes than
// a quarter of a chunk or 64 KiB, whichever is less, compacts instead: chunk and extents are merged and committed as one
// content-addressed chunk (deduplicated and hash-checked like any other) in the same transaction.
// Accounting: a chunk's allocated bytes are its merged length, so an extent costs what it adds to the
// chunk's end, whatever its own size (at most a quarter of a chunk more is stored until compaction).
//
// # Reflink copies (clone_range.go)
//
// View.CloneRange (copy_file_range) gives each destination chunk that the copy covers whole, at
// a source offset that is a chunk boundary too, the source chunk's chunk-map entry: one more
// version naming the same hash, so one more reference, and no body read, hashed or written (a
// source hole stays a hole; a source chunk with extents is merged and committed as a new
// content-addressed chunk). The rest is copied as WriteAt would. The copy runs in batches, each
// one transaction under the quota (the destination's allocation grows as for a write), so a
// crash leaves it done up to a batch. CloneRangeFrom copies from another view of the store
// (a snapshot, another volume) with the same chunk size, reading through a transaction bound to
// that view's node.
//
// # Damaged files (damage.go)
//
// Damage in Badger's files is ErrCorrupt, never other bytes, a panic or a hung request. Open checks
// every block of every table before Badger opens them and refuses a store with a damaged table
// (Badger reads a bad block as missing keys); value-log entries are CRC-checked and bodies
// hash-checked on every read; a panic of the storage engine is recovered in view, update and
// guarded and becomes ErrCorrupt, committing nothing. Fsck always finishes and names in Damaged
// every file it cannot read.
//
// # Invariants (checked by Fsck)
//
//   - Every metadata change is one Badger transaction, made while holding the store's write lock, so
//     there are no write conflicts and a crash leaves either the old or the new state.
//   - Every directory entry visible at a node points at an inode visible there; every inode's nlink equals
//     its links (2 + subdirectories for a directory); inodes with nlink 0 carry an orphan marker.
//   - Refcount = number of chunk-map versions naming the hash; every refcount has a body that hashes
//     right; no body without a refcount.
//   - Every visible extent belongs to a regular file (or to an inode deleted at this node whose data an
//     ancestor holds), lies within its chunk and the file's size, and matches its checksum; a file's
//     allocation is the sum of its chunks' merged lengths and its inode's extent count is the number
//     of extents visible with it.
//   - Node parents exist and have larger IDs; volume live nodes are leaves.
//   - Every intent-log mark is below the log's next LSN.
//   - Every schedule policy decodes to a valid policy and belongs to a live volume.
//
// # GC without pauses
//
// Only chunk bodies ever go to Badger's value log (values of valueThreshold, 65 KiB, or more; t.set
// refuses any other such value), and only GC deletes bodies (sweepDead, under gcMu like the
// value-log rewrite): so no delete ever runs during a rewrite, which is what makes Badger's
// rewrite resurrect deleted keys (badger#2286), and the rewrite runs with writers going on.
// Busy background passes (the store was written since the last one) do not compact at all and
// rewrite at most one value-log file, one at least half garbage: a full compaction takes seconds of the CPUs and the
// disk, which writers' fsyncs feel. Idle and explicit passes flush the memtable (which holds
// writers off for the flush) and compact everything, then rewrite. Stores of format 1 (metadata in the value log) are upgraded at Open.
//
// Durability: Badger runs with SyncWrites off; Store.Sync makes everything committed so far
// durable (and is skipped when nothing was committed since the last one). fsync goes through
// View.LogWrites: the writes are appended to the intent log (package intentlog) and flushed with
// one fdatasync shared by concurrent callers; the store is synced as well only when the file's
// inode changed since the last store sync. intent.go states the rules that make replay safe.
//
// # Full disk
//
// Badger writes its memtable and value logs through memory maps of sparse files, where a full
// filesystem means SIGBUS. With Options.DiskReserve, every write transaction passes the disk
// guard first, which gives those files their blocks before the commit can write into them and
// refuses the commit (ENOSPC) when it cannot; diskspace.go says how, and what stays open.
package backend
