package backend

// Receive builds what a sendstream holds (send.go says what that is) without side effects
// until the stream checked out:
//
//   - A full stream is written into a new volume under a hidden name, NAME~receive-TOKEN-RAND
//     (a removed volume's kind of name: ListVolumes and GetVolume hide it, the plugin mounts no
//     name with '~', GC and fsck see a volume like any other; TOKEN is the process's, so the
//     next receive deletes hidden volumes a dead process left). The final transaction renames
//     it to NAME and takes the snapshot the stream was sent from (same name, same time).
//   - An incremental stream needs a volume NAME holding the stream's base (by identity, see
//     send.go) and unchanged since (or ReceiveOptions.Force); it is written into a hidden clone
//     of that snapshot, and the final transaction makes the clone's node the new snapshot and
//     moves NAME's live state to it, dropping what NAME's live state changed since (zfs
//     receive -F). The caller makes sure NAME is not mounted.
//
// Records are read and prepared (bodies hashed and encoded) by a goroutine, outside the store's
// write lock, while the previous batch commits in one bounded transaction. Every record is
// checked as it is applied (names, types, an entry's type against its inode's, chunks within
// the file, bodies against their hashes, the quota, the disk guard), and before the final
// transaction the hidden volume passes fsck's tree check. On any error, the trailer's
// included, the hidden volume is deleted and GC gives back what it held: no volume, no
// reference, no body.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/zeebo/blake3"

	"github.com/fusevol/fusevol/backend/sendstream"
)

// ReceiveStats is what Receive built.
type ReceiveStats struct {
	Volume, Snapshot string
	Incremental      bool
	Inodes           int64 // inode records applied
	Chunks           int64 // chunk-map entries applied
	Bodies           int64 // chunk bodies written
	BodyBytes        int64 // plain bytes of those
	Skipped          int64 // chunk bodies in the stream that the store already held (not written again)
	Bytes            int64 // stream bytes
}

// Batch bounds: a transaction stays well below Badger's limits (bodies under the value
// threshold count in full).
const (
	recvBatchRecords = 512
	recvBatchBytes   = 2 << 20
)

// receiveSep separates a volume's name from the suffix of a receive's hidden volume.
const receiveSep = removedSep + "receive-"

// ReceiveOptions modify Receive.
type ReceiveOptions struct {
	// Force lets an incremental stream land on a volume that changed since its base (in its
	// live state or by later snapshots): the live changes are dropped, later snapshots stay.
	Force bool
}

