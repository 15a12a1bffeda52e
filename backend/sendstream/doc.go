// Package sendstream is the wire format of `volctl send` and `volctl receive`: one snapshot of a
// volume (or what changed since an older one) as a self-describing, versioned, checksummed
// stream of records. It knows nothing of the store: backend/send.go and backend/receive.go
// translate between a store's views and these records.
//
// # Layout
//
// All integers are big-endian.
//
//	stream  = magic version record* trailer
//	magic   = "FVSTREAM"                    8 bytes
//	version = uint32                        Version (1); a reader refuses any other
//	record  = type:uint8 length:uint32 payload[length] crc:uint32
//
// crc is the CRC-32C (Castagnoli) of type, length and payload. The first record is the Header,
// the last the Trailer; after the trailer the stream must end.
//
// # Records (payloads)
//
//	1 Header       flags:u32 (bit 0: incremental) chunkSize:u32 nextIno:u64 created:i64 (Unix ns)
//	               quota:u64 uid:u32 gid:u32 mode:u32, then the strings volume, snapshot, snapshotID,
//	               baseName, baseID, compression, each u16 length + bytes (at most MaxIDLen)
//	2 Inode        ino:u64 mode uid gid nlink rdev:u32 size:u64 atime mtime ctime:i64 gen parent:u64
//	               target (the rest: a symlink's target, at most MaxTarget bytes)
//	3 Dirent       dir:u64 ino:u64 type:u32 name (the rest, 1 to MaxName bytes)
//	4 Xattr        ino:u64 nameLen:u16 name value (the rest, at most MaxXattrValue bytes)
//	5 Body         hash:[32] data (the rest, 1 to MaxBody bytes): a chunk's plain bytes, whose
//	               BLAKE3-256 is hash (the receiver checks)
//	6 Chunk        ino:u64 index:u64 hash:[32] length:u32: chunk index of the file is the chunk
//	               hash (length plain bytes); the body came earlier in this stream or the receiver
//	               has it. Chunks a file has no record for are holes.
//	7 Hole         ino:u64 index:u64 (incremental): the chunk became a hole
//	8 Unlink       dir:u64 name (incremental): the directory entry went
//	9 RemoveXattr  ino:u64 name (incremental)
//	10 RemoveInode ino:u64 (incremental): the inode and everything it held went
//	255 Trailer    one u64 count per record type 1..10, then bytes:u64 (every byte of the stream
//	               before the trailer record) and crc:u32 (CRC-32C of those bytes)
//
// A hard link is one Inode record and several Dirent records naming it. Inode numbers are the
// sender's; the receiver keeps them, so an incremental stream names the inodes of its base.
//
// # Invariants
//
//   - Every length has a hard cap (the Max constants): a hostile stream makes a reader allocate
//     at most one record of MaxRecord bytes, and a record's fixed part must have its exact size.
//   - A flipped bit anywhere is caught by the record's CRC (or, for the magic and version, by
//     their check); a dropped, duplicated or reordered record by the trailer's counts, byte count
//     and whole-stream CRC; a truncated stream by the missing trailer. Data integrity beyond
//     that is the content address: every Body is checked against its BLAKE3 hash by the receiver.
//   - The Decoder returns io.EOF only after a trailer that checked out and the end of the stream.
package sendstream
