package backend_test

// Crash consistency: TestCrash re-executes its own test binary as a child that opens a store and
// mutates it in a loop (files, links, renames, xattrs, snapshots, clones, restores, deletions, GC),
// calling Store.Sync now and then and recording "ops done + state digest" in a side file after each
// Sync returns. The parent SIGKILLs the child at a random moment, reopens the store, and requires:
// Fsck clean, and the store's state equal to the state after some op boundary j >= the last
// acknowledged sync. The parent finds j by replaying the child's deterministic op sequence on the
// same model, so it also proves that every operation is atomic (no half-done state is ever seen).
//
// Reproduce with the printed seed: FUSEVOL_CRASH_SEED=<seed> go test -run TestCrash ./backend/

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

// cChunk is the chunk size of the crash test's volumes: big enough that chunk bodies go to the value log
// (64 KiB bodies stay in the LSM tree), so that GC rewrites value-log files under the kills.
const cChunk = 128 << 10

// ---- the crash model: volumes of files (by path) and their snapshots ----

type cFile struct {
	data  []byte
	sum   string // hex sha256 of data, kept current
	xattr map[string]string
	ino   backend.Ino // child only
	links int
}

func (f *cFile) setData(b []byte) {
	f.data = b
	s := sha256.Sum256(b)
	f.sum = hex.EncodeToString(s[:8])
}

type cVol struct {
	name    string
	dirs    map[string]backend.Ino // "" is the root
	files   map[string]*cFile
	orphans []*cFile
	snaps   []*cSnap
}

type cSnap struct {
	name  string
	vol   *cVol // frozen copy
	lines []string
}

type cModel struct{ vols map[string]*cVol }

// copyTree deep-copies dirs and files (keeping link sharing); orphans and snapshots are not copied.
func (v *cVol) copyTree(name string) *cVol {
	c := &cVol{name: name, dirs: map[string]backend.Ino{}, files: map[string]*cFile{}}
	for d, ino := range v.dirs {
		c.dirs[d] = ino
	}
	seen := map[*cFile]*cFile{}
	for p, f := range v.files {
		nf, ok := seen[f]
		if !ok {
			nf = &cFile{data: f.data, sum: f.sum, xattr: map[string]string{}, ino: f.ino, links: f.links}
			for k, x := range f.xattr {
				nf.xattr[k] = x
			}
			seen[f] = nf
		}
		c.files[p] = nf
	}
	return c
}

// lines is the canonical description of a volume's tree: dirs, then files with size, content
// digest, xattrs and link group (the smallest path naming the same inode).
func (v *cVol) lines(prefix string) []string {
	group := map[*cFile]string{}
	for _, p := range sortedKeys(v.files) {
		if _, ok := group[v.files[p]]; !ok {
			group[v.files[p]] = p
		}
	}
	var out []string
	for _, d := range sortedKeys(v.dirs) {
		out = append(out, fmt.Sprintf("%s D %q", prefix, d))
	}
	for _, p := range sortedKeys(v.files) {
		f := v.files[p]
		var xs []string
		for _, k := range sortedKeys(f.xattr) {
			xs = append(xs, k+"="+f.xattr[k])
		}
		out = append(out, fmt.Sprintf("%s F %q size=%d sum=%s links=%q xattr=%v", prefix, p, len(f.data), f.sum, group[f], xs))
	}
	return out
}

func (m *cModel) lines() []string {
	var out []string
	for _, name := range sortedKeys(m.vols) {
		v := m.vols[name]
		out = append(out, "V "+name)
		out = append(out, v.lines(name)...)
		for _, s := range v.snaps {
			out = append(out, "S "+name+"@"+s.name)
			out = append(out, s.lines...)
		}
	}
	return out
}