// Receive reads a sendstream from r and builds volume (full stream) or a new snapshot of it
// (incremental stream), with the snapshot named as in the stream. Damaged, truncated or
// foreign streams are ErrInvalid; an incremental stream whose base volume does not hold is
// ErrInvalid too (ErrNotFound without the volume), and so is one onto a volume that changed
// since the base, unless opts.Force.
func (s *Store) Receive(ctx context.Context, r io.Reader, volume string, opts ReceiveOptions) (ReceiveStats, error) {
	st := ReceiveStats{Volume: volume}
	if err := ValidateName(volume); err != nil {
		return st, err
	}
	if err := s.dropStaleReceives(ctx); err != nil {
		return st, fmt.Errorf("receive %s: %w", volume, err)
	}
	dec, err := sendstream.NewDecoder(r)
	if err != nil {
		return st, fmt.Errorf("receive %s: %w: %w", volume, ErrInvalid, err)
	}
	h := dec.Header()
	st.Snapshot, st.Incremental = h.Snapshot, h.Incremental
	if err := ValidateName(h.Snapshot); err != nil {
		return st, fmt.Errorf("receive %s: stream's snapshot name: %w", volume, err)
	}
	rc := &receiver{s: s, h: h, dec: dec, stats: &st, force: opts.Force}
	if err := rc.begin(ctx, volume); err != nil {
		return st, fmt.Errorf("receive %s@%s: %w", volume, h.Snapshot, err)
	}
	err = rc.run(ctx)
	if err == nil {
		err = rc.check()
	}
	if err == nil {
		err = rc.finish(ctx, volume)
	}
	st.Bytes = int64(dec.Counts().Bytes)
	if err != nil {
		// Not ctx: a cancelled receive must still leave nothing behind.
		if derr := s.DeleteVolume(context.Background(), rc.hidden); derr != nil {
			s.log.Error("receive: could not delete its hidden volume", "volume", rc.hidden, "err", derr)
		}
		if errors.Is(err, sendstream.ErrFormat) && !errors.Is(err, ErrInvalid) {
			err = fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return st, fmt.Errorf("receive %s@%s: %w", volume, h.Snapshot, err)
	}
	return st, nil
}

// receiver is one Receive.
type receiver struct {
	s      *Store
	h      sendstream.Header
	dec    *sendstream.Decoder
	stats  *ReceiveStats
	force  bool
	hidden string
	view   *View  // the hidden volume
	base   uint32 // incremental: the base snapshot's node
	// pending is a body read and not yet used: the chunk record after it uses it.
	pending *Chunk
}

// processToken is part of the hidden names this process gives its receives: a hidden volume
// with another token was left by a process that died during a receive (set once, at start).
var processToken = randomHex(4)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func hiddenName(volume string) string {
	return volume + receiveSep + processToken + "-" + randomHex(4)
}

// dropStaleReceives deletes the hidden volumes of receives that a dead process left.
func (s *Store) dropStaleReceives(ctx context.Context) error {
	var stale []string
	s.mu.RLock()
	for name := range s.vols {
		if _, suffix, ok := strings.Cut(name, receiveSep); ok && !strings.HasPrefix(suffix, processToken+"-") {
			stale = append(stale, name)
		}
	}
	s.mu.RUnlock()
	for _, name := range stale {
		s.log.Warn("receive: deleting the hidden volume of an interrupted receive", "volume", name)
		if err := s.DeleteVolume(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// begin creates the hidden volume.
func (rc *receiver) begin(ctx context.Context, volume string) error {
	s, h := rc.s, rc.h
	rc.hidden = hiddenName(volume)
	rec := &volRec{Name: rc.hidden, ID: uuid.NewString(), CreatedAt: time.Now().UTC()}
	// The scan for changes of the volume reads its whole tree: in a read transaction, not
	// under the write lock; the update below checks that the live node is still the one seen.
	checked, err := rc.unchanged(volume)
	if err != nil {
		return err
	}
	err = s.update(ctx, func(t *tx) error {
		var vol volRec
		err := t.getJSON(volumeKey(volume), &vol)
		switch {
		case err != nil && err != ErrNotFound:
			return err
		case !h.Incremental && err == nil:
			return fmt.Errorf("volume %q: %w (a full stream makes a new volume)", volume, ErrExists)
		case h.Incremental && err == ErrNotFound:
			return fmt.Errorf("volume %q: %w (an incremental stream needs the volume holding its base %s)", volume, ErrNotFound, h.BaseName)
		case !h.Incremental:
			opts, err := streamOptions(h)
			if err != nil {
				return err
			}
			rec.Options = opts
			return s.initVolume(t, rec)
		}
		base, err := findBase(t, vol, h)
		if err != nil {
			return err
		}
		if err := snapshotFree(t, volume, h.Snapshot); err != nil {
			return err
		}
		if !rc.force && (checked == 0 || vol.Head != checked) {
			return fmt.Errorf("%w: volume %q changed during the receive's checks", ErrInvalid, volume)
		}
		if uint32(vol.Options.ChunkSize) != h.ChunkSize {
			return fmt.Errorf("%w: the stream's chunk size %d is not volume %q's %d", ErrInvalid, h.ChunkSize, volume, vol.Options.ChunkSize)
		}
		rc.base = base
		rec.Options, rec.Tree = vol.Options, vol.Tree
		head, err := t.newNode(vol.Tree, base)
		if err != nil {
			return err
		}
		rec.Head = head
		if err := copyUsage(t, base, head); err != nil {
			return err
		}
		return s.putVolume(t, rec)
	})
	if err != nil {
		return err
	}
	rc.view = &View{s: s, info: rec.info(), tree: rec.Tree}
	return nil
}

// streamOptions are the options of a volume received from h: the sender's.
func streamOptions(h sendstream.Header) (VolumeOptions, error) {
	opts := map[string]string{"chunk-size": strconv.Itoa(int(h.ChunkSize)), "uid": strconv.Itoa(int(h.UID)),
		"gid": strconv.Itoa(int(h.GID)), "mode": strconv.FormatUint(uint64(h.Mode), 8)}
	if h.Compression != "" {
		opts["compression"] = h.Compression
	}
	if h.Quota > 0 {
		opts["size"] = strconv.FormatUint(h.Quota, 10)
	}
	o, err := ParseVolumeOptions(opts)
	if err != nil {
		return o, fmt.Errorf("stream's volume options: %w", err)
	}
	return o.withDefaults(), nil
}

// findBase returns the node of the snapshot of vol whose identity is the stream's base.
func findBase(t *tx, vol volRec, h sendstream.Header) (uint32, error) {
	snaps, err := snapshotsIn(t, vol.Name)
	if err != nil {
		return 0, err
	}
	for _, sn := range snaps {
		id, err := snapshotID(t, vol, sn.name, &snapRec{})
		if err != nil {
			return 0, err
		}
		if id == h.BaseID {
			return sn.Node, nil
		}
	}
	return 0, fmt.Errorf("%w: volume %q holds no snapshot the stream was sent from (%s@%s, id %s): receive that one first",
		ErrInvalid, vol.Name, h.Volume, h.BaseName, h.BaseID)
}

// unchanged checks, for an incremental stream received without force, that the volume's live
// state is its base's (unchangedSince) and returns the live node it checked (0: no check).
func (rc *receiver) unchanged(volume string) (uint32, error) {
	if !rc.h.Incremental || rc.force {
		return 0, nil
	}
	var head uint32
	err := rc.s.view(func(t *tx) error {
		var vol volRec
		if err := t.getJSON(volumeKey(volume), &vol); err != nil {
			return nil // the update says why
		}
		base, err := findBase(t, vol, rc.h)
		if err != nil {
			return nil
		}
		if err := snapshotFree(t, volume, rc.h.Snapshot); err != nil {
			return err
		}
		head = vol.Head
		return unchangedSince(t, vol, base, rc.h.BaseName)
	})
	return head, err
}

// unchangedSince fails when vol's live state is not its base snapshot's: its live node is
// not a child of the base's, or holds a version of its own.
func unchangedSince(t *tx, vol volRec, base uint32, baseName string) error {
	changed := fmt.Errorf("%w: volume %q changed since %s@%s, the stream's base; receive --force drops its changes",
		ErrInvalid, vol.Name, vol.Name, baseName)
	item, err := t.txn.Get(nodeKey(vol.Head))
	if err != nil {
		return fmt.Errorf("node %d: %w", vol.Head, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return err
	}
	n, err := decodeNode(v)
	if err != nil || n.parent != base {
		return cmpErr(err, changed)
	}
	errOwn := errors.New("own version")
	err = scanPrefix(t.txn, treePrefix(vol.Tree), false, func(k, _ []byte) error {
		if beUint32(k[len(k)-4:]) == vol.Head {
			return errOwn
		}
		return nil
	})
	if err == errOwn {
		return changed
	}
	return err
}

func snapshotFree(t *tx, volume, name string) error {
	var existing snapRec
	if err := t.getJSON(snapshotKey(volume, name), &existing); err == nil {
		return fmt.Errorf("snapshot %s@%s: %w", volume, name, ErrExists)
	} else if err != ErrNotFound {
		return err
	}
	return nil
}

// run applies the stream batch by batch until its trailer checked out. A goroutine reads and
// prepares the next batches (decoding, hashing, encoding bodies) while one commits, so the CPU
// work overlaps the commit's writes.
func (rc *receiver) run(ctx context.Context) error {
	type batch struct {
		items []item
		done  bool
		err   error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan batch, 2)
	go func() {
		defer close(batches)
		for {
			b := batch{}
			b.items, b.done, b.err = rc.readBatch()
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			if b.done || b.err != nil {
				return
			}
		}
	}()
	// The reader touches the decoder and the counts until it is gone: wait for it.
	defer func() {
		cancel()
		for range batches {
		}
	}()
	for b := range batches {
		if b.err != nil {
			return b.err
		}
		if err := rc.apply(ctx, b.items); err != nil {
			return err
		}
		if b.done {
			return nil
		}
	}
	return ctx.Err()
}

// item is one record to apply; chunk records carry their prepared chunk.
type item struct {
	rec   sendstream.Record
	chunk *Chunk
}

// readBatch reads up to a batch of records, preparing chunk bodies (hash check, encoding)
// outside any transaction.
func (rc *receiver) readBatch() ([]item, bool, error) {
	var batch []item
	bytes := 0
	cs := uint64(rc.h.ChunkSize)
	for len(batch) < recvBatchRecords && bytes < recvBatchBytes {
		rec, err := rc.dec.Next()
		if err == io.EOF {
			if rc.pending != nil {
				return nil, false, fmt.Errorf("%w: the stream's last body is used by no chunk", ErrInvalid)
			}
			return batch, true, nil
		}
		if err != nil {
			return nil, false, err
		}
		if rc.pending != nil && rec.Type != sendstream.TChunk {
			return nil, false, fmt.Errorf("%w: a body not followed by its chunk record", ErrInvalid)
		}
		it := item{rec: rec}
		switch rec.Type {
		case sendstream.TBody:
			if len(rec.Data) > int(cs) {
				return nil, false, fmt.Errorf("%w: a body of %d bytes in a stream of %d-byte chunks", ErrInvalid, len(rec.Data), cs)
			}
			c, err := rc.prepare(rec)
			if err != nil {
				return nil, false, err
			}
			rc.pending = c
			bytes += len(rec.Data)
			continue
		case sendstream.TChunk:
			if rec.Length == 0 || uint64(rec.Length) > cs || rec.Index > (1<<62)/cs {
				return nil, false, fmt.Errorf("%w: chunk %d of %d bytes of inode %d", ErrInvalid, rec.Index, rec.Length, rec.Ino)
			}
			c := &Chunk{Index: rec.Index, hash: rec.Hash, n: int(rec.Length)}
			if p := rc.pending; p != nil {
				if p.hash != rec.Hash || p.n != c.n {
					return nil, false, fmt.Errorf("%w: a chunk record that does not use the body before it", ErrInvalid)
				}
				c.body = p.body // nil: the store holds it
				rc.pending = nil
			}
			it.chunk = c
		case sendstream.TXattr:
			it.rec.Data = append([]byte{}, rec.Data...)
			bytes += len(rec.Data)
		}
		batch = append(batch, it)
	}
	return batch, false, nil
}

// prepare checks a body against its hash and encodes it as the volume stores chunks, unless
// the store holds the chunk already (then it is only checked, and skipped).
func (rc *receiver) prepare(rec sendstream.Record) (*Chunk, error) {
	c := &Chunk{hash: rec.Hash, n: len(rec.Data)}
	var held bool
	if err := rc.s.view(func(t *tx) error {
		_, ok, err := t.getRef(rec.Hash)
		held = ok
		return err
	}); err != nil {
		return nil, err
	}
	if held {
		if blake3.Sum256(rec.Data) != rec.Hash {
			return nil, fmt.Errorf("%w: a chunk body that does not match its hash %x", ErrInvalid, rec.Hash[:8])
		}
		rc.stats.Skipped++
		return c, nil
	}
	body, hash := rc.s.codecs.encode(rc.view.options().Compression, rec.Data)
	if hash != rec.Hash {
		return nil, fmt.Errorf("%w: a chunk body that does not match its hash %x", ErrInvalid, rec.Hash[:8])
	}
	c.body = body // encode returns a new buffer
	return c, nil
}

// apply writes one batch in one transaction of the hidden volume, past the disk guard for
// the bodies it stores.
func (rc *receiver) apply(ctx context.Context, batch []item) error {
	var data int64
	for _, it := range batch {
		if it.chunk != nil && it.chunk.body != nil {
			data += int64(it.chunk.n)
		}
	}
	if err := rc.view.admitData(data); err != nil {
		return err
	}
	var st ReceiveStats
	err := rc.view.write(ctx, func(t *tx) error {
		st = ReceiveStats{}
		for _, it := range batch {
			if err := rc.applyOne(t, it, &st); errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotDir) || errors.Is(err, ErrIsDir) {
				// The stream names what it never made: its fault, not a missing volume's.
				return fmt.Errorf("%w: %s record: %v", ErrInvalid, it.rec.Type, err)
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		rc.stats.Inodes += st.Inodes
		rc.stats.Chunks += st.Chunks
		rc.stats.Bodies += st.Bodies
		rc.stats.BodyBytes += st.BodyBytes
	}
	return err
}

func (rc *receiver) applyOne(t *tx, it item, st *ReceiveStats) error {
	r := it.rec
	switch r.Type {
	case sendstream.TInode:
		st.Inodes++
		return rc.putInode(t, r.Inode)
	case sendstream.TDirent:
		if err := checkName(r.Name); err != nil {
			return err
		}
		if r.Ino == 0 || r.Dir == 0 || !validType(r.Kind) {
			return fmt.Errorf("%w: directory entry %q of inode %d", ErrInvalid, r.Name, r.Dir)
		}
		// The entry's type must be its inode's: fsck's tree check walks directories by the
		// entries' types, so a lying one could hide a directory cycle from it.
		if _, err := t.dir(Ino(r.Dir)); err != nil {
			return err
		}
		child, err := t.getInode(Ino(r.Ino))
		if err != nil {
			return err
		}
		if child.Mode&syscall.S_IFMT != r.Kind&syscall.S_IFMT {
			return fmt.Errorf("%w: directory entry %q of type %o for inode %d of mode %o", ErrInvalid, r.Name, r.Kind, r.Ino, child.Mode)
		}
		return t.put(direntLKey(t.tree, Ino(r.Dir), r.Name), encodeDirent(Ino(r.Ino), r.Kind&syscall.S_IFMT))
	case sendstream.TXattr:
		if _, err := t.getInode(Ino(r.Ino)); err != nil {
			return err
		}
		return t.put(xattrLKey(t.tree, Ino(r.Ino), r.Name), append([]byte{tagLive}, r.Data...))
	case sendstream.TChunk:
		st.Chunks++
		if it.chunk.body != nil {
			st.Bodies++
			st.BodyBytes += int64(it.chunk.n)
		}
		return rc.setChunk(t, Ino(r.Ino), it.chunk)
	case sendstream.THole:
		return rc.setChunk(t, Ino(r.Ino), &Chunk{Index: r.Index, zero: true})
	case sendstream.TUnlink:
		return t.remove(direntLKey(t.tree, Ino(r.Dir), r.Name))
	case sendstream.TRemoveXattr:
		return t.remove(xattrLKey(t.tree, Ino(r.Ino), r.Name))
	case sendstream.TRemoveInode:
		return rc.removeInode(t, Ino(r.Ino))
	}
	return fmt.Errorf("%w: unexpected %s record", ErrInvalid, r.Type)
}

func validType(mode uint32) bool {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		return true
	}
	return false
}

// putInode writes an inode's attributes, keeping what the store accounts itself (allocation,
// extents: received files have none).
func (rc *receiver) putInode(t *tx, in sendstream.Inode) error {
	if in.Ino == 0 || !validType(in.Mode) || in.Nlink == 0 {
		return fmt.Errorf("%w: inode %d of mode %o and %d links", ErrInvalid, in.Ino, in.Mode, in.Nlink)
	}
	if in.Ino == uint64(RootIno) && !isDir(in.Mode) {
		return fmt.Errorf("%w: a root that is not a directory", ErrInvalid)
	}
	isLink := in.Mode&syscall.S_IFMT == syscall.S_IFLNK
	if isLink != (in.Target != "") {
		return fmt.Errorf("%w: inode %d of mode %o with a %d-byte target", ErrInvalid, in.Ino, in.Mode, len(in.Target))
	}
	n := &inode{Attr: Attr{Ino: Ino(in.Ino), Mode: in.Mode, UID: in.UID, GID: in.GID, Size: in.Size, Nlink: in.Nlink,
		Rdev: in.Rdev, Atime: in.Atime, Mtime: in.Mtime, Ctime: in.Ctime, Gen: in.Gen}, parent: Ino(in.Parent), target: in.Target}
	old, err := t.getInode(n.Ino)
	switch {
	case errors.Is(err, ErrNotFound):
		if err := t.addUsage(t.node, 0, 1); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if old.Mode&syscall.S_IFMT != n.Mode&syscall.S_IFMT {
			return fmt.Errorf("%w: inode %d changes type", ErrInvalid, n.Ino)
		}
		n.alloc, n.extents = old.alloc, old.extents
	}
	return t.putInode(n)
}

// setChunk points a chunk of a regular file at c (zero: a hole), with refcounts, allocation
// and the volume's quota kept. A chunk without a body must be one the store holds.
func (rc *receiver) setChunk(t *tx, ino Ino, c *Chunk) error {
	n, err := t.regular(ino)
	if err != nil {
		return err
	}
	if !c.zero && c.Index*uint64(rc.h.ChunkSize) >= n.Size {
		return fmt.Errorf("%w: chunk %d of inode %d lies past its size %d", ErrInvalid, c.Index, ino, n.Size)
	}
	if !c.zero && c.body == nil {
		r, ok, err := t.getRef(c.hash)
		if err != nil {
			return err
		}
		if !ok || int(r.plain) != c.n {
			return fmt.Errorf("%w: the stream uses chunk %x, which neither it nor this store holds", ErrInvalid, c.hash[:8])
		}
	}
	delta, err := t.setChunk(n, c.Index, c)
	if err != nil {
		return err
	}
	if err := rc.view.checkQuota(t, delta); err != nil {
		return err
	}
	return t.account(n, delta)
}

// removeInode drops an inode and everything the hidden volume sees of it.
func (rc *receiver) removeInode(t *tx, ino Ino) error {
	n, err := t.getInode(ino)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil || ino == RootIno {
		return cmpErr(err, fmt.Errorf("%w: removal of the root", ErrInvalid))
	}
	var delta int64
	var chunks []uint64
	if err := t.scanVisible(metaKind(t.tree, kChunk, ino), func(lkey []byte, ver version) error {
		if ver.live() {
			chunks = append(chunks, beUint64(lkey[len(lkey)-8:]))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, idx := range chunks {
		d, err := t.setChunk(n, idx, nil)
		if err != nil {
			return err
		}
		delta += d
	}
	for _, kind := range []byte{kXattr, kDirent} {
		var keys [][]byte
		if err := t.scanVisible(metaKind(t.tree, kind, ino), func(lkey []byte, ver version) error {
			if ver.live() {
				keys = append(keys, lkey)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := t.remove(k); err != nil {
				return err
			}
		}
	}
	if err := t.account(n, delta); err != nil {
		return err
	}
	if err := t.remove(inodeLKey(t.tree, ino)); err != nil {
		return err
	}
	return t.addUsage(t.node, -int64(n.alloc), -1)
}

func cmpErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// check runs fsck's check of a volume's tree (checkView: entries point at inodes, link counts,
// reachability, allocation, usage; no chunk bodies) on the hidden volume: a stream that checked
// out may still describe a tree that is not one, and such a volume is never made visible.
func (rc *receiver) check() error {
	s := rc.s
	f := &fsckState{rep: &FsckReport{}, nodes: map[uint32]nodeRec{}, refs: map[Hash]uint64{}, bad: map[Hash]string{},
		dead: map[Hash]bool{}, usage: map[uint32]Usage{}}
	s.mu.RLock()
	for id, n := range s.nodes {
		f.nodes[id] = n
	}
	s.mu.RUnlock()
	err := s.view(func(t *tx) error {
		var rec volRec
		if err := t.getJSON(volumeKey(rc.hidden), &rec); err != nil {
			return fmt.Errorf("hidden volume %q: %w", rc.hidden, err)
		}
		return f.checkView(t, rec, rec.Head, "stream")
	})
	if err != nil {
		return err
	}
	if p := f.rep.Problems; len(p) > 0 {
		return fmt.Errorf("%w: the stream describes a tree with %d problems, the first: %s", ErrInvalid, len(p), p[0])
	}
	return nil
}

// finish makes the received snapshot visible in one transaction.
func (rc *receiver) finish(ctx context.Context, volume string) error {
	s, h := rc.s, rc.h
	return s.update(ctx, func(t *tx) error {
		var hid volRec
		if err := t.getJSON(volumeKey(rc.hidden), &hid); err != nil {
			return fmt.Errorf("hidden volume %q: %w", rc.hidden, err)
		}
		if err := rc.raiseInodeCounter(t, hid.Tree); err != nil {
			return err
		}
		snap := snapRec{CreatedAt: time.Unix(0, h.Created).UTC(), Node: hid.Head}
		rec := hid
		if h.Incremental {
			if err := t.getJSON(volumeKey(volume), &rec); err != nil {
				return fmt.Errorf("volume %q: %w", volume, err)
			}
			if base, err := findBase(t, rec, h); err != nil || base != rc.base {
				return cmpErr(err, fmt.Errorf("%w: volume %q's base snapshot changed during the receive", ErrInvalid, volume))
			}
			if err := s.voidVolumeIn(t, rec.ID); err != nil {
				return err
			}
		} else {
			var existing volRec
			if err := t.getJSON(volumeKey(volume), &existing); err == nil {
				return fmt.Errorf("volume %q: %w", volume, ErrExists)
			} else if err != ErrNotFound {
				return err
			}
			rec.Name = volume
		}
		if err := snapshotFree(t, volume, h.Snapshot); err != nil {
			return err
		}
		if err := t.setJSON(snapshotKey(volume, h.Snapshot), snap); err != nil {
			return err
		}
		if err := t.set(sendIDKey(hid.Head), []byte(h.SnapshotID)); err != nil {
			return err
		}
		head, err := t.newNode(hid.Tree, hid.Head)
		if err != nil {
			return err
		}
		if err := copyUsage(t, hid.Head, head); err != nil {
			return err
		}
		rec.Head = head
		if err := s.deleteVolumeIn(t, rc.hidden); err != nil {
			return err
		}
		return s.putVolume(t, &rec)
	})
}

// raiseInodeCounter makes the tree allocate above every inode number of the stream.
func (rc *receiver) raiseInodeCounter(t *tx, tree uint32) error {
	item, err := t.txn.Get(treeKey(tree))
	if err != nil {
		return fmt.Errorf("inode counter of tree %d: %w", tree, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil || len(v) != 8 {
		return cmpErr(err, fmt.Errorf("%w: bad inode counter", ErrCorrupt))
	}
	if beUint64(v) >= rc.h.NextIno {
		return nil
	}
	return t.set(treeKey(tree), beAppend64(nil, rc.h.NextIno))
}
