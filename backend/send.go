package backend

// Send and receive (volctl send / receive): a snapshot as a sendstream, and back.
//
// What a stream holds is what a snapshot's view sees, key by key: the scan of the snapshot tree
// at the snapshot's node (scanVisible over the tree) gives every visible version, and a
// version is part of an incremental stream from an older snapshot F exactly when its node is
// not one of F's ancestors: versions F sees are the same for both (snapshots are views, and a
// later snapshot of the same volume descends from F), so nothing needs comparing by content.
// That is also why DiffViews' walk is not used here: it compares files by size and mtime and
// directories by mode and owner, so it misses changes of xattrs, times and directory
// attributes, which a replica must carry.
//
// The stream carries each file's content, never the store's encoding of it: a chunk with
// extents is sent merged (as its own content-addressed chunk), so a received volume holds no
// extents and its allocation is the sender's (an extent costs its chunk's merged length).
// Orphans (nlink 0) are left out. Inode numbers are kept, so an incremental stream names the
// inodes of the received base.
//
// The scans go kind by kind (send), so that an inode's record comes before its chunks and
// xattrs although the key order puts chunk maps first, and write each record as they find it:
// a sender keeps the set of bodies it sent (32 bytes each) and little else.
//
// Identity of a snapshot for incremental streams: the node ID of a snapshot is stable while
// it exists, so the sender names a snapshot "volume ID/node". A received snapshot keeps the
// identity it was sent under, in the key I node (sendIDKey, keys.go), so that it can in turn be
// the base of streams sent on from the receiving store. Such a key outlives its snapshot's
// deletion as a few bytes of garbage: node IDs are never handed out twice.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"syscall"

	"github.com/zeebo/blake3"

	"github.com/fusevol/fusevol/backend/sendstream"
)

// SendStats is what Send wrote.
type SendStats struct {
	Inodes    int64 // inode records
	Chunks    int64 // chunk-map entries
	Bodies    int64 // chunk bodies (each once per stream)
	BodyBytes int64 // plain bytes of those bodies
	Bytes     int64 // stream bytes
}

// Send writes snapshot volume@snapshot to w as a sendstream (package sendstream); with from
// set, only what changed since the older snapshot volume@from, and only the chunk bodies that
// volume@from does not hold. The stream ends with its trailer only when everything was sent:
// a failed Send leaves w with a stream every receiver refuses.
func (s *Store) Send(ctx context.Context, w io.Writer, volume, snapshot, from string) (SendStats, error) {
	sn, err := s.newSender(volume, snapshot, from)
	if err != nil {
		return SendStats{}, err
	}
	enc, err := sendstream.NewEncoder(w, sn.header)
	if err != nil {
		return SendStats{}, err
	}
	sn.enc = enc
	if err := sn.send(ctx); err != nil {
		return sn.stats, fmt.Errorf("send %s@%s: %w", volume, snapshot, err)
	}
	if err := enc.Close(); err != nil {
		return sn.stats, fmt.Errorf("send %s@%s: %w", volume, snapshot, err)
	}
	sn.stats.Bytes = int64(enc.Counts().Bytes)
	return sn.stats, nil
}

// sender is one Send.
type sender struct {
	s       *Store
	view    *View    // the snapshot sent
	fromAnc []uint32 // the base snapshot's node and ancestors (nil: a full stream)
	from    *View
	header  sendstream.Header
	enc     *sendstream.Encoder
	sent    map[Hash]bool // bodies in the stream, or (incremental) held by the base
	stats   SendStats
}