func digest(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// loadModel reads the whole store into a model (used by the child at start and by the parent to
// check a crashed store).
func loadModel(ctx context.Context, st *backend.Store) (*cModel, error) {
	m := &cModel{vols: map[string]*cVol{}}
	vols, err := st.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	for _, vi := range vols {
		view, err := st.OpenVolume(ctx, vi.Name)
		if err != nil {
			return nil, err
		}
		v, err := loadTree(ctx, view, vi.Name)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", vi.Name, err)
		}
		snaps, err := st.ListSnapshots(ctx, vi.Name)
		if err != nil {
			return nil, err
		}
		for _, si := range snaps {
			sv, err := st.OpenSnapshot(ctx, vi.Name, si.Name)
			if err != nil {
				return nil, err
			}
			t, err := loadTree(ctx, sv, vi.Name)
			if err != nil {
				return nil, fmt.Errorf("snapshot %s@%s: %w", vi.Name, si.Name, err)
			}
			v.snaps = append(v.snaps, &cSnap{name: si.Name, vol: t, lines: t.lines(vi.Name + "@" + si.Name)})
		}
		m.vols[vi.Name] = v
	}
	return m, nil
}

func loadTree(ctx context.Context, view *backend.View, name string) (*cVol, error) {
	v := &cVol{name: name, dirs: map[string]backend.Ino{"": backend.RootIno}, files: map[string]*cFile{}}
	byIno := map[backend.Ino]*cFile{}
	var walk func(dir string, ino backend.Ino) error
	walk = func(dir string, ino backend.Ino) error {
		ents, err := view.ReadDir(ctx, ino)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := path.Join(dir, e.Name)
			switch e.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				v.dirs[p] = e.Ino
				if err := walk(p, e.Ino); err != nil {
					return err
				}
			case syscall.S_IFREG:
				f := byIno[e.Ino]
				if f == nil {
					a, err := view.GetAttr(ctx, e.Ino)
					if err != nil {
						return err
					}
					buf := make([]byte, a.Size+1)
					n, err := view.ReadAt(ctx, e.Ino, buf, 0)
					if err != nil && n != int(a.Size) {
						return fmt.Errorf("read %s: %w", p, err)
					}
					if n != int(a.Size) {
						return fmt.Errorf("read %s: %d bytes of %d", p, n, a.Size)
					}
					f = &cFile{xattr: map[string]string{}, ino: e.Ino}
					f.setData(buf[:n])
					names, err := view.ListXattr(ctx, e.Ino)
					if err != nil {
						return err
					}
					for _, x := range names {
						val, err := view.GetXattr(ctx, e.Ino, x)
						if err != nil {
							return err
						}
						f.xattr[x] = string(val)
					}
					byIno[e.Ino] = f
				}
				f.links++
				v.files[p] = f
			default:
				return fmt.Errorf("unexpected entry %s mode %o", p, e.Mode)
			}
		}
		return nil
	}
	return v, walk("", backend.RootIno)
}

// ---- operations: generated from the model alone, so the parent can replay them ----

type cOpKind int

const (
	cCreateVol cOpKind = iota
	cMknod
	cWrite
	cTruncate
	cRename
	cLink
	cUnlink
	cMkdir
	cRmdir
	cSetXattr
	cSnapshot
	cDeleteSnap
	cClone
	cDeleteVol
	cRestore
	cGC
	cForget
	cCommit
	cExtents    // small partial-chunk writes committed as extents in one CommitChunks (compacting now and then)
	cCloneRange // CloneRange path@off -> path2@off2, n bytes (one batch: atomic)
)

// cWriteRec is one write of a cExtents op.
type cWriteRec struct {
	off  int64
	data []byte
}

type cOp struct {
	kind        cOpKind
	vol         string
	path, path2 string
	off         int64
	data        []byte
	name, value string
	forget      bool // after unlink/rename-over/rmdir: release the orphan right away
	sync        bool
	writes      []cWriteRec // cExtents
	off2, n     int64       // cCloneRange
}

func (o cOp) String() string {
	return fmt.Sprintf("op%d vol=%s %q %q off=%d len=%d name=%q forget=%v sync=%v",
		o.kind, o.vol, o.path, o.path2, o.off, len(o.data), o.name, o.forget, o.sync)
}

type cGen struct {
	r       *rand.Rand
	n       int
	round   int
	palette [][]byte
}

