package repository

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/fusevol/fusevol/backend/sendstream"
)

// tree is a snapshot's metadata as a stream describes it: what a full stream's records say,
// and what an incremental stream's records change. A backup of an incremental stream is its
// base's tree with the stream applied, written out whole, so that every backup restores (and
// can be forgotten) on its own.
type tree struct {
	header  sendstream.Header
	inodes  map[uint64]sendstream.Inode
	dirents map[uint64]map[string]dirent // by directory, then name
	xattrs  map[uint64]map[string][]byte
	chunks  map[uint64]map[uint64]chunkRef // by inode, then chunk index
}

type dirent struct {
	ino  uint64
	kind uint32
}

type chunkRef struct {
	hash   Hash
	length uint32
}

func newTree(h sendstream.Header) *tree {
	return &tree{header: h, inodes: map[uint64]sendstream.Inode{}, dirents: map[uint64]map[string]dirent{},
		xattrs: map[uint64]map[string][]byte{}, chunks: map[uint64]map[uint64]chunkRef{}}
}

// rebase makes t the tree of the snapshot an incremental stream with header h describes, on
// top of t: the stream's records are then applied.
func (t *tree) rebase(h sendstream.Header) {
	h.Incremental, h.BaseName, h.BaseID = false, "", ""
	t.header = h
}

func inner[K comparable, V any](m map[uint64]map[K]V, k uint64) map[K]V {
	if m[k] == nil {
		m[k] = map[K]V{}
	}
	return m[k]
}

// apply changes t as the receiver of record r would change the volume (backend/receive.go).
func (t *tree) apply(r sendstream.Record) error {
	switch r.Type {
	case sendstream.TInode:
		t.inodes[r.Inode.Ino] = r.Inode
	case sendstream.TDirent:
		inner(t.dirents, r.Dir)[r.Name] = dirent{ino: r.Ino, kind: r.Kind}
	case sendstream.TXattr:
		inner(t.xattrs, r.Ino)[r.Name] = append([]byte{}, r.Data...)
	case sendstream.TChunk:
		inner(t.chunks, r.Ino)[r.Index] = chunkRef{hash: r.Hash, length: r.Length}
	case sendstream.THole:
		delete(t.chunks[r.Ino], r.Index)
	case sendstream.TUnlink:
		delete(t.dirents[r.Dir], r.Name)
	case sendstream.TRemoveXattr:
		delete(t.xattrs[r.Ino], r.Name)
	case sendstream.TRemoveInode:
		delete(t.inodes, r.Ino)
		delete(t.chunks, r.Ino)
		delete(t.xattrs, r.Ino)
		delete(t.dirents, r.Ino)
	default:
		return fmt.Errorf("%w: unexpected %s record in a manifest", sendstream.ErrFormat, r.Type)
	}
	return nil
}

// refs calls fn for every chunk the tree uses, in order of inode and index.
func (t *tree) refs(fn func(ino, index uint64, c chunkRef) error) error {
	for _, ino := range slices.Sorted(maps.Keys(t.chunks)) {
		m := t.chunks[ino]
		for _, index := range slices.Sorted(maps.Keys(m)) {
			if err := fn(ino, index, m[index]); err != nil {
				return err
			}
		}
	}
	return nil
}

// write writes t to w as a full stream without bodies (a manifest): inodes, entries, xattrs,
// chunks, each kind in key order, the order receive needs (an inode before what names it).
func (t *tree) write(w io.Writer) error {
	enc, err := sendstream.NewEncoder(w, t.header)
	if err != nil {
		return err
	}
	for _, ino := range slices.Sorted(maps.Keys(t.inodes)) {
		if err := enc.Inode(t.inodes[ino]); err != nil {
			return err
		}
	}
	if err := eachSorted(t.dirents, func(dir uint64, name string, d dirent) error {
		return enc.Dirent(dir, name, d.ino, d.kind)
	}); err != nil {
		return err
	}
	if err := eachSorted(t.xattrs, func(ino uint64, name string, v []byte) error {
		return enc.Xattr(ino, name, v)
	}); err != nil {
		return err
	}
	if err := t.refs(func(ino, index uint64, c chunkRef) error {
		return enc.Chunk(ino, index, c.hash, c.length)
	}); err != nil {
		return err
	}
	return enc.Close()
}

func eachSorted[K cmp.Ordered, V any](m map[uint64]map[K]V, fn func(uint64, K, V) error) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		in := m[k]
		for _, k2 := range slices.Sorted(maps.Keys(in)) {
			if err := fn(k, k2, in[k2]); err != nil {
				return err
			}
		}
	}
	return nil
}
