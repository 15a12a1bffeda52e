package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// fsckState is what one pass over the store gathers.
type fsckState struct {
	rep   *FsckReport
	nodes map[uint32]nodeRec
	vols  []volRec
	snaps map[string]map[string]snapRec // volume -> name -> record
	refs  map[Hash]uint64               // chunk-map versions counted per hash
	bad   map[Hash]string               // chunks missing or not matching their hash
	dead  map[Hash]bool                 // chunks with a dead-body marker
	usage map[uint32]Usage              // recomputed usage of each checked node
	cut   bool                          // a pass stopped early (runStep) or a table is damaged
	// strays are schedule keys of volumes that do not exist, which repair deletes.
	strays [][]byte
}

func (f *fsckState) problem(format string, a ...any) {
	f.rep.Problems = append(f.rep.Problems, fmt.Sprintf(format, a...))
}

// damaged names a file (or a directory whose entries cannot be read) that reads fail on.
func (f *fsckState) damaged(label, path string, format string, a ...any) {
	f.rep.Damaged = append(f.rep.Damaged, label+":"+path)
	f.problem("%s:%s: %s", label, path, fmt.Sprintf(format, a...))
}

// guardItem runs one check with a panic of the storage engine returned as ErrCorrupt, so
// that fsck goes on with the next item.
func guardItem(t *tx, what string, fn func() error) (err error) {
	defer t.s.recoverInto("fsck "+what, &err)
	return fn()
}

// runStep runs one pass of fsck. A pass that fails or panics (damaged files: see damage.go) is
// a problem, not the end of fsck: the passes after it still run, and their findings stand;
// only repair, which needs every count, is off.
func (f *fsckState) runStep(t *tx, name string, run func(*tx) error) {
	if err := guardItem(t, name, func() error { return run(t) }); err != nil {
		f.cut = true
		f.problem("fsck: the %s pass stopped early, what it had left was not checked: %v", name, err)
	}
}

