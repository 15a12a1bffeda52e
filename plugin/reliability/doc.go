// Package reliability holds fusevol's fault, load and security tests; it has no code of its own.
//
// The tests run the real volctl binary (built once per test binary) as a separate daemon process
// on private roots and sockets, mount volumes with real FUSE, and do real system calls on them.
// What they prove, each against a failure that would show:
//
//   - Crash loop: a daemon killed with SIGKILL at random moments loses no file that a writer in
//     another process had fsynced (file and directory); after each restart the dead mount is
//     gone, the volume mounts again, every acknowledged file reads back with its checksum and
//     fsck is clean.
//   - Full disk: with the daemon's root on a small tmpfs, writers get ENOSPC (not EIO, not a
//     hang, not a dead daemon), fsynced files read back, fsck is clean, and deleting files
//     then running gc makes room for new writes.
//   - Disk filled by another process: with the store on a small loop-mounted ext4, a dd fills it
//     (and keeps taking what comes back, or fills once and exits) while writers create, write and
//     fsync files: the daemon survives (no SIGBUS in Badger's memory maps), every error is
//     ENOSPC, fsynced files read back, fsck is clean, SIGTERM and a restart work on the full
//     filesystem, and writes work again once dd's file is gone.
//   - Quota: a volume created with size=N fails writes past N with ENOSPC and statfs reports N
//     as the mount's size.
//   - Load: concurrent clients of Docker's volume protocol on overlapping names never see a
//     removed volume listed or found, the daemon's mount counts equal what the clients hold,
//     and releasing every reference leaves no FUSE mount behind.
//   - Corruption: bytes flipped inside the value log make the affected file fail with EIO
//     (never wrong bytes), other files read fine, and fsck exits non-zero naming exactly the
//     damaged file.
//   - Security: volume names never reach outside the mount root; snapshots are read-only
//     (EROFS) wherever they appear; the socket is 0660 with the configured group and the
//     control API refuses other peers; permission bits hold for other uids; writing a setuid
//     file as a non-root user clears the setuid and setgid bits.
//   - Fuzzing: arbitrary request bodies sent to every Docker protocol endpoint get a JSON answer,
//     never a panic, and never make the daemon create anything outside its root.
//
// Every test needs root and /dev/fuse. With CI=true a missing prerequisite fails the test;
// elsewhere it skips. FUSEVOL_LONG=1 runs more rounds and longer load.
package reliability
