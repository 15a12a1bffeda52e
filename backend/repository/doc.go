// Package repository is a backup repository for send streams (`volctl send --to DIR`,
// `volctl restore`, `volctl backup`): snapshots of many volumes, each chunk stored once,
// content-addressed, so a hundred daily backups of ten volumes cost what changed. It knows
// nothing of the store: it takes sendstreams (backend/sendstream) in and gives full ones out,
// and lives on a Storage (a local directory now; an object store can implement the same five
// calls).
//
// # Layout
//
//	config                   JSON: {"format": "fusevol-repository", "version": 1, "id": ...}
//	lock                     (Dir) the file of the repository lock, see below
//	chunks/XX/HASH           a chunk: codec byte (0 plain, 1 zstd) + payload; HASH is the lower-case
//	                         hex BLAKE3-256 of its plain bytes, XX HASH's first two digits
//	backups/VOLUME/SNAPSHOT  one backup: "FVBACKUP" version:u32 metaLen:u32 meta (JSON: Backup)
//	                         crc:u32 (CRC-32C of what precedes), then the manifest: a full
//	                         sendstream of the snapshot without Body records
//
// # Invariants
//
//   - Every object is written whole or not at all (Storage.Put: a temporary file, fsync,
//     rename, fsync of the directory), and a backup's chunks are durable before its backup
//     file is written: a backup exists exactly when its backup file does, and then every chunk
//     it uses is there. A kill at any moment leaves complete backups and, at worst, chunks no
//     backup uses yet and temporary files, which the next backup of the same snapshot verifies
//     instead of writing (a send resumes), and prune deletes.
//   - Every backup file holds the snapshot's whole metadata: a backup of an incremental stream
//     is its base's manifest with the stream applied (tree.go). So any backup restores, and
//     can be forgotten, on its own; incremental streams only save what is read and sent.
//   - Data integrity is the content address: a chunk is checked against its name whenever it is
//     read (backup's verification of what is there, restore, check), and its length against
//     the manifest. Damage is ErrDamaged, never other bytes; a restore that meets it writes no
//     trailer, so the receiver refuses the stream and builds nothing. The backup file's
//     description is checked by its CRC, the manifest by sendstream's record CRCs and trailer.
//   - Chunks are deleted only by prune, only under the exclusive lock (no backup can hold a
//     chunk it has not referenced yet), and only when no readable backup file uses them; a
//     backup file that does not read stops prune. forget deletes backup files only. Backup,
//     restore, list and check take the lock shared.
package repository
