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
// The scan collects what changed (for a full stream: everything) before sending, because the
// receiver needs an inode's record before its chunks and the key order puts chunk maps first:
// memory of the order of 100 bytes per inode, entry, xattr (with its value) and chunk sent.
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

// changes is what a stream carries, as found by scanning the snapshot's view.
type changes struct {
	inodes  []Ino            // inode keys that changed (sent, or removed when gone or orphaned)
	dirents []sendDirent     // live entries
	unlinks []sendDirent     // entries whited out
	xattrs  []sendXattr      // set (value != nil) or removed
	slots   map[Ino][]uint64 // chunks whose map entry or extents changed
}

type sendDirent struct {
	dir  Ino
	name string
	ino  Ino
	typ  uint32
}

type sendXattr struct {
	ino   Ino
	name  string
	value []byte
}

func (sn *sender) send(ctx context.Context) error {
	ch, err := sn.scan()
	if err != nil {
		return err
	}
	if sn.from != nil {
		if err := sn.baseBodies(); err != nil {
			return err
		}
	}
	enc := sn.enc
	for _, d := range ch.unlinks {
		if err := enc.Unlink(uint64(d.dir), d.name); err != nil {
			return err
		}
	}
	linked := map[Ino]bool{}
	var removed []Ino
	for _, ino := range ch.inodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		a, target, err := sn.inode(ino)
		if err != nil {
			return err
		}
		if a == nil {
			removed = append(removed, ino)
			continue
		}
		linked[ino] = true
		sn.stats.Inodes++
		if err := enc.Inode(sendstream.Inode{Ino: uint64(ino), Mode: a.Mode, UID: a.UID, GID: a.GID, Nlink: a.Nlink,
			Rdev: a.Rdev, Size: a.Size, Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime, Gen: a.Gen,
			Parent: uint64(a.parent), Target: target}); err != nil {
			return err
		}
	}
	for _, d := range ch.dirents {
		if err := enc.Dirent(uint64(d.dir), d.name, uint64(d.ino), d.typ); err != nil {
			return err
		}
	}
	gone := map[Ino]bool{}
	for _, ino := range removed {
		gone[ino] = true
	}
	for _, x := range ch.xattrs {
		if gone[x.ino] {
			continue // RemoveInode takes them
		}
		if x.value == nil {
			err = enc.RemoveXattr(uint64(x.ino), x.name)
		} else {
			err = enc.Xattr(uint64(x.ino), x.name, x.value)
		}
		if err != nil {
			return err
		}
	}
	if err := sn.sendSlots(ctx, ch.slots, linked); err != nil {
		return err
	}
	for _, ino := range removed {
		if sn.from == nil {
			break // orphans: a full stream leaves them out
		}
		if err := enc.RemoveInode(uint64(ino)); err != nil {
			return err
		}
	}
	return nil
}

// unchanged reports whether a version at node is one the base sees too.
func (sn *sender) unchanged(node uint32) bool { return sn.fromAnc != nil && contains(sn.fromAnc, node) }

// scan collects every visible version of the snapshot's tree that the base does not see.
func (sn *sender) scan() (*changes, error) {
	ch := &changes{slots: map[Ino][]uint64{}}
	seenSlot := map[[2]uint64]bool{}
	err := sn.view.read(func(t *tx) error {
		return t.scanVisible(treePrefix(t.tree), func(lkey []byte, ver version) error {
			if sn.unchanged(ver.node) {
				return nil
			}
			m, err := parseMetaKey(append(lkey, 0, 0, 0, 0))
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			if !ver.live() && sn.fromAnc == nil {
				return nil // a full stream has no base to remove anything from
			}
			switch m.kind {
			case kInode:
				ch.inodes = append(ch.inodes, m.ino)
			case kDirent:
				d := sendDirent{dir: m.ino, name: m.name}
				if !ver.live() {
					ch.unlinks = append(ch.unlinks, d)
					return nil
				}
				if d.ino, d.typ, err = decodeDirent(ver.val); err != nil {
					return err
				}
				ch.dirents = append(ch.dirents, d)
			case kXattr:
				x := sendXattr{ino: m.ino, name: m.name}
				if ver.live() {
					x.value = ver.val[1:]
				}
				ch.xattrs = append(ch.xattrs, x)
			case kChunk, kExtent:
				if k := [2]uint64{uint64(m.ino), m.index}; !seenSlot[k] {
					seenSlot[k] = true
					ch.slots[m.ino] = append(ch.slots[m.ino], m.index)
				}
			}
			return nil
		})
	})
	return ch, err
}

// inode returns ino's inode in the snapshot, nil when it is gone or an orphan.
func (sn *sender) inode(ino Ino) (*inode, string, error) {
	var n *inode
	err := sn.view.read(func(t *tx) error {
		var err error
		n, err = t.getInode(ino)
		if errorsIsNotFound(err) {
			n, err = nil, nil
		}
		return err
	})
	if err != nil || n == nil || n.Nlink == 0 {
		return nil, "", err
	}
	return n, n.target, nil
}

// baseBodies marks as sent the bodies the base holds as chunk-map entries of chunks without
// extents: a receiver of the base holds exactly those (it received chunks with extents merged).
func (sn *sender) baseBodies() error {
	withExt := map[[2]uint64]bool{}
	return sn.from.read(func(t *tx) error {
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
			if !ver.live() || withExt[[2]uint64{beUint64(lkey[len(cprefix):]), beUint64(lkey[len(cprefix)+8:])}] {
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

// sendSlots sends the chunks of linked regular files whose content changed, each body the
// receiver may lack once.
func (sn *sender) sendSlots(ctx context.Context, slots map[Ino][]uint64, linked map[Ino]bool) error {
	inos := make([]Ino, 0, len(slots))
	for ino := range slots {
		if linked[ino] || sn.from != nil {
			inos = append(inos, ino)
		}
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	buf := make([]byte, sn.view.ChunkSize())
	for _, ino := range inos {
		idx := slots[ino]
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