func (s *Store) newSender(volume, snapshot, from string) (*sender, error) {
	var rec volRec
	var snap, base snapRec
	var next uint64
	var snapID, baseID string
	err := s.view(func(t *tx) error {
		if err := t.getJSON(volumeKey(volume), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", volume, err)
		}
		var err error
		if snapID, err = snapshotID(t, rec, snapshot, &snap); err != nil {
			return err
		}
		if from != "" {
			if baseID, err = snapshotID(t, rec, from, &base); err != nil {
				return err
			}
		}
		item, err := t.txn.Get(treeKey(rec.Tree))
		if err != nil {
			return fmt.Errorf("inode counter of tree %d: %w", rec.Tree, err)
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: bad inode counter", ErrCorrupt)
			}
			next = beUint64(v)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	o := rec.Options
	sn := &sender{s: s, sent: map[Hash]bool{},
		view: &View{s: s, info: rec.info(), tree: rec.Tree, snapNode: snap.Node, snapName: snapshot},
		header: sendstream.Header{ChunkSize: uint32(o.ChunkSize), NextIno: next, Created: snap.CreatedAt.UnixNano(),
			Quota: uint64(o.Size), UID: o.UID, GID: o.GID, Mode: o.Mode, Volume: volume, Snapshot: snapshot,
			SnapshotID: snapID, Compression: o.Compression}}
	if from == "" {
		return sn, nil
	}
	s.mu.RLock()
	anc := s.ancestorsLocked(snap.Node)
	sn.fromAnc = s.ancestorsLocked(base.Node)
	s.mu.RUnlock()
	if base.Node == snap.Node || !contains(anc, base.Node) {
		return nil, fmt.Errorf("%w: %s@%s is not an older snapshot of %s@%s (an incremental stream needs the base's history)",
			ErrInvalid, volume, from, volume, snapshot)
	}
	sn.from = &View{s: s, info: rec.info(), tree: rec.Tree, snapNode: base.Node, snapName: from}
	sn.header.Incremental, sn.header.BaseName, sn.header.BaseID = true, from, baseID
	return sn, nil
}

// snapshotID reads snapshot volume@name into snap and returns its identity.
func snapshotID(t *tx, rec volRec, name string, snap *snapRec) (string, error) {
	if err := t.getJSON(snapshotKey(rec.Name, name), snap); err != nil {
		return "", fmt.Errorf("snapshot %s@%s: %w", rec.Name, name, err)
	}
	item, err := t.txn.Get(sendIDKey(snap.Node))
	if err != nil {
		return fmt.Sprintf("%s/%d", rec.ID, snap.Node), nil
	}
	v, err := item.ValueCopy(nil)
	return string(v), err
}

func contains(s []uint32, n uint32) bool {
	for _, x := range s {
		if x == n {
			return true
		}
	}
	return false
}

// send streams the changes kind by kind, each scan in one read transaction and each record
// written as the scan finds it: inodes first (the receiver needs an inode before its chunks
// and xattrs), then entries, xattrs and chunks. What the scans keep is small: the inodes the
// snapshot does not have any more, those with extents, and the chunks of those to merge.
func (sn *sender) send(ctx context.Context) error {
	if sn.from != nil {
		if err := sn.baseBodies(); err != nil {
			return err
		}
	}
	gone := map[Ino]bool{}    // removed or orphaned: nothing of them is sent
	withExt := map[Ino]bool{} // chunks with extents are sent merged, after the scans
	enc := sn.enc
	err := sn.scanKind(ctx, kInode, func(m metaKey, ver version) error {
		var n *inode
		if ver.live() {
			var err error
			if n, err = decodeInode(m.ino, ver.val); err != nil {
				return err
			}
		}
		if n == nil || n.Nlink == 0 {
			gone[m.ino] = true
			if sn.from == nil {
				return nil // a full stream leaves orphans out
			}
			return enc.RemoveInode(uint64(m.ino))
		}
		if n.extents > 0 {
			withExt[m.ino] = true
		}
		sn.stats.Inodes++
		return enc.Inode(sendstream.Inode{Ino: uint64(m.ino), Mode: n.Mode, UID: n.UID, GID: n.GID, Nlink: n.Nlink,
			Rdev: n.Rdev, Size: n.Size, Atime: n.Atime, Mtime: n.Mtime, Ctime: n.Ctime, Gen: n.Gen,
			Parent: uint64(n.parent), Target: n.target})
	})
	if err != nil {
		return err
	}
	err = sn.scanKind(ctx, kDirent, func(m metaKey, ver version) error {
		if !ver.live() {
			return enc.Unlink(uint64(m.ino), m.name)
		}
		ino, typ, err := decodeDirent(ver.val)
		if err != nil {
			return err
		}
		return enc.Dirent(uint64(m.ino), m.name, uint64(ino), typ)
	})
	if err != nil {
		return err
	}
	err = sn.scanKind(ctx, kXattr, func(m metaKey, ver version) error {
		switch {
		case gone[m.ino]:
			return nil // RemoveInode takes them
		case !ver.live():
			return enc.RemoveXattr(uint64(m.ino), m.name)
		}
		return enc.Xattr(uint64(m.ino), m.name, ver.val[1:])
	})
	if err != nil {
		return err
	}
	return sn.sendChunks(ctx, gone, withExt)
}

// sendChunks sends the chunks whose map entry changed, then those of files with extents
// whose map entry or extents changed, merged.
func (sn *sender) sendChunks(ctx context.Context, gone, withExt map[Ino]bool) error {
	buf := make([]byte, sn.view.ChunkSize())
	merged := map[Ino]map[uint64]bool{}
	mark := func(m metaKey, ver version) error {
		if gone[m.ino] {
			return nil
		}
		if withExt[m.ino] || m.kind == kExtent {
			if merged[m.ino] == nil {
				merged[m.ino] = map[uint64]bool{}
			}
			merged[m.ino][m.index] = true
			return nil
		}
		return sn.sendSlot(m.ino, m.index, buf)
	}
	if err := sn.scanKind(ctx, kChunk, mark); err != nil {
		return err
	}
	if err := sn.scanKind(ctx, kExtent, mark); err != nil {
		return err
	}
	inos := make([]Ino, 0, len(merged))
	for ino := range merged {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		idx := make([]uint64, 0, len(merged[ino]))
		for i := range merged[ino] {
			idx = append(idx, i)
		}
		sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
		for _, index := range idx {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := sn.sendSlot(ino, index, buf); err != nil {
				return err
			}
		}
	}
	return nil
}

// unchanged reports whether a version at node is one the base sees too.
func (sn *sender) unchanged(node uint32) bool { return sn.fromAnc != nil && contains(sn.fromAnc, node) }

// scanKind calls fn, in one read transaction of the snapshot, for every visible version of the
// metadata of one kind that the base does not see (whiteouts only for an incremental stream).
func (sn *sender) scanKind(ctx context.Context, kind byte, fn func(metaKey, version) error) error {
	return sn.view.read(func(t *tx) error {
		n := 0
		return t.scanVisible(append(treePrefix(t.tree), kind), func(lkey []byte, ver version) error {
			if sn.unchanged(ver.node) || !ver.live() && sn.fromAnc == nil {
				return nil
			}
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			m, err := parseMetaKey(append(lkey, 0, 0, 0, 0))
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			return fn(m, ver)
		})
	})
}

// baseBodies marks as sent the bodies the base holds as chunk-map entries of chunks without
// extents, of inodes it has links to: a receiver of the base holds exactly those (it received
// chunks with extents merged, and no orphans; an orphan's chunks may be gone from it).
func (sn *sender) baseBodies() error {
	withExt := map[[2]uint64]bool{}
	orphans := map[uint64]bool{}
	return sn.from.read(func(t *tx) error {
		iprefix := append(treePrefix(t.tree), kInode)
		if err := t.scanVisible(iprefix, func(lkey []byte, ver version) error {
			ino := beUint64(lkey[len(iprefix):])
			if !ver.live() {
				return nil // its chunk maps went with it
			}
			n, err := decodeInode(Ino(ino), ver.val)
			if err == nil && n.Nlink == 0 {
				orphans[ino] = true
			}
			return err
		}); err != nil {
			return err
		}
		eprefix := append(treePrefix(t.tree), kExtent)
		if err := t.scanVisible(eprefix, func(lkey []byte, ver version) error {
			if ver.live() {
				withExt[[2]uint64{beUint64(lkey[len(eprefix):]), beUint64(lkey[len(eprefix)+8:])}] = true
			}
			return nil
		}); err != nil {
			return err
		}
		cprefix := append(treePrefix(t.tree), kChunk)
		return t.scanVisible(cprefix, func(lkey []byte, ver version) error {
			ino := beUint64(lkey[len(cprefix):])
			if !ver.live() || orphans[ino] || withExt[[2]uint64{ino, beUint64(lkey[len(cprefix)+8:])}] {
				return nil
			}
			r, err := decodeChunkRef(ver.val)
			if err == nil {
				sn.sent[r.hash] = true
			}
			return err
		})
	})
}

// sendSlot sends chunk index of ino as the snapshot sees it: merged with its extents, a
// hole, or nothing when the inode is gone.
func (sn *sender) sendSlot(ino Ino, index uint64, buf []byte) error {
	var data []byte
	var ref *chunkRef
	gone := false
	err := sn.view.read(func(t *tx) error {
		n, err := t.getInode(ino)
		if errorsIsNotFound(err) || err == nil && (n.Nlink == 0 || n.Mode&syscall.S_IFMT != syscall.S_IFREG) {
			gone = true
			return nil
		}
		if err != nil {
			return err
		}
		if n.extents == 0 {
			if ref, _, err = t.getChunk(ino, index); err != nil || ref == nil || sn.sent[ref.hash] {
				return err
			}
			if err := t.readBody(ref, buf); err != nil {
				return fmt.Errorf("inode %d chunk %d: %w", ino, index, err)
			}
			data = buf[:ref.n]
			return nil
		}
		l, err := sn.view.readChunk(t, n, index, buf)
		if err != nil || l == 0 {
			return err
		}
		data = buf[:l]
		ref = &chunkRef{hash: blake3.Sum256(data), n: uint32(l)}
		return nil
	})
	switch {
	case err != nil || gone:
		return err
	case ref == nil:
		return sn.enc.Hole(uint64(ino), index)
	}
	if !sn.sent[ref.hash] {
		sn.sent[ref.hash] = true
		sn.stats.Bodies++
		sn.stats.BodyBytes += int64(len(data))
		if err := sn.enc.Body(ref.hash, data); err != nil {
			return err
		}
	}
	sn.stats.Chunks++
	return sn.enc.Chunk(uint64(ino), index, ref.hash, ref.n)
}

func errorsIsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