func newCGen(seed uint64, round int) *cGen {
	g := &cGen{r: rand.New(rand.NewPCG(seed, uint64(round))), round: round}
	for i := 0; i < 2; i++ {
		g.palette = append(g.palette, g.bytes(cChunk))
	}
	return g
}

func (g *cGen) bytes(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := g.r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func (g *cGen) pick(keys []string) string { return keys[g.r.IntN(len(keys))] }

func (g *cGen) next(m *cModel) cOp {
	g.n++
	for {
		if op, ok := g.try(m); ok {
			op.sync = g.r.IntN(4) == 0
			return op
		}
	}
}

func (g *cGen) try(m *cModel) (cOp, bool) {
	if len(m.vols) == 0 {
		return cOp{kind: cCreateVol, vol: "cv"}, true
	}
	v := m.vols[g.pick(sortedKeys(m.vols))]
	op := cOp{vol: v.name}
	files := sortedKeys(v.files)
	dirs := sortedKeys(v.dirs)
	newPath := func() string { return path.Join(g.pick(dirs), fmt.Sprintf("f%d", g.r.IntN(8))) }
	switch p := g.r.IntN(100); {
	case p < 12:
		op.kind, op.path = cMknod, newPath()
		_, exists := v.files[op.path]
		return op, !exists
	case p < 33:
		if len(files) == 0 {
			return op, false
		}
		// Often at chunk boundaries, so that chunks are shared; one batch, so atomic.
		op.kind, op.path, op.path2 = cCloneRange, g.pick(files), g.pick(files)
		op.off, op.off2 = int64(g.r.IntN(3))*cChunk, int64(g.r.IntN(4))*cChunk
		op.n = int64(1+g.r.IntN(3)) * cChunk
		if g.r.IntN(3) == 0 {
			op.off, op.off2, op.n = op.off+int64(g.r.IntN(cChunk)), op.off2+int64(g.r.IntN(cChunk)), int64(1+g.r.IntN(2*cChunk))
		}
		src, dst := v.files[op.path], v.files[op.path2]
		n := max(0, min(op.n, int64(len(src.data))-op.off))
		return op, src != dst || op.off+n <= op.off2 || op.off2+n <= op.off
	case p < 36:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path = cExtents, g.pick(files)
		idx := int64(g.r.IntN(3))
		for range 1 + g.r.IntN(12) {
			in := g.r.IntN(cChunk)
			l := min(cChunk-in, 1+g.r.IntN(3000))
			op.writes = append(op.writes, cWriteRec{idx*cChunk + int64(in), g.bytes(l)})
		}
		return op, true
	case p < 40:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path = cWrite, g.pick(files)
		size := len(v.files[op.path].data)
		op.off = int64(g.r.IntN(size + 1))
		if g.r.IntN(3) == 0 {
			op.off = int64(g.r.IntN(3) * cChunk)
		}
		n := 1 + g.r.IntN(2*cChunk)
		switch g.r.IntN(4) {
		case 0:
			op.data = make([]byte, n)
		case 1:
			pal := g.palette[g.r.IntN(len(g.palette))]
			op.data = make([]byte, n)
			for i := range op.data {
				op.data[i] = pal[(op.off+int64(i))%cChunk]
			}
		default:
			op.data = g.bytes(n)
		}
		return op, true
	case p < 44:
		if len(files) == 0 {
			return op, false
		}
		// A whole chunk replaced, as the fs layer's write-back does (off is the chunk index).
		op.kind, op.path, op.off = cCommit, g.pick(files), int64(g.r.IntN(3))
		op.data = g.bytes(cChunk)
		if g.r.IntN(3) == 0 {
			op.data = op.data[:g.r.IntN(cChunk)]
		}
		return op, true
	case p < 48:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path, op.off = cTruncate, g.pick(files), int64(g.r.IntN(3*cChunk))
		return op, true
	case p < 56:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path, op.path2, op.forget = cRename, g.pick(files), newPath(), g.r.IntN(2) == 0
		return op, op.path != op.path2 && v.files[op.path] != v.files[op.path2]
	case p < 62:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path, op.path2 = cLink, g.pick(files), newPath()
		_, exists := v.files[op.path2]
		return op, !exists
	case p < 70:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path, op.forget = cUnlink, g.pick(files), g.r.IntN(2) == 0
		return op, true
	case p < 73:
		op.kind, op.path = cMkdir, fmt.Sprintf("d%d", g.r.IntN(3))
		_, exists := v.dirs[op.path]
		return op, !exists
	case p < 75:
		if len(dirs) < 2 {
			return op, false
		}
		op.kind, op.path, op.forget = cRmdir, g.pick(dirs[1:]), g.r.IntN(2) == 0
		for f := range v.files {
			if strings.HasPrefix(f, op.path+"/") {
				return op, false
			}
		}
		return op, true
	case p < 80:
		if len(files) == 0 {
			return op, false
		}
		op.kind, op.path = cSetXattr, g.pick(files)
		op.name, op.value = fmt.Sprintf("user.k%d", g.r.IntN(3)), strconv.Itoa(g.r.IntN(1000))
		return op, true
	case p < 85:
		op.kind, op.name = cSnapshot, fmt.Sprintf("s%d-%d", g.round, g.n)
		return op, true
	case p < 88:
		if len(v.snaps) == 0 {
			return op, false
		}
		op.kind, op.name = cDeleteSnap, v.snaps[g.r.IntN(len(v.snaps))].name
		return op, true
	case p < 91:
		if len(v.snaps) == 0 || len(m.vols) >= 4 {
			return op, false
		}
		op.kind, op.name, op.path = cClone, v.snaps[g.r.IntN(len(v.snaps))].name, fmt.Sprintf("c%d-%d", g.round, g.n)
		return op, true
	case p < 93:
		op.kind = cDeleteVol
		return op, v.name != "cv"
	case p < 95:
		if len(v.snaps) == 0 {
			return op, false
		}
		op.kind, op.name = cRestore, v.snaps[g.r.IntN(len(v.snaps))].name
		return op, true
	case p < 96:
		op.kind = cGC
		return op, true
	default:
		op.kind = cForget
		return op, len(v.orphans) > 0
	}
}

// dropLink removes a file name; a file that loses its last name becomes an orphan (still held).
func (v *cVol) dropLink(p string) *cFile {
	f := v.files[p]
	delete(v.files, p)
	f.links--
	if f.links == 0 {
		v.orphans = append(v.orphans, f)
		return f
	}
	return nil
}

// apply changes the model; exec (child only, may be nil) runs the same operation on the store
// and is given a chance to act before the model changes.
func (m *cModel) apply(op cOp, exec func(v *cVol) error) error {
	v := m.vols[op.vol]
	run := func() error {
		if exec == nil {
			return nil
		}
		return exec(v)
	}
	if err := run(); err != nil {
		return fmt.Errorf("%v: %w", op, err)
	}
	switch op.kind {
	case cCreateVol:
		m.vols[op.vol] = &cVol{name: op.vol, dirs: map[string]backend.Ino{"": backend.RootIno}, files: map[string]*cFile{}}
	case cMknod:
		f := &cFile{xattr: map[string]string{}, links: 1}
		f.setData(nil)
		v.files[op.path] = f
	case cWrite:
		f := v.files[op.path]
		d := slices.Clone(f.data)
		if end := int(op.off) + len(op.data); end > len(d) {
			d = append(d, make([]byte, end-len(d))...)
		}
		copy(d[op.off:], op.data)
		f.setData(d)
	case cExtents:
		f := v.files[op.path]
		d := slices.Clone(f.data)
		for _, w := range op.writes {
			if end := int(w.off) + len(w.data); end > len(d) {
				d = append(d, make([]byte, end-len(d))...)
			}
			copy(d[w.off:], w.data)
		}
		f.setData(d)
	case cCommit:
		f := v.files[op.path]
		d := slices.Clone(f.data)
		start := int(op.off) * cChunk
		if end := start + len(op.data); end > len(d) {
			d = append(d, make([]byte, end-len(d))...)
		}
		clear(d[start:min(start+cChunk, len(d))])
		copy(d[start:], op.data)
		f.setData(d)
	case cCloneRange:
		src, f := v.files[op.path], v.files[op.path2]
		if n := min(op.n, int64(len(src.data))-op.off); n > 0 {
			d := slices.Clone(f.data)
			if end := int(op.off2 + n); end > len(d) {
				d = append(d, make([]byte, end-len(d))...)
			}
			copy(d[op.off2:], src.data[op.off:op.off+n])
			f.setData(d)
		}
	case cTruncate:
		f := v.files[op.path]
		d := slices.Clone(f.data)
		if int(op.off) <= len(d) {
			d = d[:op.off]
		} else {
			d = append(d, make([]byte, int(op.off)-len(d))...)
		}
		f.setData(d)
	case cRename:
		f := v.files[op.path]
		if _, ok := v.files[op.path2]; ok {
			v.forgetIf(op.forget, v.dropLink(op.path2))
		}
		delete(v.files, op.path)
		v.files[op.path2] = f
	case cLink:
		f := v.files[op.path]
		f.links++
		v.files[op.path2] = f
	case cUnlink:
		v.forgetIf(op.forget, v.dropLink(op.path))
	case cMkdir:
		v.dirs[op.path] = 0
	case cRmdir:
		delete(v.dirs, op.path)
	case cSetXattr:
		v.files[op.path].xattr[op.name] = op.value
	case cSnapshot:
		c := v.copyTree(v.name)
		v.snaps = append(v.snaps, &cSnap{name: op.name, vol: c, lines: c.lines(v.name + "@" + op.name)})
	case cDeleteSnap:
		v.snaps = slices.DeleteFunc(v.snaps, func(s *cSnap) bool { return s.name == op.name })
	case cClone:
		for _, s := range v.snaps {
			if s.name == op.name {
				m.vols[op.path] = s.vol.copyTree(op.path)
			}
		}
	case cDeleteVol:
		delete(m.vols, op.vol)
	case cRestore:
		for _, s := range v.snaps {
			if s.name == op.name {
				nv := s.vol.copyTree(v.name)
				nv.snaps = v.snaps
				m.vols[op.vol] = nv
			}
		}
	case cForget:
		v.orphans = v.orphans[1:]
	}
	return nil
}

// forgetIf drops a new orphan that the operation released right away.
func (v *cVol) forgetIf(forget bool, orphan *cFile) {
	if forget && orphan != nil {
		v.orphans = v.orphans[:len(v.orphans)-1]
	}
}

// ---- the child ----

type crashChild struct {
	ctx        context.Context
	st         *backend.Store
	views      map[string]*backend.View
	pendingIno backend.Ino // inode made by the last Mknod, for the model
}

func (c *crashChild) dirOf(v *cVol, p string) backend.Ino {
	d := path.Dir(p)
	if d == "." {
		d = ""
	}
	return v.dirs[d]
}

// exec runs op against the store. It also fills in the inode numbers the model needs to address
// files later (apply copies them along).
func (c *crashChild) exec(m *cModel, op cOp) func(v *cVol) error {
	return func(v *cVol) error {
		ctx := c.ctx
		var view *backend.View
		if v != nil {
			view = c.views[v.name]
		}
		forgetLast := func(f *cFile) error {
			if op.forget && f != nil && f.links == 1 {
				return view.Forget(ctx, f.ino)
			}
			return nil
		}
		switch op.kind {
		case cCreateVol:
			opts, err := backend.ParseVolumeOptions(map[string]string{"chunk-size": "128KiB"})
			if err != nil {
				return err
			}
			if _, err := c.st.CreateVolume(ctx, op.vol, opts); err != nil {
				return err
			}
			view, err := c.st.OpenVolume(ctx, op.vol)
			c.views[op.vol] = view
			return err
		case cMknod:
			a, err := view.Mknod(ctx, c.dirOf(v, op.path), path.Base(op.path), backend.NewNode{Mode: syscall.S_IFREG | 0o644})
			if err != nil {
				return err
			}
			// The model creates the file after exec; remember the inode for it.
			c.pendingIno = a.Ino
			return nil
		case cWrite:
			_, err := view.WriteAt(ctx, v.files[op.path].ino, op.data, op.off)
			return err
		case cExtents:
			var chunks []backend.Chunk
			for _, w := range op.writes {
				chunks = append(chunks, view.PrepareExtent(uint64(w.off/cChunk), int(w.off%cChunk), w.data))
			}
			_, err := view.CommitChunks(ctx, v.files[op.path].ino, chunks, 0)
			return err
		case cCommit:
			c := view.PrepareChunk(uint64(op.off), op.data)
			_, err := view.CommitChunks(ctx, v.files[op.path].ino, []backend.Chunk{c}, 0)
			return err
		case cTruncate:
			_, err := view.SetAttr(ctx, v.files[op.path].ino, backend.SetAttr{Valid: backend.SetSize, Size: uint64(op.off)})
			return err
		case cCloneRange:
			_, err := view.CloneRange(ctx, v.files[op.path].ino, op.off, v.files[op.path2].ino, op.off2, op.n)
			return err
		case cRename:
			if err := view.Rename(ctx, c.dirOf(v, op.path), path.Base(op.path), c.dirOf(v, op.path2), path.Base(op.path2), 0); err != nil {
				return err
			}
			return forgetLast(v.files[op.path2])
		case cLink:
			_, err := view.Link(ctx, v.files[op.path].ino, c.dirOf(v, op.path2), path.Base(op.path2))
			return err
		case cUnlink:
			if err := view.Unlink(ctx, c.dirOf(v, op.path), path.Base(op.path)); err != nil {
				return err
			}
			return forgetLast(v.files[op.path])
		case cMkdir:
			a, err := view.Mknod(ctx, backend.RootIno, op.path, backend.NewNode{Mode: syscall.S_IFDIR | 0o755})
			c.pendingIno = a.Ino
			return err
		case cRmdir:
			// The directory stays an orphan until Forget, or until the next Open reclaims it.
			if err := view.Rmdir(ctx, backend.RootIno, op.path); err != nil || !op.forget {
				return err
			}
			return view.Forget(ctx, v.dirs[op.path])
		case cSetXattr:
			return view.SetXattr(ctx, v.files[op.path].ino, op.name, []byte(op.value), 0)
		case cSnapshot:
			_, err := c.st.CreateSnapshot(ctx, v.name, op.name)
			return err
		case cDeleteSnap:
			return c.st.DeleteSnapshot(ctx, v.name, op.name)
		case cClone:
			opts, err := backend.ParseVolumeOptions(map[string]string{"chunk-size": "128KiB", "from": v.name + "@" + op.name})
			if err != nil {
				return err
			}
			if _, err := c.st.CreateVolume(ctx, op.path, opts); err != nil {
				return err
			}
			nv, err := c.st.OpenVolume(ctx, op.path)
			c.views[op.path] = nv
			return err
		case cDeleteVol, cRestore:
			for _, f := range v.orphans {
				if err := view.Forget(ctx, f.ino); err != nil {
					return err
				}
			}
			if op.kind == cDeleteVol {
				delete(c.views, v.name)
				return c.st.DeleteVolume(ctx, v.name)
			}
			if err := c.st.RestoreSnapshot(ctx, v.name, op.name); err != nil {
				return err
			}
			nv, err := c.st.OpenVolume(ctx, v.name)
			c.views[v.name] = nv
			return err
		case cGC:
			return c.st.GC(ctx)
		case cForget:
			return view.Forget(ctx, v.orphans[0].ino)
		}
		return fmt.Errorf("unknown op %d", op.kind)
	}
}

// setInos gives a file or directory just created in the model the inode number the store chose.
func (c *crashChild) setInos(m *cModel, op cOp) {
	switch op.kind {
	case cMknod:
		m.vols[op.vol].files[op.path].ino = c.pendingIno
	case cMkdir:
		m.vols[op.vol].dirs[op.path] = c.pendingIno
	}
}

func runCrashChild(dir, side string, seed uint64, round int) error {
	ctx := context.Background()
	st, err := backend.Open(ctx, dir, backend.Options{GCInterval: 20 * time.Millisecond, ValueLogFileSize: 1 << 20})
	if err != nil {
		return err
	}
	m, err := loadModel(ctx, st)
	if err != nil {
		return err
	}
	c := &crashChild{ctx: ctx, st: st, views: map[string]*backend.View{}}
	for _, name := range sortedKeys(m.vols) {
		if c.views[name], err = st.OpenVolume(ctx, name); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(side, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	g := newCGen(seed, round)
	for k := 1; ; k++ {
		op := g.next(m)
		if err := m.apply(op, c.exec(m, op)); err != nil {
			return fmt.Errorf("op %d: %w", k, err)
		}
		c.setInos(m, op)
		if !op.sync {
			continue
		}
		if err := st.Sync(ctx); err != nil {
			return err
		}
		// One write per record: a kill cannot leave half of it.
		if _, err := fmt.Fprintf(f, "%d %s\n", k, digest(m.lines())); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
}

// ---- the parent ----

func TestCrash(t *testing.T) {
	if dir := os.Getenv("FUSEVOL_CRASH_DIR"); dir != "" {
		seed, _ := strconv.ParseUint(os.Getenv("FUSEVOL_CRASH_CHILD_SEED"), 10, 64)
		round, _ := strconv.Atoi(os.Getenv("FUSEVOL_CRASH_ROUND"))
		err := runCrashChild(dir, os.Getenv("FUSEVOL_CRASH_SIDE"), seed, round)
		fmt.Fprintln(os.Stderr, "crash child failed:", err)
		os.Exit(3)
	}
	rounds := 20
	if os.Getenv("FUSEVOL_LONG") != "" {
		rounds = 200
	}
	rounds = envInt("FUSEVOL_CRASH_ROUNDS", rounds)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FUSEVOL_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("FUSEVOL_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (reproduce the op sequences with FUSEVOL_CRASH_SEED=%d; kill timing stays random)", seed, seed)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "store")
	cur := &cModel{vols: map[string]*cVol{}}
	timing := rand.New(rand.NewPCG(seed, 0xc0ffee))
	totalOps := 0
	for round := 0; round < rounds; round++ {
		side := filepath.Join(tmp, fmt.Sprintf("side-%d", round))
		early := timing.IntN(5) == 0
		delay := time.Duration(10+timing.IntN(91)) * time.Millisecond
		if early {
			delay = time.Duration(timing.IntN(30)) * time.Millisecond
		}
		crashOnce(t, dir, side, seed, round, early, delay)
		cur, totalOps = checkCrash(t, dir, side, seed, round, cur, totalOps)
	}
	t.Logf("%d rounds, %d operations survived a crash check", rounds, totalOps)
	if totalOps == 0 {
		t.Fatalf("no child got any operation done: the test tested nothing")
	}
}

// crashOnce runs the child and SIGKILLs it delay after it is ready (early: after it started).
func crashOnce(t *testing.T, dir, side string, seed uint64, round int, early bool, delay time.Duration) {
	t.Helper()
	killChild(t, "TestCrash", []string{"FUSEVOL_CRASH_DIR=" + dir, "FUSEVOL_CRASH_SIDE=" + side,
		"FUSEVOL_CRASH_CHILD_SEED=" + strconv.FormatUint(seed, 10), "FUSEVOL_CRASH_ROUND=" + strconv.Itoa(round)},
		round, early, delay)
}

// killChild re-executes the test binary as test run with env added, and SIGKILLs it delay after
// it printed "ready" (early: delay after it started).
func killChild(t *testing.T, run string, env []string, round int, early bool, delay time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+run+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if sc.Text() == "ready" && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	if early {
		time.Sleep(delay)
	} else {
		select {
		case ok := <-ready:
			if !ok {
				cmd.Wait()
				t.Fatalf("round %d: child exited before it was ready: %v\n%s", round, cmd.ProcessState, stderr.String())
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child not ready after 60s\n%s", round, stderr.String())
		}
		time.Sleep(delay)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("round %d: kill: %v", round, err)
	}
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child ended by itself (%v) before the kill:\n%s", round, err, stderr.String())
	}
}

func readSide(t *testing.T, side string) (int, string) {
	b, err := os.ReadFile(side)
	if errors.Is(err, os.ErrNotExist) {
		return 0, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	k, d := 0, ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < k {
			t.Fatalf("side file %s: bad record %q", side, line)
		}
		k, d = n, f[1]
	}
	return k, d
}

// checkCrash reopens the crashed store and checks it against the replayed op sequence. It returns
// the store's state, which the next round's child starts from.
func checkCrash(t *testing.T, dir, side string, seed uint64, round int, cur *cModel, totalOps int) (*cModel, int) {
	t.Helper()
	ctx := context.Background()
	st, err := backend.Open(ctx, dir, backend.Options{GCInterval: -1})
	if err != nil {
		t.Fatalf("round %d: reopen after crash: %v", round, err)
	}
	defer st.Close()
	rep, err := st.Fsck(ctx, false)
	if err != nil {
		t.Fatalf("round %d: fsck: %v", round, err)
	}
	if !rep.Clean() {
		t.Fatalf("round %d (seed %d): fsck after crash is not clean:\n  %s", round, seed, strings.Join(rep.Problems, "\n  "))
	}
	actual, err := loadModel(ctx, st)
	if err != nil {
		t.Fatalf("round %d: reading the store after crash: %v", round, err)
	}
	acked, ackDigest := readSide(t, side)
	got := actual.lines()
	gotD := digest(got)
	g := newCGen(seed, round)
	mm := cur
	var atAck []string
	const slack = 3000 // far more ops than a child gets done in 100 ms after its last sync
	for j := 0; ; j++ {
		if j > 0 {
			mm.apply(g.next(mm), nil)
		}
		lines := mm.lines()
		d := digest(lines)
		if j == acked {
			atAck = lines
			if acked > 0 && d != ackDigest {
				t.Fatalf("round %d: test bug: replay diverged from the child at op %d", round, j)
			}
		}
		if j >= acked && d == gotD {
			return actual, totalOps + j
		}
		if j > acked+slack {
			t.Fatalf("round %d (seed %d): after the crash the store matches no state at or after the last synced op %d.\n"+
				"lines of the synced state missing from the store:\n  %s\nlines in the store but not in the synced state:\n  %s",
				round, seed, acked, strings.Join(lineDiff(atAck, got), "\n  "), strings.Join(lineDiff(got, atAck), "\n  "))
		}
	}
}

// lineDiff lists up to 30 lines of a that are not in b.
func lineDiff(a, b []string) []string {
	in := map[string]bool{}
	for _, l := range b {
		in[l] = true
	}
	var out []string
	for _, l := range a {
		if !in[l] && len(out) < 30 {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// TestCrashEmptyLogFiles recreates what a kill leaves when it lands between Badger creating a new
// value-log or memtable file and sizing it: an empty file. Badger v4 refuses to open a directory
// holding one ("Create a new file"), so Open has to cope, and lose nothing.
func TestCrashEmptyLogFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := backend.Open(ctx, dir, backend.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVolume(ctx, "v", backend.VolumeOptions{}); err != nil {
		t.Fatal(err)
	}
	view, err := st.OpenVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	a, err := view.Mknod(ctx, backend.RootIno, "f", backend.NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("fusevol"), 50000)
	if _, err := view.WriteAt(ctx, a.Ino, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"000999.vlog", "00999.mem"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err = backend.Open(ctx, dir, backend.Options{GCInterval: -1})
	if err != nil {
		t.Fatalf("Open with empty log files left by a crash: %v", err)
	}
	defer st.Close()
	if view, err = st.OpenVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want)+1)
	if n, err := view.ReadAt(ctx, a.Ino, got, 0); n != len(want) || !bytes.Equal(got[:n], want) {
		t.Fatalf("after reopen: read %d bytes (%v), content equal: %v", n, err, bytes.Equal(got[:n], want))
	}
	rep, err := st.Fsck(ctx, false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %v %v", err, rep)
	}
}