// Fsck checks every invariant listed in the package doc. With repair it fixes refcounts,
// unreferenced bodies, usage counters and orphans; structural damage is only reported. Fsck with
// repair holds the write lock throughout, so the volume tree cannot change under it.
func (s *Store) Fsck(ctx context.Context, repair bool) (*FsckReport, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if repair {
		if err := s.reclaimAllOrphans(ctx, nil); err != nil {
			return nil, err
		}
		s.wmu.Lock()
		defer s.wmu.Unlock()
	}
	f := &fsckState{rep: &FsckReport{}, nodes: map[uint32]nodeRec{}, snaps: map[string]map[string]snapRec{},
		refs: map[Hash]uint64{}, bad: map[Hash]string{}, dead: map[Hash]bool{}, usage: map[uint32]Usage{}}
	steps := []struct {
		name string
		run  func(*tx) error
	}{{"records", f.loadRecords}, {"snapshot tree", f.checkTree}, {"references", f.countRefs},
		{"chunks", f.checkChunks}, {"volumes", f.checkViews}, {"intent-log marks", s.checkLogMarks(f)},
		{"schedules", f.checkSchedules}, {"tables", f.checkTables}}
	err := s.view(func(t *tx) error {
		for _, st := range steps {
			if err := ctx.Err(); err != nil {
				return err
			}
			f.runStep(t, st.name, st.run)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	if repair && f.cut {
		f.problem("not repaired: a pass did not finish or a table is damaged, so the counts cannot be trusted")
	} else if repair && !f.rep.Clean() {
		if err := s.updateLocked(ctx, f.repair); err != nil {
			return f.rep, fmt.Errorf("fsck repair: %w", err)
		}
	}
	sort.Strings(f.rep.Damaged)
	f.rep.Damaged = slices.Compact(f.rep.Damaged) // a file can be met twice (its entry, its inode)
	return f.rep, nil
}

func (f *fsckState) loadRecords(t *tx) error {
	if err := scanPrefix(t.txn, []byte{pNode}, true, func(k, v []byte) error {
		n, err := decodeNode(v)
		if err != nil {
			f.problem("node %x: %v", k[1:], err)
			return nil
		}
		f.nodes[beUint32(k[1:])] = n
		return nil
	}); err != nil {
		return err
	}
	if err := scanPrefix(t.txn, []byte{pVolume}, true, func(k, v []byte) error {
		var r volRec
		if err := jsonDecode(v, &r); err != nil {
			f.problem("volume record %q: %v", k[1:], err)
			return nil
		}
		f.vols = append(f.vols, r)
		return nil
	}); err != nil {
		return err
	}
	return scanPrefix(t.txn, []byte{pSnapshot}, true, func(k, v []byte) error {
		vol, name, _ := strings.Cut(string(k[1:]), "\x00")
		var r snapRec
		if err := jsonDecode(v, &r); err != nil {
			f.problem("snapshot record %s@%s: %v", vol, name, err)
			return nil
		}
		if f.snaps[vol] == nil {
			f.snaps[vol] = map[string]snapRec{}
		}
		f.snaps[vol][name] = r
		return nil
	})
}

// checkTree verifies the snapshot tree: parents exist with larger IDs in the same tree, volume live
// nodes are leaves, snapshots point at nodes of their volume's tree.
func (f *fsckState) checkTree(t *tx) error {
	children := map[uint32]int{}
	for id, n := range f.nodes {
		if n.parent == 0 {
			continue
		}
		children[n.parent]++
		p, ok := f.nodes[n.parent]
		switch {
		case !ok:
			f.problem("snapshot node %d: parent %d does not exist", id, n.parent)
		case n.parent <= id:
			f.problem("snapshot node %d: parent %d does not have a larger ID", id, n.parent)
		case p.tree != n.tree:
			f.problem("snapshot node %d: parent %d is in another tree", id, n.parent)
		}
	}
	for _, v := range f.vols {
		n, ok := f.nodes[v.Head]
		switch {
		case !ok:
			f.problem("volume %q: live node %d does not exist", v.Name, v.Head)
		case n.tree != v.Tree:
			f.problem("volume %q: live node %d is in another tree", v.Name, v.Head)
		case children[v.Head] > 0:
			f.problem("volume %q: live node %d has children", v.Name, v.Head)
		}
	}
	for vol, snaps := range f.snaps {
		var tree uint32
		for _, v := range f.vols {
			if v.Name == vol {
				tree = v.Tree
			}
		}
		for name, sn := range snaps {
			n, ok := f.nodes[sn.Node]
			switch {
			case tree == 0:
				f.problem("snapshot %s@%s: volume does not exist", vol, name)
			case !ok:
				f.problem("snapshot %s@%s: node %d does not exist", vol, name, sn.Node)
			case n.tree != tree:
				f.problem("snapshot %s@%s: node %d is in another tree", vol, name, sn.Node)
			}
		}
	}
	return nil
}

// countRefs counts chunk-map versions per chunk and checks every metadata key decodes and belongs
// to a known node.
func (f *fsckState) countRefs(t *tx) error {
	return scanPrefix(t.txn, []byte{pMeta}, true, func(k, v []byte) error {
		m, err := parseMetaKey(k)
		if err != nil {
			f.problem("metadata key: %v", err)
			return nil
		}
		if n, ok := f.nodes[m.node]; !ok || n.tree != m.tree {
			f.problem("metadata key %x: node %d is not in tree %d", k, m.node, m.tree)
		}
		if m.kind == kChunk && len(v) > 0 && v[0] == tagLive {
			ref, err := decodeChunkRef(v)
			if err != nil {
				f.problem("chunk map of inode %d: %v", m.ino, err)
				return nil
			}
			f.refs[ref.hash]++
		}
		return nil
	})
}

// checkChunks compares refcounts with references and verifies every body against its hash.
func (f *fsckState) checkChunks(t *tx) error {
	seen := map[Hash]bool{}
	if err := scanPrefix(t.txn, []byte{pRef}, true, func(k, v []byte) error {
		var h Hash
		copy(h[:], k[1:])
		seen[h] = true
		r, err := decodeRef(v)
		if err != nil {
			f.problem("refcount of chunk %x: %v", h[:8], err)
			return nil
		}
		if r.count != f.refs[h] {
			f.problem("chunk %x: refcount %d, but %d references", h[:8], r.count, f.refs[h])
		}
		return nil
	}); err != nil {
		return err
	}
	for h, n := range f.refs {
		if !seen[h] {
			f.problem("chunk %x: %d references but no refcount", h[:8], n)
		}
	}
	if err := scanPrefix(t.txn, []byte{pDead}, false, func(k, _ []byte) error {
		var h Hash
		copy(h[:], k[1:])
		f.dead[h] = true
		if seen[h] {
			f.problem("chunk %x: has a refcount and a dead-body marker", h[:8])
		}
		return nil
	}); err != nil {
		return err
	}
	bodies := map[Hash]bool{}
	buf := make([]byte, MaxChunkSize)
	if err := scanPrefix(t.txn, []byte{pBody}, true, func(k, v []byte) error {
		var h Hash
		copy(h[:], k[1:])
		bodies[h] = true
		if f.refs[h] == 0 && !seen[h] && !f.dead[h] {
			f.problem("chunk %x: body without references", h[:8])
		}
		if !t.s.codecs.verifyBody(v, h, buf) {
			f.bad[h] = "does not match its hash"
			f.problem("chunk %x: body does not match its hash", h[:8])
		}
		return nil
	}); err != nil {
		return err
	}
	for h := range f.refs {
		if !bodies[h] {
			f.bad[h] = "is missing"
			f.problem("chunk %x: body is missing", h[:8])
		}
	}
	for h := range f.dead {
		if !bodies[h] {
			f.problem("chunk %x: dead-body marker without a body", h[:8])
		}
	}
	return nil
}

// checkViews walks every volume's live state and every snapshot.
func (f *fsckState) checkViews(t *tx) error {
	for _, v := range f.vols {
		if _, ok := f.nodes[v.Head]; ok {
			if err := f.checkView(t, v, v.Head, v.Name); err != nil {
				return err
			}
		}
		names := make([]string, 0, len(f.snaps[v.Name]))
		for name := range f.snaps[v.Name] {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			sn := f.snaps[v.Name][name]
			if _, ok := f.nodes[sn.Node]; ok {
				if err := f.checkView(t, v, sn.Node, v.Name+"@"+name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkTables checks the checksum of every block of every table (damage since Open, which
// reads would take for missing keys: see damage.go).
func (f *fsckState) checkTables(t *tx) error {
	for _, bad := range t.s.checkTables() {
		f.problem("damaged table file %s (restore the store from a backup)", bad)
		f.cut = true // the scans may have missed its keys: no repair from their counts
	}
	return nil
}

// readDir is t.readDir naming each entry that does not decode (its name is in its key), so one
// damaged entry does not hide its siblings.
func (f *fsckState) readDir(t *tx, label, path string, dir Ino) ([]DirEntry, error) {
	var out []DirEntry
	prefix := metaKind(t.tree, kDirent, dir)
	err := t.scanVisible(prefix, func(lkey []byte, ver version) error {
		if !ver.live() {
			return nil
		}
		name := string(lkey[len(prefix) : len(lkey)-1])
		ino, typ, err := decodeDirent(ver.val)
		if err != nil {
			f.damaged(label, strings.TrimSuffix(path, "/")+"/"+name, "directory entry: %v", err)
			return nil
		}
		out = append(out, DirEntry{Name: name, Ino: ino, Mode: typ})
		return nil
	})
	return out, err
}

func (f *fsckState) ancestors(node uint32) []uint32 {
	var a []uint32
	for n := node; n != 0 && len(a) <= len(f.nodes); n = f.nodes[n].parent {
		a = append(a, n)
	}
	return a
}

// checkView walks the tree at node from the root: entries point at inodes, link counts match,
// every inode is reachable or an orphan, chunks exist and hash right, usage matches.
func (f *fsckState) checkView(t *tx, v volRec, node uint32, label string) error {
	t.at(v.Tree, node, f.ancestors(node))
	links := map[Ino]uint32{RootIno: 2}
	paths := map[Ino]string{RootIno: "/"}
	queue := []Ino{RootIno}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		var ents []DirEntry
		err := guardItem(t, "directory", func() (err error) { ents, err = f.readDir(t, label, paths[dir], dir); return err })
		if err != nil {
			f.damaged(label, paths[dir], "directory cannot be read: %v", err)
			continue
		}
		for _, e := range ents {
			p := strings.TrimSuffix(paths[dir], "/") + "/" + e.Name
			if _, err := t.getInode(e.Ino); errors.Is(err, ErrNotFound) {
				f.problem("%s:%s: entry points at missing inode %d", label, p, e.Ino)
				continue
			} else if err != nil {
				f.damaged(label, p, "inode %d cannot be read: %v", e.Ino, err)
				if _, ok := paths[e.Ino]; !ok {
					paths[e.Ino] = p // the inode pass names it by this path too
				}
				continue
			}
			if e.Mode == syscall.S_IFDIR {
				if _, seen := paths[e.Ino]; seen {
					f.problem("%s:%s: directory %d linked twice", label, p, e.Ino)
					continue
				}
				links[e.Ino] += 2
				links[dir]++
				queue = append(queue, e.Ino)
			} else {
				links[e.Ino]++
			}
			if _, ok := paths[e.Ino]; !ok {
				paths[e.Ino] = p
			}
		}
	}
	var use Usage
	regular := map[Ino]bool{}
	prefix := append(treePrefix(v.Tree), kInode)
	err := t.scanVisible(prefix, func(lkey []byte, ver version) error {
		if !ver.live() {
			return nil
		}
		ino := Ino(beUint64(lkey[len(prefix):]))
		n, err := decodeInode(ino, ver.val)
		if err != nil {
			f.damaged(label, cmp.Or(paths[ino], fmt.Sprintf("<inode %d>", ino)), "inode %d: %v", ino, err)
			return nil
		}
		use.Files++
		use.Bytes += int64(n.alloc)
		regular[ino] = n.Mode&syscall.S_IFMT == syscall.S_IFREG
		want, reachable := links[ino]
		switch {
		case !reachable && n.Nlink == 0:
			if o, err := t.lookup(orphanLKey(v.Tree, ino), 0); err != nil || !o.live() {
				f.problem("%s: inode %d has no links and no orphan marker", label, ino)
			}
		case !reachable:
			f.problem("%s: inode %d (nlink %d) is not reachable", label, ino, n.Nlink)
		case n.Nlink != want:
			f.problem("%s:%s: nlink is %d, but %d links found", label, paths[ino], n.Nlink, want)
		}
		if err := guardItem(t, "file", func() error { return f.checkFileChunks(t, v, label, paths[ino], n) }); err != nil {
			f.damaged(label, cmp.Or(paths[ino], fmt.Sprintf("<inode %d>", ino)), "chunks cannot be read: %v", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Every visible extent belongs to a regular file (those were checked in checkFileChunks), or to
	// an inode deleted at this node, whose data an ancestor still holds (like its chunk map).
	eprefix := append(treePrefix(v.Tree), kExtent)
	err = t.scanVisible(eprefix, func(lkey []byte, ver version) error {
		if ino := Ino(beUint64(lkey[len(eprefix):])); ver.live() && !regular[ino] && f.inodeExists(t, ino) {
			f.problem("%s: extent of chunk %d of inode %d, which is not a regular file", label, beUint64(lkey[len(eprefix)+8:]), ino)
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.usage[node] = use
	got, err := t.getUsage(node)
	if err != nil {
		return err
	}
	if got != use {
		f.problem("%s: usage says %d bytes in %d files, found %d bytes in %d files", label, got.Bytes, got.Files, use.Bytes, use.Files)
	}
	return nil
}

func (f *fsckState) inodeExists(t *tx, ino Ino) bool {
	_, err := t.getInode(ino)
	return err == nil
}

// checkFileChunks reports a file whose chunks or extents are damaged, extents outside their chunk
// or the file, and allocation (each chunk's length merged with its extents') or an extent count
// that does not add up.
func (f *fsckState) checkFileChunks(t *tx, v volRec, label, path string, n *inode) error {
	if n.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil
	}
	if path == "" {
		path = fmt.Sprintf("<orphan inode %d>", n.Ino)
	}
	lens := map[uint64]uint64{}
	damaged := ""
	prefix := metaKind(t.tree, kChunk, n.Ino)
	err := t.scanVisible(prefix, func(lkey []byte, ver version) error {
		if !ver.live() {
			return nil
		}
		idx := beUint64(lkey[len(prefix):])
		ref, err := decodeChunkRef(ver.val)
		if err != nil {
			if damaged == "" {
				damaged = fmt.Sprintf("chunk %d: map entry: %v", idx, err)
			}
			return nil
		}
		lens[idx] = uint64(ref.n)
		if why, bad := f.bad[ref.hash]; bad && damaged == "" {
			damaged = fmt.Sprintf("chunk %d %s", idx, why)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cs := uint64(v.Options.ChunkSize)
	var extents uint32
	eprefix := metaKind(t.tree, kExtent, n.Ino)
	err = t.scanVisible(eprefix, func(lkey []byte, ver version) error {
		if !ver.live() {
			return nil
		}
		extents++
		idx, seq := beUint64(lkey[len(eprefix):]), beUint32(lkey[len(eprefix)+8:])
		off, data, err := decodeExtent(ver.val, true)
		if err != nil {
			if damaged == "" {
				damaged = fmt.Sprintf("chunk %d extent %d: %v", idx, seq, err)
			}
			if off, data, err = decodeExtent(ver.val, false); err != nil {
				return nil
			}
		}
		end := uint64(off) + uint64(len(data))
		if end > cs {
			f.problem("%s:%s: chunk %d extent %d at %d of %d bytes passes the chunk size %d", label, path, idx, seq, off, len(data), cs)
		}
		if idx*cs+end > n.Size {
			f.problem("%s:%s: chunk %d extent %d ends at %d, past the file size %d", label, path, idx, seq, idx*cs+end, n.Size)
		}
		lens[idx] = max(lens[idx], end)
		return nil
	})
	if err != nil {
		return err
	}
	var alloc uint64
	for _, l := range lens {
		alloc += l
	}
	if damaged != "" {
		f.damaged(label, path, "%s", damaged)
	}
	if alloc != n.alloc {
		f.problem("%s:%s: allocation says %d bytes, chunks hold %d", label, path, n.alloc, alloc)
	}
	if extents != n.extents {
		f.problem("%s:%s: inode counts %d extents, %d found", label, path, n.extents, extents)
	}
	return nil
}

// checkSchedules checks that every schedule policy decodes to a valid one and belongs to a live
// volume (not a removed volume's record).
func (f *fsckState) checkSchedules(t *tx) error {
	live := map[string]bool{}
	for _, v := range f.vols {
		live[v.Name] = !IsRemovedName(v.Name)
	}
	return scanPrefix(t.txn, []byte{pSchedule}, true, func(k, v []byte) error {
		vol := string(k[1:])
		if _, err := decodeSchedule(v); err != nil {
			f.problem("schedule of volume %q: %v", vol, err)
		}
		if !live[vol] {
			f.problem("schedule of volume %q, which does not exist", vol)
			f.strays = append(f.strays, slices.Clone(k))
		}
		return nil
	})
}

// repair fixes what can be fixed without guessing: refcounts, unreferenced bodies, usage
// counters, schedules of volumes that are gone.
func (f *fsckState) repair(t *tx) error {
	for _, k := range f.strays {
		if err := t.delete(k); err != nil {
			return err
		}
		f.rep.Repaired = append(f.rep.Repaired, fmt.Sprintf("schedule of volume %q, which does not exist, deleted", k[1:]))
	}
	err := scanPrefix(t.txn, []byte{pRef}, true, func(k, v []byte) error {
		var h Hash
		copy(h[:], k[1:])
		r, _ := decodeRef(v)
		if want := f.refs[h]; r.count != want {
			r.count = want
			f.rep.Repaired = append(f.rep.Repaired, fmt.Sprintf("chunk %x: refcount set to %d", h[:8], want))
			if want == 0 {
				if err := t.delete(k); err != nil {
					return err
				}
				return t.markDead(h, r.stored)
			}
			return t.set(k, encodeRef(r))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := scanPrefix(t.txn, []byte{pBody}, true, func(k, v []byte) error {
		var h Hash
		copy(h[:], k[1:])
		if f.refs[h] == 0 && !f.dead[h] {
			f.rep.Repaired = append(f.rep.Repaired, fmt.Sprintf("chunk %x: unreferenced body queued for deletion", h[:8]))
			return t.markDead(h, uint32(len(v)))
		}
		return nil
	}); err != nil {
		return err
	}
	for h := range f.dead {
		if f.refs[h] > 0 {
			f.rep.Repaired = append(f.rep.Repaired, fmt.Sprintf("chunk %x: dead-body marker of a referenced chunk dropped", h[:8]))
			if err := t.delete(deadKey(h)); err != nil {
				return err
			}
		}
	}
	for node, u := range f.usage {
		got, err := t.getUsage(node)
		if err != nil {
			return err
		}
		if got != u {
			f.rep.Repaired = append(f.rep.Repaired, fmt.Sprintf("node %d: usage set to %d bytes, %d files", node, u.Bytes, u.Files))
			if err := t.set(usageKey(node), encodeUsage(u)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Stats returns store-wide accounting (a full scan of refcounts: not for hot paths).
func (s *Store) Stats(ctx context.Context) (StoreStats, error) {
	st := StoreStats{Volumes: map[string]Usage{}}
	err := s.view(func(t *tx) error {
		if err := scanPrefix(t.txn, []byte{pRef}, true, func(k, v []byte) error {
			r, err := decodeRef(v)
			if err != nil {
				return err
			}
			st.Chunks++
			st.UniqueBytes += int64(r.plain)
			st.PhysicalBytes += int64(r.stored)
			st.LogicalBytes += int64(r.count) * int64(r.plain)
			return nil
		}); err != nil {
			return err
		}
		return scanPrefix(t.txn, []byte{pVolume}, true, func(k, v []byte) error {
			var r volRec
			if err := jsonDecode(v, &r); err != nil || IsRemovedName(r.Name) {
				return err
			}
			u, err := t.getUsage(r.Head)
			st.Volumes[r.Name] = u
			return err
		})
	})
	st.DedupRatio = 1
	if st.UniqueBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.UniqueBytes)
	}
	st.DiskBytes = s.diskBytes()
	return st, err
}
