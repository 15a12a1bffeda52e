package backend_test

// Model-based randomized test: random operation sequences run against the real store and
// against a tiny in-memory model (volumes as trees of nodes, snapshots as deep copies), and the
// two are compared after every step. Reproduce a failure with the seed it prints:
//
//	FUSEVOL_SEED=<seed> go test -run TestModel ./backend/
//
// FUSEVOL_LONG=1 runs many more and longer sequences; FUSEVOL_STEPS overrides the length.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

// mtChunk is small so that files of a few hundred KiB cross many chunk boundaries.
const mtChunk = 64 << 10

// mtMaxFile bounds file sizes so that the model and the store stay small.
const mtMaxFile = 6 * mtChunk

// errAny marks an expectation where any error is acceptable (the exact errno is not specified
// by the contract or differs between Unix systems) but success is not.
var errAny = errors.New("any error")

// errNoop in an expectation also accepts success, for operations that change nothing then.
var errNoop = errors.New("or success without effect")

type mNode struct {
	ino    backend.Ino
	mode   uint32
	uid    uint32
	gid    uint32
	rdev   uint32
	target string
	data   []byte
	nlink  uint32 // names pointing at a non-directory; directories derive theirs
	xattr  map[string][]byte
	ents   map[string]backend.Ino // directories only
	parent backend.Ino            // directories only
	atime  int64                  // 0 = not known to the model
	mtime  int64
}

func (n *mNode) typ() uint32  { return n.mode & syscall.S_IFMT }
func (n *mNode) isDir() bool  { return n.typ() == syscall.S_IFDIR }
func (n *mNode) isReg() bool  { return n.typ() == syscall.S_IFREG }
func (n *mNode) isLink() bool { return n.typ() == syscall.S_IFLNK }

func (n *mNode) clone() *mNode {
	c := *n
	c.data = slices.Clone(n.data)
	c.xattr = make(map[string][]byte, len(n.xattr))
	for k, v := range n.xattr {
		c.xattr[k] = slices.Clone(v)
	}
	if n.ents != nil {
		c.ents = make(map[string]backend.Ino, len(n.ents))
		for k, v := range n.ents {
			c.ents[k] = v
		}
	}
	return &c
}

// mFS is one volume's or snapshot's tree. orphans are unlinked inodes still held open.
type mFS struct {
	nodes   map[backend.Ino]*mNode
	orphans map[backend.Ino]bool
}

func newMFS(mode, uid, gid uint32) *mFS {
	root := &mNode{ino: backend.RootIno, mode: syscall.S_IFDIR | mode&07777, uid: uid, gid: gid,
		xattr: map[string][]byte{}, ents: map[string]backend.Ino{}, parent: backend.RootIno}
	return &mFS{nodes: map[backend.Ino]*mNode{backend.RootIno: root}, orphans: map[backend.Ino]bool{}}
}

// clone is a snapshot: a deep copy without the orphans (nothing can hold a snapshot's
// inode open through the live volume's file handles).
func (f *mFS) clone() *mFS {
	c := &mFS{nodes: map[backend.Ino]*mNode{}, orphans: map[backend.Ino]bool{}}
	for ino, n := range f.nodes {
		if !f.orphans[ino] {
			c.nodes[ino] = n.clone()
		}
	}
	return c
}

func (f *mFS) dirNlink(n *mNode) uint32 {
	nl := uint32(2)
	for _, ino := range n.ents {
		if f.nodes[ino].isDir() {
			nl++
		}
	}
	return nl
}

func (f *mFS) nlink(n *mNode) uint32 {
	if n.isDir() && !f.orphans[n.ino] {
		return f.dirNlink(n)
	}
	return n.nlink
}

type mEnt struct {
	parent backend.Ino
	name   string
	ino    backend.Ino
}

// walk lists every directory entry and directory in a deterministic order (map order is random
// and must not leak into the seeded choices).
func (f *mFS) walk() (ents []mEnt, dirs []backend.Ino) {
	var rec func(d backend.Ino)
	rec = func(d backend.Ino) {
		dirs = append(dirs, d)
		n := f.nodes[d]
		for _, name := range sortedKeys(n.ents) {
			ino := n.ents[name]
			ents = append(ents, mEnt{d, name, ino})
			if f.nodes[ino].isDir() {
				rec(ino)
			}
		}
	}
	rec(backend.RootIno)
	return ents, dirs
}

// isAncestor reports whether directory a is d or one of d's ancestors.
func (f *mFS) isAncestor(a, d backend.Ino) bool {
	for {
		if d == a {
			return true
		}
		if d == backend.RootIno {
			return false
		}
		d = f.nodes[d].parent
	}
}

// dropName removes the link of name in dir; the inode becomes an orphan when it loses its last
// name (the caller holds it open, as the kernel would), a directory at once.
func (f *mFS) dropName(dir backend.Ino, name string) {
	n := f.nodes[f.nodes[dir].ents[name]]
	delete(f.nodes[dir].ents, name)
	if n.isDir() {
		n.nlink = 0
		f.orphans[n.ino] = true
		return
	}
	n.nlink--
	if n.nlink == 0 {
		f.orphans[n.ino] = true
	}
}

type mSnap struct {
	name string
	fs   *mFS
}

type mVol struct {
	name  string
	opts  backend.VolumeOptions
	fs    *mFS
	snaps []*mSnap
	view  *backend.View
}

func (v *mVol) snap(name string) *mSnap {
	for _, s := range v.snaps {
		if s.name == name {
			return s
		}
	}
	return nil
}

type mRunner struct {
	t       testing.TB
	ctx     context.Context
	seed    uint64
	r       *rand.Rand
	dir     string
	st      *backend.Store
	vols    map[string]*mVol
	palette [][]byte
	log     []string
	step    int
	defOpts backend.VolumeOptions
	codecs  []string
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func envInt(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return def
}

func TestModel(t *testing.T) {
	seeds, steps := 16, 300
	if os.Getenv("FUSEVOL_LONG") != "" {
		seeds, steps = 300, 1500
	}
	steps = envInt("FUSEVOL_STEPS", steps)
	first := uint64(1)
	if s := os.Getenv("FUSEVOL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FUSEVOL_SEED: %v", err)
		}
		first, seeds = n, 1
	}
	for i := 0; i < seeds; i++ {
		seed := first + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runModel(t, seed, steps)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	ctx := context.Background()
	r := &mRunner{t: t, ctx: ctx, seed: seed, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dir: t.TempDir(), vols: map[string]*mVol{}}
	def, err := backend.ParseVolumeOptions(nil)
	if err != nil {
		t.Fatalf("ParseVolumeOptions(nil): %v", err)
	}
	def.ChunkSize = mtChunk
	r.defOpts = def
	for _, c := range []string{"none", "s2", "zstd"} {
		if _, err := backend.ParseVolumeOptions(map[string]string{"compression": c}); err == nil {
			r.codecs = append(r.codecs, c)
		}
	}
	for i := 0; i < 3; i++ {
		b := make([]byte, mtChunk)
		r.fillRandom(b)
		r.palette = append(r.palette, b)
	}
	r.open()
	defer func() {
		if r.st != nil {
			r.st.Close()
		}
	}()
	for r.step = 0; r.step < steps; r.step++ {
		r.doStep()
		if r.step%40 == 39 {
			r.checkAll()
		}
	}
	r.checkAll()
	r.logf("GC")
	r.must("GC", r.st.GC(ctx))
	r.checkAll()
	r.fsck()
	r.reopen()
	r.checkAll()
	r.fsck()
}

func (r *mRunner) logf(format string, args ...any) {
	r.log = append(r.log, fmt.Sprintf("%4d ", r.step)+fmt.Sprintf(format, args...))
}

func (r *mRunner) fail(format string, args ...any) {
	r.t.Helper()
	log := r.log
	const keep = 400
	if len(log) > keep {
		log = log[len(log)-keep:]
	}
	r.t.Fatalf("seed %d step %d: %s\nreproduce: FUSEVOL_SEED=%d go test -run 'TestModel' ./backend/\nop log (last %d):\n%s",
		r.seed, r.step, fmt.Sprintf(format, args...), r.seed, len(log), strings.Join(log, "\n"))
}

func (r *mRunner) must(what string, err error) {
	r.t.Helper()
	if err != nil {
		r.fail("%s: unexpected error %v", what, err)
	}
}

// check compares an operation's error with the model's expectation: want empty means success,
// otherwise the error must match one of want (errAny: any error). It reports whether the
// operation succeeded, which then is also what the model expected.
func (r *mRunner) check(what string, err error, want ...error) bool {
	r.t.Helper()
	if len(want) == 0 || (err == nil && slices.Contains(want, errNoop)) {
		if err != nil {
			r.fail("%s: got error %v, model expects success", what, err)
		}
		return true
	}
	if err == nil {
		r.fail("%s: succeeded, model expects one of %v", what, want)
	}
	for _, w := range want {
		if w == errAny || errors.Is(err, w) {
			return false
		}
	}
	r.fail("%s: got error %v, model expects one of %v", what, err, want)
	return false
}

func (r *mRunner) open() {
	// Odd seeds run background GC all the time, so that it races with every operation.
	gc := time.Duration(-1)
	if r.seed%2 == 1 {
		gc = 10 * time.Millisecond
	}
	st, err := backend.Open(r.ctx, r.dir, backend.Options{GCInterval: gc})
	if err != nil {
		r.fail("Open: %v", err)
	}
	r.st = st
	for _, name := range sortedKeys(r.vols) {
		v := r.vols[name]
		v.view = r.openView(name)
	}
}

func (r *mRunner) openView(name string) *backend.View {
	view, err := r.st.OpenVolume(r.ctx, name)
	if err != nil {
		r.fail("OpenVolume(%s): %v", name, err)
	}
	if view.ReadOnly() {
		r.fail("OpenVolume(%s): view is read-only", name)
	}
	if cs := view.ChunkSize(); cs != r.vols[name].opts.ChunkSize {
		r.fail("OpenVolume(%s): ChunkSize %d, want %d", name, cs, r.vols[name].opts.ChunkSize)
	}
	return view
}

// reopen closes and reopens the store: every orphan must be reclaimed, as after a crash.
func (r *mRunner) reopen() {
	r.logf("reopen store")
	r.must("Close", r.st.Close())
	gone := map[string][]backend.Ino{}
	for _, name := range sortedKeys(r.vols) {
		v := r.vols[name]
		for ino := range v.fs.orphans {
			gone[name] = append(gone[name], ino)
			delete(v.fs.nodes, ino)
		}
		v.fs.orphans = map[backend.Ino]bool{}
	}
	r.open()
	for name, inos := range gone {
		for _, ino := range inos {
			if _, err := r.vols[name].view.GetAttr(r.ctx, ino); !errors.Is(err, backend.ErrNotFound) {
				r.fail("after reopen, orphan %s ino %d: GetAttr err %v, want ErrNotFound", name, ino, err)
			}
		}
	}
}

func (r *mRunner) fsck() {
	rep, err := r.st.Fsck(r.ctx, false)
	if err != nil {
		r.fail("Fsck: %v", err)
	}
	if !rep.Clean() {
		r.fail("Fsck not clean:\n  %s", strings.Join(rep.Problems, "\n  "))
	}
}

// ---- random choices ----

func (r *mRunner) fillRandom(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// data makes n bytes for a write at off: random, zeros (holes), one repeated byte, sparse
// bytes, or palette content aligned to the file offset so that whole chunks repeat across
// files and volumes (dedup).
func (r *mRunner) data(n int, off int64) []byte {
	b := make([]byte, n)
	switch r.r.IntN(7) {
	case 0:
	case 1:
		c := byte(r.r.IntN(255) + 1)
		for i := range b {
			b[i] = c
		}
	case 2:
		for i := 0; n > 0 && i < n/1000+1; i++ {
			b[r.r.IntN(n)] = byte(1 + r.r.IntN(255))
		}
	case 3, 4:
		r.fillRandom(b)
	default:
		p := r.palette[r.r.IntN(len(r.palette))]
		for i := range b {
			b[i] = p[(off+int64(i))%mtChunk]
		}
	}
	return b
}

func (r *mRunner) offset(size int) int64 {
	switch r.r.IntN(6) {
	case 0:
		return int64(size)
	case 1:
		return max(0, int64(r.r.IntN(5)*mtChunk+r.r.IntN(7)-3))
	case 2:
		return int64(r.r.IntN(size + 1))
	case 3:
		return 0
	default:
		return int64(r.r.IntN(5 * mtChunk))
	}
}

func (r *mRunner) length() int {
	switch r.r.IntN(6) {
	case 0:
		return r.r.IntN(17)
	case 1:
		return 1 + r.r.IntN(4096)
	case 2:
		return mtChunk
	case 3:
		return mtChunk + r.r.IntN(7) - 3
	default:
		return 1 + r.r.IntN(2*mtChunk)
	}
}

var mtNames = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

func (r *mRunner) name() string {
	switch p := r.r.IntN(100); {
	case p == 0:
		return strings.Repeat("n", backend.MaxNameLen+1)
	case p == 1:
		return strings.Repeat("L", backend.MaxNameLen)
	default:
		return mtNames[r.r.IntN(len(mtNames))]
	}
}

func nameWant(name string) []error {
	if len(name) > backend.MaxNameLen {
		return []error{backend.ErrNameTooLong}
	}
	return nil
}

func (r *mRunner) pickVol() *mVol {
	names := sortedKeys(r.vols)
	return r.vols[names[r.r.IntN(len(names))]]
}

// pickDir mostly returns a directory; sometimes a non-directory to exercise ErrNotDir.
func (r *mRunner) pickDir(f *mFS) backend.Ino {
	ents, dirs := f.walk()
	if len(ents) > 0 && r.r.IntN(20) == 0 {
		return ents[r.r.IntN(len(ents))].ino
	}
	return dirs[r.r.IntN(len(dirs))]
}

func (r *mRunner) pickEnt(f *mFS, pred func(*mNode) bool) (mEnt, bool) {
	ents, _ := f.walk()
	var c []mEnt
	for _, e := range ents {
		if pred == nil || pred(f.nodes[e.ino]) {
			c = append(c, e)
		}
	}
	if len(c) == 0 {
		return mEnt{}, false
	}
	return c[r.r.IntN(len(c))], true
}

// pickFile returns a regular file: linked, or an orphan held open.
func (r *mRunner) pickFile(f *mFS) (*mNode, bool) {
	var inos []backend.Ino
	for ino, n := range f.nodes {
		if n.isReg() {
			inos = append(inos, ino)
		}
	}
	if len(inos) == 0 {
		return nil, false
	}
	slices.Sort(inos)
	return f.nodes[inos[r.r.IntN(len(inos))]], true
}

func (r *mRunner) sortedOrphans(f *mFS) []backend.Ino {
	var o []backend.Ino
	for ino := range f.orphans {
		o = append(o, ino)
	}
	slices.Sort(o)
	return o
}

// ---- steps ----

func (r *mRunner) doStep() {
	if len(r.vols) == 0 || r.r.IntN(100) == 0 {
		r.opCreateVolume()
		return
	}
	v := r.pickVol()
	switch p := r.r.IntN(1000); {
	case p < 140:
		r.opMknod(v)
	case p < 300:
		r.opWrite(v)
	case p < 320:
		r.opCloneRange(v)
	case p < 360:
		r.opCommitChunks(v)
	case p < 420:
		r.opTruncate(v)
	case p < 450:
		r.opSetAttr(v)
	case p < 500:
		r.opRead(v)
	case p < 580:
		r.opRename(v)
	case p < 610:
		r.opLink(v)
	case p < 660:
		r.opUnlink(v)
	case p < 690:
		r.opRmdir(v)
	case p < 740:
		r.opXattr(v)
	case p < 765:
		r.opFallocate(v)
	case p < 790:
		r.opForget(v)
	case p < 800:
		r.opLookupMissing(v)
	case p < 835:
		r.opSnapshot(v)
	case p < 855:
		r.opClone(v)
	case p < 870:
		r.opRestore(v)
	case p < 890:
		r.opDeleteSnapshot(v)
	case p < 900:
		r.opDeleteVolume(v)
	case p < 910:
		r.logf("GC")
		r.must("GC", r.st.GC(r.ctx))
	case p < 914:
		r.reopen()
	case p < 920:
		r.logf("fsck")
		r.fsck()
	case p < 935:
		r.opReadOnly(v)
	case p < 975:
		r.opCommitExtents(v)
	case p < 990:
		r.opLogWrites(v)
	default:
		r.opWrite(v)
	}
}

func (r *mRunner) volName() string { return fmt.Sprintf("v%d", r.r.IntN(4)) }

func (r *mRunner) opCreateVolume() {
	name := r.volName()
	opts := r.defOpts
	opts.Mode = uint32(0700 + r.r.IntN(0100))
	opts.UID = uint32(r.r.IntN(3) * 1000)
	opts.GID = uint32(r.r.IntN(3) * 1000)
	if len(r.codecs) > 0 {
		opts.Compression = r.codecs[r.r.IntN(len(r.codecs))]
	}
	if r.r.IntN(4) == 0 {
		opts.Size = int64(128<<10 + r.r.IntN(1<<20))
	}
	r.logf("CreateVolume %s mode=%o uid=%d gid=%d compression=%s size=%d", name, opts.Mode, opts.UID, opts.GID, opts.Compression, opts.Size)
	var want []error
	if r.vols[name] != nil {
		want = []error{backend.ErrExists}
	}
	info, err := r.st.CreateVolume(r.ctx, name, opts)
	if !r.check("CreateVolume "+name, err, want...) {
		return
	}
	if info.Name != name || info.ID == "" || info.CreatedAt.IsZero() {
		r.fail("CreateVolume %s: info %+v", name, info)
	}
	v := &mVol{name: name, opts: opts, fs: newMFS(opts.Mode, opts.UID, opts.GID)}
	r.vols[name] = v
	v.view = r.openView(name)
	r.checkVol(v, true)
}

func (r *mRunner) opMknod(v *mVol) {
	f := v.fs
	parent := r.pickDir(f)
	name := r.name()
	n := backend.NewNode{Mode: uint32(r.r.IntN(010000)), UID: uint32(r.r.IntN(2)), GID: uint32(r.r.IntN(2))}
	switch p := r.r.IntN(100); {
	case p < 60:
		n.Mode |= syscall.S_IFREG
	case p < 85:
		n.Mode |= syscall.S_IFDIR
	case p < 95:
		n.Mode |= syscall.S_IFLNK
		n.Target = strings.Repeat("t/", r.r.IntN(40)) + "x"
	case p < 98:
		n.Mode |= syscall.S_IFIFO
	default:
		n.Mode |= syscall.S_IFCHR
		n.Rdev = uint32(r.r.IntN(1 << 16))
	}
	r.logf("Mknod %s parent=%d name=%q mode=%o target=%q rdev=%d", v.name, parent, trunc(name), n.Mode, n.Target, n.Rdev)
	want := nameWant(name)
	pn := f.nodes[parent]
	if !pn.isDir() {
		want = append(want, backend.ErrNotDir)
	} else if _, ok := pn.ents[name]; ok {
		want = append(want, backend.ErrExists)
	}
	a, err := v.view.Mknod(r.ctx, parent, name, n)
	if !r.check("Mknod", err, want...) {
		return
	}
	if _, dup := f.nodes[a.Ino]; dup || a.Ino == 0 {
		r.fail("Mknod returned ino %d which is already in use", a.Ino)
	}
	node := &mNode{ino: a.Ino, mode: n.Mode, uid: n.UID, gid: n.GID, target: n.Target, nlink: 1, xattr: map[string][]byte{}}
	if n.Mode&syscall.S_IFMT == syscall.S_IFCHR {
		node.rdev = n.Rdev
	}
	if pn.mode&syscall.S_ISGID != 0 {
		// A set-group-ID directory hands its group (and, to directories, the bit) down.
		node.gid = pn.gid
		if node.isDir() {
			node.mode |= syscall.S_ISGID
		}
	}
	if node.isDir() {
		node.ents = map[string]backend.Ino{}
		node.parent = parent
	}
	f.nodes[a.Ino] = node
	pn.ents[name] = a.Ino
	r.compareAttr("Mknod result", a, f, node)
}

func trunc(s string) string {
	if len(s) > 12 {
		return fmt.Sprintf("%s…(%d)", s[:8], len(s))
	}
	return s
}

// writeModel applies a write of b at off to the model node.
func writeModel(n *mNode, b []byte, off int64) {
	if len(b) == 0 {
		return
	}
	end := int(off) + len(b)
	if end > len(n.data) {
		n.data = append(n.data, make([]byte, end-len(n.data))...)
	}
	copy(n.data[off:], b)
}

func resize(n *mNode, size int) {
	if size <= len(n.data) {
		n.data = n.data[:size:size]
		return
	}
	n.data = append(n.data, make([]byte, size-len(n.data))...)
}

func (r *mRunner) opWrite(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok || r.r.IntN(30) == 0 {
		// Writing to a directory is refused.
		if e, ok := r.pickEnt(v.fs, (*mNode).isDir); ok {
			r.logf("WriteAt %s dir ino=%d", v.name, e.ino)
			_, err := v.view.WriteAt(r.ctx, e.ino, []byte("x"), 0)
			r.check("WriteAt dir", err, backend.ErrIsDir, backend.ErrInvalid)
		}
		return
	}
	off := r.offset(len(n.data))
	l := r.length()
	if int(off)+l > mtMaxFile {
		l = max(0, mtMaxFile-int(off))
	}
	b := r.data(l, off)
	r.logf("WriteAt %s ino=%d off=%d len=%d orphan=%v", v.name, n.ino, off, l, v.fs.orphans[n.ino])
	a, err := v.view.WriteAt(r.ctx, n.ino, b, off)
	if !r.check("WriteAt", err, quotaWant(v)...) {
		return
	}
	writeModel(n, b, off)
	n.mtime, n.atime = 0, 0
	r.compareAttr("WriteAt result", a, v.fs, n)
}

// opCloneRange copies a range between two files (or within one) with CloneRange; offsets are
// often chunk-aligned so that chunks are shared. The model is copy_file_range(2): shortened at
// the source's end, then overlapping ranges of one file refused.
func (r *mRunner) opCloneRange(v *mVol) {
	from, sfs, label := v.view, v.fs, v.name
	if len(v.snaps) > 0 && r.r.IntN(3) == 0 {
		// From a snapshot of the volume (CloneRangeFrom): bringing data back.
		sn := v.snaps[r.r.IntN(len(v.snaps))]
		view, err := r.st.OpenSnapshot(r.ctx, v.name, sn.name)
		if err != nil {
			r.fail("OpenSnapshot %s@%s: %v", v.name, sn.name, err)
		}
		from, sfs, label = view, sn.fs, v.name+"@"+sn.name
	}
	src, ok := r.pickFile(sfs)
	dst, ok2 := r.pickFile(v.fs)
	if !ok || !ok2 || sfs.orphans[src.ino] {
		return
	}
	srcOff, dstOff := r.offset(len(src.data)), r.offset(len(dst.data))
	if r.r.IntN(2) == 0 {
		srcOff, dstOff = int64(r.r.IntN(5))*mtChunk, int64(r.r.IntN(5))*mtChunk
	}
	l := int64(r.length())
	if r.r.IntN(3) == 0 {
		l = int64(1+r.r.IntN(3)) * mtChunk
	}
	l = max(0, min(l, mtMaxFile-dstOff))
	r.logf("CloneRange %s ino=%d off=%d -> %s ino=%d off=%d len=%d", label, src.ino, srcOff, v.name, dst.ino, dstOff, l)
	got, err := v.view.CloneRangeFrom(r.ctx, from, src.ino, srcOff, dst.ino, dstOff, l)
	want := max(0, min(l, int64(len(src.data))-srcOff))
	if want > 0 && src == dst && srcOff < dstOff+want && dstOff < srcOff+want {
		r.check("CloneRange overlapping", err, backend.ErrInvalid)
		return
	}
	if !r.check("CloneRange", err, quotaWant(v)...) {
		return
	}
	if got != want {
		r.fail("CloneRange copied %d bytes, want %d", got, want)
	}
	if want > 0 {
		writeModel(dst, slices.Clone(src.data[srcOff:srcOff+want]), dstOff)
		dst.mtime, dst.atime = 0, 0
	}
}

func (r *mRunner) opCommitChunks(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok {
		return
	}
	k := 1 + r.r.IntN(3)
	idx := r.r.Perm(6)[:k]
	var minSize uint64
	if r.r.IntN(3) == 0 {
		minSize = uint64(r.r.IntN(mtMaxFile + 1))
	}
	var chunks []backend.Chunk
	var descr []string
	type upd struct {
		off int64
		b   []byte
	}
	var upds []upd
	for _, i := range idx {
		l := mtChunk
		if r.r.IntN(3) == 0 {
			l = r.r.IntN(mtChunk + 1)
		}
		off := int64(i) * mtChunk
		b := r.data(l, off)
		chunks = append(chunks, v.view.PrepareChunk(uint64(i), b))
		upds = append(upds, upd{off, b})
		descr = append(descr, fmt.Sprintf("%d:%d", i, l))
	}
	r.logf("CommitChunks %s ino=%d chunks=%v minSize=%d", v.name, n.ino, descr, minSize)
	a, err := v.view.CommitChunks(r.ctx, n.ino, chunks, minSize)
	if !r.check("CommitChunks", err, quotaWant(v)...) {
		return
	}
	size := max(uint64(len(n.data)), minSize)
	for _, u := range upds {
		size = max(size, uint64(u.off)+uint64(len(u.b)))
	}
	resize(n, int(size))
	for _, u := range upds {
		// The chunk is replaced as a whole: whatever it held past the new content reads as zeros.
		end := min(u.off+mtChunk, int64(size))
		clear(n.data[u.off:end])
		copy(n.data[u.off:], u.b)
	}
	n.mtime, n.atime = 0, 0
	r.compareAttr("CommitChunks result", a, v.fs, n)
}

// opCommitExtents commits small partial-chunk writes (extents), often many into one chunk so
// that compaction happens.
func (r *mRunner) opCommitExtents(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok {
		return
	}
	idx := r.r.IntN(5)
	var chunks []backend.Chunk
	var descr []string
	type upd struct {
		off int64
		b   []byte
	}
	var upds []upd
	for range 1 + r.r.IntN(20) {
		if r.r.IntN(4) == 0 {
			idx = r.r.IntN(5)
		}
		in := r.r.IntN(mtChunk)
		if r.r.IntN(4) == 0 && len(n.data) > 0 {
			in = r.r.IntN(len(n.data)) % mtChunk
		}
		l := min(mtChunk-in, 1+r.r.IntN(4096))
		off := int64(idx*mtChunk + in)
		b := r.data(l, off)
		chunks = append(chunks, v.view.PrepareExtent(uint64(idx), in, b))
		upds = append(upds, upd{off, b})
		descr = append(descr, fmt.Sprintf("%d+%d:%d", idx, in, l))
	}
	r.logf("CommitChunks extents %s ino=%d %v", v.name, n.ino, descr)
	a, err := v.view.CommitChunks(r.ctx, n.ino, chunks, 0)
	if !r.check("CommitChunks extents", err, quotaWant(v)...) {
		return
	}
	for _, u := range upds {
		writeModel(n, u.b, u.off)
	}
	n.mtime, n.atime = 0, 0
	r.compareAttr("CommitChunks extents result", a, v.fs, n)
}

// opLogWrites makes writes durable through the intent log (as fsync does), then settles them
// in one of the ways the store does: a replay at reopen, a change to the file (a truncation to
// its own size) or a snapshot. Volumes with a quota are skipped: the fs checks the quota before
// it logs, the store does not.
func (r *mRunner) opLogWrites(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok || v.opts.Size > 0 {
		return
	}
	var ws []backend.Write
	var descr []string
	size := uint64(len(n.data))
	for range 1 + r.r.IntN(3) {
		off := r.offset(len(n.data))
		l := max(0, min(r.length(), mtMaxFile-int(off)))
		b := r.data(l, off)
		ws = append(ws, backend.Write{Off: uint64(off), Data: b})
		descr = append(descr, fmt.Sprintf("%d:%d", off, l))
		size = max(size, uint64(off)+uint64(l))
	}
	r.logf("LogWrites %s ino=%d %v size=%d", v.name, n.ino, descr, size)
	logged, err := v.view.LogWrites(r.ctx, n.ino, size, time.Now().UnixNano(), ws)
	if !r.check("LogWrites", err) {
		return
	}
	if !logged {
		r.fail("LogWrites of %v: not logged", descr)
	}
	for _, w := range ws {
		writeModel(n, w.Data, int64(w.Off))
	}
	resize(n, int(size))
	n.mtime, n.atime = 0, 0
	switch r.r.IntN(3) {
	case 0:
		orphan := v.fs.orphans[n.ino]
		r.reopen()
		if orphan {
			return // reclaimed at reopen
		}
	case 1:
		r.logf("SetAttr %s ino=%d size=%d (settles)", v.name, n.ino, size)
		_, err := v.view.SetAttr(r.ctx, n.ino, backend.SetAttr{Valid: backend.SetSize, Size: size})
		r.must("SetAttr", err)
	default:
		r.opSnapshot(v)
	}
	r.checkRead(v.view, n, 0, len(n.data), "after settling logged writes")
}

func (r *mRunner) opTruncate(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok || r.r.IntN(30) == 0 {
		if e, ok := r.pickEnt(v.fs, (*mNode).isDir); ok {
			r.logf("SetAttr size %s dir ino=%d", v.name, e.ino)
			_, err := v.view.SetAttr(r.ctx, e.ino, backend.SetAttr{Valid: backend.SetSize, Size: 0})
			r.check("truncate dir", err, backend.ErrIsDir, backend.ErrInvalid)
		}
		return
	}
	var size int
	switch r.r.IntN(5) {
	case 0:
		size = 0
	case 1:
		size = r.r.IntN(len(n.data) + 1)
	case 2:
		size = r.r.IntN(6) * mtChunk
	default:
		size = r.r.IntN(mtMaxFile + 1)
	}
	r.logf("SetAttr size %s ino=%d size=%d (was %d)", v.name, n.ino, size, len(n.data))
	a, err := v.view.SetAttr(r.ctx, n.ino, backend.SetAttr{Valid: backend.SetSize, Size: uint64(size)})
	if !r.check("SetAttr size", err, quotaWant(v)...) {
		return
	}
	resize(n, size)
	n.mtime, n.atime = 0, 0
	r.compareAttr("SetAttr size result", a, v.fs, n)
}

func (r *mRunner) opSetAttr(v *mVol) {
	// Symlinks are left out: Linux never changes a symlink's mode.
	e, ok := r.pickEnt(v.fs, func(n *mNode) bool { return !n.isLink() })
	if !ok {
		return
	}
	n := v.fs.nodes[e.ino]
	var in backend.SetAttr
	if r.r.IntN(2) == 0 {
		in.Valid |= backend.SetMode
		in.Mode = uint32(r.r.IntN(010000))
	}
	if r.r.IntN(3) == 0 {
		in.Valid |= backend.SetUID
		in.UID = uint32(r.r.IntN(5))
	}
	if r.r.IntN(3) == 0 {
		in.Valid |= backend.SetGID
		in.GID = uint32(r.r.IntN(5))
	}
	if n.isReg() && r.r.IntN(2) == 0 {
		in.Valid |= backend.SetAtime | backend.SetMtime
		in.Atime = 1e18 + r.r.Int64N(1e17)
		in.Mtime = 1e18 + r.r.Int64N(1e17)
	}
	r.logf("SetAttr %s ino=%d %+v", v.name, e.ino, in)
	a, err := v.view.SetAttr(r.ctx, e.ino, in)
	r.check("SetAttr", err)
	if in.Valid&backend.SetMode != 0 {
		n.mode = n.typ() | in.Mode
	}
	if in.Valid&backend.SetUID != 0 {
		n.uid = in.UID
	}
	if in.Valid&backend.SetGID != 0 {
		n.gid = in.GID
	}
	if in.Valid&backend.SetMtime != 0 {
		n.atime, n.mtime = in.Atime, in.Mtime
	}
	r.compareAttr("SetAttr result", a, v.fs, n)
}

// quotaWant is the expectation of an operation that may allocate: on a volume with a quota it may
// fail with ErrNoSpace, and must then change nothing (the model does not predict the exact
// allocation, so it only checks that refusals lose nothing and usage stays within the limit).
func quotaWant(v *mVol) []error {
	if v.opts.Size == 0 {
		return nil
	}
	return []error{backend.ErrNoSpace, errNoop}
}

func (r *mRunner) opRead(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok {
		return
	}
	off := r.offset(len(n.data))
	l := r.length()
	r.logf("ReadAt %s ino=%d off=%d len=%d size=%d", v.name, n.ino, off, l, len(n.data))
	r.checkRead(v.view, n, off, l, "ReadAt")
}

func (r *mRunner) checkRead(view *backend.View, n *mNode, off int64, l int, what string) {
	buf := make([]byte, l)
	for i := range buf {
		buf[i] = 0xA5
	}
	got, err := view.ReadAt(r.ctx, n.ino, buf, off)
	if err != nil && err != io.EOF {
		r.fail("%s ino=%d off=%d len=%d: %v", what, n.ino, off, l, err)
	}
	want := 0
	if int(off) < len(n.data) {
		want = min(l, len(n.data)-int(off))
	}
	if got != want {
		r.fail("%s ino=%d off=%d len=%d: read %d bytes, want %d (size %d)", what, n.ino, off, l, got, want, len(n.data))
	}
	if want > 0 && !bytes.Equal(buf[:got], n.data[off:int(off)+got]) {
		i := 0
		for buf[i] == n.data[int(off)+i] {
			i++
		}
		r.fail("%s ino=%d off=%d len=%d: content differs first at file offset %d: got %#x want %#x",
			what, n.ino, off, l, int(off)+i, buf[i], n.data[int(off)+i])
	}
	n.atime = 0
}

func (r *mRunner) opRename(v *mVol) {
	f := v.fs
	src, ok := r.pickEnt(f, nil)
	if !ok {
		return
	}
	if r.r.IntN(20) == 0 {
		src.name = "zz-missing"
		src.ino = 0
	}
	dstParent := r.pickDir(f)
	dstName := r.name()
	if r.r.IntN(4) == 0 {
		// Aim at an existing entry: replace, exchange, or a hard link of the same inode.
		if e, ok := r.pickEnt(f, nil); ok {
			dstParent, dstName = e.parent, e.name
		}
	}
	var flags uint32
	switch p := r.r.IntN(100); {
	case p < 15:
		flags = backend.RenameNoReplace
	case p < 32:
		flags = backend.RenameExchange
	case p == 99:
		flags = backend.RenameNoReplace | backend.RenameExchange
	}
	r.logf("Rename %s %d/%q -> %d/%q flags=%d", v.name, src.parent, src.name, dstParent, trunc(dstName), flags)
	want, apply := r.renameModel(f, src, dstParent, dstName, flags)
	if len(want) > 0 {
		// When several things are wrong, any of their errors will do.
		want = append(want, nameWant(dstName)...)
	}
	err := v.view.Rename(r.ctx, src.parent, src.name, dstParent, dstName, flags)
	if r.check("Rename", err, want...) && apply != nil {
		apply()
	}
}

// renameModel returns the acceptable errors (none: must succeed) and the model change.
func (r *mRunner) renameModel(f *mFS, src mEnt, dp backend.Ino, dn string, flags uint32) ([]error, func()) {
	if flags == backend.RenameNoReplace|backend.RenameExchange {
		return []error{backend.ErrInvalid}, nil
	}
	dpn := f.nodes[dp]
	if !dpn.isDir() {
		return []error{backend.ErrNotDir}, nil
	}
	if src.ino == 0 {
		return []error{backend.ErrNotFound}, nil
	}
	if w := nameWant(dn); w != nil {
		return w, nil
	}
	sn := f.nodes[src.ino]
	dino, dexists := dpn.ents[dn]
	same := src.parent == dp && src.name == dn
	switch {
	case flags == backend.RenameExchange:
		if !dexists {
			return []error{backend.ErrNotFound}, nil
		}
		if same || dino == src.ino {
			return nil, nil
		}
		dn2 := f.nodes[dino]
		if (sn.isDir() && f.isAncestor(src.ino, dp)) || (dn2.isDir() && f.isAncestor(dino, src.parent)) {
			return []error{errAny}, nil
		}
		return nil, func() {
			f.nodes[src.parent].ents[src.name] = dino
			dpn.ents[dn] = src.ino
			if sn.isDir() {
				sn.parent = dp
			}
			if dn2.isDir() {
				dn2.parent = src.parent
			}
		}
	case flags == backend.RenameNoReplace && dexists:
		if same || dino == src.ino {
			// Linux's VFS answers EEXIST before a filesystem sees this; a store that calls it
			// a no-op is as right.
			return []error{backend.ErrExists, errNoop}, nil
		}
		return []error{backend.ErrExists}, nil
	}
	if same {
		return nil, nil
	}
	if sn.isDir() && f.isAncestor(src.ino, dp) {
		return []error{backend.ErrInvalid}, nil
	}
	if dexists {
		dn2 := f.nodes[dino]
		switch {
		case dino == src.ino:
			// Two names of one inode: POSIX rename does nothing and succeeds.
			return nil, nil
		case sn.isDir() && !dn2.isDir():
			return []error{backend.ErrNotDir}, nil
		case !sn.isDir() && dn2.isDir():
			return []error{backend.ErrIsDir}, nil
		case dn2.isDir() && len(dn2.ents) > 0:
			return []error{backend.ErrNotEmpty, backend.ErrExists}, nil
		}
	}
	return nil, func() {
		if dexists {
			f.dropName(dp, dn)
		}
		delete(f.nodes[src.parent].ents, src.name)
		dpn.ents[dn] = src.ino
		if sn.isDir() {
			sn.parent = dp
		}
	}
}

func (r *mRunner) opLink(v *mVol) {
	f := v.fs
	src, ok := r.pickEnt(f, func(n *mNode) bool { return !n.isDir() })
	if !ok || r.r.IntN(25) == 0 {
		src, ok = r.pickEnt(f, (*mNode).isDir)
		if !ok {
			return
		}
	}
	dp := r.pickDir(f)
	dn := r.name()
	r.logf("Link %s ino=%d -> %d/%q", v.name, src.ino, dp, trunc(dn))
	sn := f.nodes[src.ino]
	want := nameWant(dn)
	switch {
	case sn.isDir():
		want = append(want, errAny)
	case !f.nodes[dp].isDir():
		want = append(want, backend.ErrNotDir)
	default:
		if _, ok := f.nodes[dp].ents[dn]; ok {
			want = append(want, backend.ErrExists)
		}
	}
	a, err := v.view.Link(r.ctx, src.ino, dp, dn)
	if !r.check("Link", err, want...) {
		return
	}
	f.nodes[dp].ents[dn] = src.ino
	sn.nlink++
	r.compareAttr("Link result", a, f, sn)
}

func (r *mRunner) opUnlink(v *mVol) {
	f := v.fs
	e, ok := r.pickEnt(f, func(n *mNode) bool { return !n.isDir() })
	if !ok || r.r.IntN(15) == 0 {
		if e, ok = r.pickEnt(f, nil); !ok {
			return
		}
	}
	if r.r.IntN(20) == 0 {
		e.name = "zz-missing"
	}
	r.logf("Unlink %s %d/%q", v.name, e.parent, e.name)
	var want []error
	ino, exists := f.nodes[e.parent].ents[e.name]
	switch {
	case !exists:
		want = []error{backend.ErrNotFound}
	case f.nodes[ino].isDir():
		want = []error{errAny} // EISDIR on Linux, EPERM in POSIX
	}
	err := v.view.Unlink(r.ctx, e.parent, e.name)
	if r.check("Unlink", err, want...) {
		f.dropName(e.parent, e.name)
	}
}

func (r *mRunner) opRmdir(v *mVol) {
	f := v.fs
	e, ok := r.pickEnt(f, (*mNode).isDir)
	if !ok || r.r.IntN(10) == 0 {
		if e, ok = r.pickEnt(f, nil); !ok {
			return
		}
	}
	if r.r.IntN(20) == 0 {
		e.name = "zz-missing"
	}
	r.logf("Rmdir %s %d/%q", v.name, e.parent, e.name)
	var want []error
	ino, exists := f.nodes[e.parent].ents[e.name]
	switch {
	case !exists:
		want = []error{backend.ErrNotFound}
	case !f.nodes[ino].isDir():
		want = []error{backend.ErrNotDir}
	case len(f.nodes[ino].ents) > 0:
		want = []error{backend.ErrNotEmpty, backend.ErrExists}
	}
	err := v.view.Rmdir(r.ctx, e.parent, e.name)
	if r.check("Rmdir", err, want...) {
		f.dropName(e.parent, e.name) // an orphan until Forget: compareFS checks it has nlink 0
	}
}

var mtXattrNames = []string{"user.a", "user.b", "user.long." + strings.Repeat("x", 200)}

func (r *mRunner) opXattr(v *mVol) {
	f := v.fs
	e, ok := r.pickEnt(f, func(n *mNode) bool { return n.isDir() || n.isReg() })
	ino := backend.RootIno
	if ok {
		ino = e.ino
	}
	n := f.nodes[ino]
	name := mtXattrNames[r.r.IntN(len(mtXattrNames))]
	_, has := n.xattr[name]
	switch r.r.IntN(4) {
	case 0, 1:
		val := make([]byte, r.r.IntN(64))
		if r.r.IntN(8) == 0 {
			val = make([]byte, 3000)
		}
		r.fillRandom(val)
		flags := []uint32{0, 0, backend.XattrCreate, backend.XattrReplace}[r.r.IntN(4)]
		r.logf("SetXattr %s ino=%d %s len=%d flags=%d", v.name, ino, trunc(name), len(val), flags)
		var want []error
		if flags == backend.XattrCreate && has {
			want = []error{backend.ErrExists}
		}
		if flags == backend.XattrReplace && !has {
			want = []error{backend.ErrNoData}
		}
		if r.check("SetXattr", v.view.SetXattr(r.ctx, ino, name, val, flags), want...) {
			n.xattr[name] = val
		}
	case 2:
		r.logf("RemoveXattr %s ino=%d %s", v.name, ino, trunc(name))
		var want []error
		if !has {
			want = []error{backend.ErrNoData}
		}
		if r.check("RemoveXattr", v.view.RemoveXattr(r.ctx, ino, name), want...) {
			delete(n.xattr, name)
		}
	default:
		r.logf("GetXattr %s ino=%d %s", v.name, ino, trunc(name))
		got, err := v.view.GetXattr(r.ctx, ino, name)
		var want []error
		if !has {
			want = []error{backend.ErrNoData}
		}
		if r.check("GetXattr", err, want...) && !bytes.Equal(got, n.xattr[name]) {
			r.fail("GetXattr ino=%d %s: got %d bytes, want %d", ino, name, len(got), len(n.xattr[name]))
		}
	}
}

func (r *mRunner) opFallocate(v *mVol) {
	n, ok := r.pickFile(v.fs)
	if !ok {
		return
	}
	off := r.offset(len(n.data))
	l := int64(r.length())
	if off+l > mtMaxFile {
		l = max(1, mtMaxFile-off)
	}
	mode := []uint32{0, 1, 3, 3}[r.r.IntN(4)]
	r.logf("Fallocate %s ino=%d off=%d len=%d mode=%d", v.name, n.ino, off, l, mode)
	if l == 0 {
		r.check("Fallocate", v.view.Fallocate(r.ctx, n.ino, off, l, mode), backend.ErrInvalid)
		return
	}
	if !r.check("Fallocate", v.view.Fallocate(r.ctx, n.ino, off, l, mode), quotaWant(v)...) {
		return
	}
	n.mtime, n.atime = 0, 0
	switch {
	case mode == 0 && int(off+l) > len(n.data):
		resize(n, int(off+l))
	case mode == 3 && int(off) < len(n.data):
		clear(n.data[off:min(int(off+l), len(n.data))])
	}
}

func (r *mRunner) opForget(v *mVol) {
	f := v.fs
	if o := r.sortedOrphans(f); len(o) > 0 && r.r.IntN(3) > 0 {
		ino := o[r.r.IntN(len(o))]
		r.logf("Forget %s orphan ino=%d", v.name, ino)
		r.check("Forget orphan", v.view.Forget(r.ctx, ino))
		delete(f.orphans, ino)
		delete(f.nodes, ino)
		if _, err := v.view.GetAttr(r.ctx, ino); !errors.Is(err, backend.ErrNotFound) {
			r.fail("GetAttr of forgotten orphan %d: err %v, want ErrNotFound", ino, err)
		}
		return
	}
	// Forgetting a linked inode (the kernel does it all the time) changes nothing.
	if e, ok := r.pickEnt(f, nil); ok {
		r.logf("Forget %s linked ino=%d", v.name, e.ino)
		r.check("Forget linked", v.view.Forget(r.ctx, e.ino))
	}
}

func (r *mRunner) opLookupMissing(v *mVol) {
	_, dirs := v.fs.walk()
	d := dirs[r.r.IntN(len(dirs))]
	name := mtNames[r.r.IntN(len(mtNames))]
	r.logf("Lookup %s %d/%q", v.name, d, name)
	a, err := v.view.Lookup(r.ctx, d, name)
	ino, ok := v.fs.nodes[d].ents[name]
	if !ok {
		r.check("Lookup missing", err, backend.ErrNotFound)
		return
	}
	r.check("Lookup", err)
	r.compareAttr("Lookup", a, v.fs, v.fs.nodes[ino])
}

func (r *mRunner) snapName() string { return fmt.Sprintf("s%d", r.r.IntN(4)) }

func (r *mRunner) opSnapshot(v *mVol) {
	name := r.snapName()
	r.logf("CreateSnapshot %s@%s", v.name, name)
	var want []error
	if v.snap(name) != nil {
		want = []error{backend.ErrExists}
	}
	info, err := r.st.CreateSnapshot(r.ctx, v.name, name)
	if !r.check("CreateSnapshot", err, want...) {
		return
	}
	if info.Volume != v.name || info.Name != name {
		r.fail("CreateSnapshot info %+v", info)
	}
	s := &mSnap{name: name, fs: v.fs.clone()}
	v.snaps = append(v.snaps, s)
	r.checkSnap(v, s)
}

func (r *mRunner) opClone(v *mVol) {
	name := r.volName()
	snap := r.snapName()
	opts := v.opts
	opts.From = v.name + "@" + snap
	r.logf("CreateVolume %s from=%s", name, opts.From)
	s := v.snap(snap)
	var want []error
	switch {
	case r.vols[name] != nil:
		want = []error{backend.ErrExists}
	case s == nil:
		want = []error{backend.ErrNotFound}
	}
	_, err := r.st.CreateVolume(r.ctx, name, opts)
	if !r.check("clone", err, want...) {
		return
	}
	c := &mVol{name: name, opts: v.opts, fs: s.fs.clone()}
	r.vols[name] = c
	c.view = r.openView(name)
	r.checkVol(c, true)
}

// forgetAll releases the volume's orphans, as unmounting does before restore or delete.
func (r *mRunner) forgetAll(v *mVol) {
	for _, ino := range r.sortedOrphans(v.fs) {
		r.logf("Forget %s orphan ino=%d (unmount)", v.name, ino)
		r.check("Forget", v.view.Forget(r.ctx, ino))
		delete(v.fs.nodes, ino)
	}
	v.fs.orphans = map[backend.Ino]bool{}
}

func (r *mRunner) opRestore(v *mVol) {
	name := r.snapName()
	s := v.snap(name)
	if s != nil {
		r.forgetAll(v)
	}
	r.logf("RestoreSnapshot %s@%s", v.name, name)
	var want []error
	if s == nil {
		want = []error{backend.ErrNotFound}
	}
	if !r.check("RestoreSnapshot", r.st.RestoreSnapshot(r.ctx, v.name, name), want...) {
		return
	}
	v.fs = s.fs.clone()
	v.view = r.openView(v.name)
	r.checkVol(v, true)
}

func (r *mRunner) opDeleteSnapshot(v *mVol) {
	name := r.snapName()
	r.logf("DeleteSnapshot %s@%s", v.name, name)
	var want []error
	if v.snap(name) == nil {
		want = []error{backend.ErrNotFound}
	}
	if !r.check("DeleteSnapshot", r.st.DeleteSnapshot(r.ctx, v.name, name), want...) {
		return
	}
	v.snaps = slices.DeleteFunc(v.snaps, func(s *mSnap) bool { return s.name == name })
	if _, err := r.st.OpenSnapshot(r.ctx, v.name, name); !errors.Is(err, backend.ErrNotFound) {
		r.fail("OpenSnapshot of deleted %s@%s: err %v, want ErrNotFound", v.name, name, err)
	}
	r.checkVol(v, false)
}

func (r *mRunner) opDeleteVolume(v *mVol) {
	r.forgetAll(v)
	r.logf("DeleteVolume %s", v.name)
	r.must("DeleteVolume", r.st.DeleteVolume(r.ctx, v.name))
	delete(r.vols, v.name)
	if _, err := r.st.GetVolume(r.ctx, v.name); !errors.Is(err, backend.ErrNotFound) {
		r.fail("GetVolume of deleted %s: err %v, want ErrNotFound", v.name, err)
	}
	if err := r.st.DeleteVolume(r.ctx, v.name); !errors.Is(err, backend.ErrNotFound) {
		r.fail("second DeleteVolume %s: err %v, want ErrNotFound", v.name, err)
	}
}

// opReadOnly tries a mutation through a snapshot view: it must be refused and change nothing.
func (r *mRunner) opReadOnly(v *mVol) {
	if len(v.snaps) == 0 {
		return
	}
	s := v.snaps[r.r.IntN(len(v.snaps))]
	view, err := r.st.OpenSnapshot(r.ctx, v.name, s.name)
	if err != nil {
		r.fail("OpenSnapshot %s@%s: %v", v.name, s.name, err)
	}
	if !view.ReadOnly() {
		r.fail("snapshot view %s@%s is not read-only", v.name, s.name)
	}
	file, hasFile := r.pickFile(s.fs)
	if hasFile && s.fs.orphans[file.ino] {
		hasFile = false
	}
	op := r.r.IntN(5)
	r.logf("read-only op %d on %s@%s", op, v.name, s.name)
	switch {
	case op == 0:
		_, err = view.Mknod(r.ctx, backend.RootIno, "ro", backend.NewNode{Mode: syscall.S_IFREG | 0644})
	case op == 1 && hasFile:
		_, err = view.WriteAt(r.ctx, file.ino, []byte("nope"), 0)
	case op == 2 && hasFile:
		_, err = view.SetAttr(r.ctx, file.ino, backend.SetAttr{Valid: backend.SetSize})
	case op == 3:
		err = view.SetXattr(r.ctx, backend.RootIno, "user.ro", []byte("x"), 0)
	default:
		err = view.Rename(r.ctx, backend.RootIno, "a", backend.RootIno, "b", 0)
	}
	if !errors.Is(err, backend.ErrReadOnly) {
		r.fail("mutation %d of snapshot %s@%s: err %v, want ErrReadOnly", op, v.name, s.name, err)
	}
}

// ---- comparison ----

func (r *mRunner) compareAttr(what string, a backend.Attr, f *mFS, n *mNode) {
	r.t.Helper()
	var diffs []string
	d := func(field string, got, want any) {
		if got != want {
			diffs = append(diffs, fmt.Sprintf("%s=%v want %v", field, got, want))
		}
	}
	d("Ino", a.Ino, n.ino)
	d("Mode", fmt.Sprintf("%o", a.Mode), fmt.Sprintf("%o", n.mode))
	d("UID", a.UID, n.uid)
	d("GID", a.GID, n.gid)
	d("Nlink", a.Nlink, f.nlink(n))
	d("Rdev", a.Rdev, n.rdev)
	switch {
	case n.isReg():
		d("Size", a.Size, uint64(len(n.data)))
		lo, hi := allocBounds(n.data)
		if b := a.Blocks * 512; b+511 < uint64(lo) || b > uint64(hi)+511 {
			diffs = append(diffs, fmt.Sprintf("Blocks=%d outside [%d, %d] bytes", a.Blocks, lo, hi))
		}
	case n.isLink():
		d("Size", a.Size, uint64(len(n.target)))
	}
	if n.mtime != 0 {
		d("Mtime", a.Mtime, n.mtime)
	}
	if n.atime != 0 {
		d("Atime", a.Atime, n.atime)
	}
	if len(diffs) > 0 {
		r.fail("%s: attr of ino %d differs: %s", what, n.ino, strings.Join(diffs, ", "))
	}
}

// allocBounds is the range of allocated bytes a file's content allows: at least every chunk
// holding a non-zero byte up to its last non-zero byte; at most every chunk below the size.
func allocBounds(data []byte) (lo, hi int) {
	for off := 0; off < len(data); off += mtChunk {
		c := data[off:min(off+mtChunk, len(data))]
		for i := len(c) - 1; i >= 0; i-- {
			if c[i] != 0 {
				lo += i + 1
				break
			}
		}
		hi += mtChunk
	}
	return lo, hi
}

func (r *mRunner) checkAll() {
	vols, err := r.st.ListVolumes(r.ctx)
	if err != nil {
		r.fail("ListVolumes: %v", err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, v.Name)
	}
	if want := sortedKeys(r.vols); !slices.Equal(got, want) {
		r.fail("ListVolumes: %v, want %v", got, want)
	}
	for _, name := range sortedKeys(r.vols) {
		r.checkVol(r.vols[name], true)
	}
	r.checkStats()
}

// checkStats checks store-wide accounting against per-volume usage and itself.
func (r *mRunner) checkStats() {
	st, err := r.st.Stats(r.ctx)
	if err != nil {
		r.fail("Stats: %v", err)
	}
	for _, name := range sortedKeys(r.vols) {
		u, err := r.st.Usage(r.ctx, name)
		if err != nil || st.Volumes[name] != u {
			r.fail("Stats: volume %s: %+v, Usage says %+v (%v)", name, st.Volumes[name], u, err)
		}
	}
	if len(st.Volumes) != len(r.vols) {
		r.fail("Stats: %d volumes, want %d", len(st.Volumes), len(r.vols))
	}
	ratio := 1.0
	if st.UniqueBytes > 0 {
		ratio = float64(st.LogicalBytes) / float64(st.UniqueBytes)
	}
	if st.UniqueBytes > st.LogicalBytes || st.Chunks < 0 || (st.Chunks == 0) != (st.UniqueBytes == 0) ||
		st.DedupRatio < ratio*0.999 || st.DedupRatio > ratio*1.001 {
		r.fail("Stats inconsistent: %+v", st)
	}
}

// checkVol compares the volume's record, snapshot list, live tree and (with deep) every snapshot.
func (r *mRunner) checkVol(v *mVol, deep bool) {
	info, err := r.st.GetVolume(r.ctx, v.name)
	if err != nil {
		r.fail("GetVolume %s: %v", v.name, err)
	}
	if info.Options.ChunkSize != v.opts.ChunkSize {
		r.fail("GetVolume %s: chunk size %d, want %d", v.name, info.Options.ChunkSize, v.opts.ChunkSize)
	}
	snaps, err := r.st.ListSnapshots(r.ctx, v.name)
	if err != nil {
		r.fail("ListSnapshots %s: %v", v.name, err)
	}
	var got, want []string
	for _, s := range snaps {
		got = append(got, s.Name)
		if s.Volume != v.name {
			r.fail("ListSnapshots %s: entry %+v", v.name, s)
		}
	}
	for _, s := range v.snaps {
		want = append(want, s.name)
	}
	if !slices.Equal(got, want) {
		r.fail("ListSnapshots %s: %v, want %v (oldest first)", v.name, got, want)
	}
	r.compareFS(v.name, v.view, v.fs)
	r.checkUsage(v)
	if deep {
		for _, s := range v.snaps {
			r.checkSnap(v, s)
		}
	}
}

func (r *mRunner) checkSnap(v *mVol, s *mSnap) {
	view, err := r.st.OpenSnapshot(r.ctx, v.name, s.name)
	if err != nil {
		r.fail("OpenSnapshot %s@%s: %v", v.name, s.name, err)
	}
	r.compareFS(v.name+"@"+s.name, view, s.fs)
}

func (r *mRunner) checkUsage(v *mVol) {
	u, err := r.st.Usage(r.ctx, v.name)
	if err != nil {
		r.fail("Usage %s: %v", v.name, err)
	}
	var lo, hi, files, orphans int
	for ino, n := range v.fs.nodes {
		if v.fs.orphans[ino] {
			orphans++
		} else {
			files++
		}
		if n.isReg() {
			l, h := allocBounds(n.data)
			if !v.fs.orphans[ino] {
				lo += l
			}
			hi += h
		}
	}
	if u.Files < int64(files) || u.Files > int64(files+orphans) {
		r.fail("Usage %s: Files=%d, want %d (+%d orphans)", v.name, u.Files, files, orphans)
	}
	if u.Bytes < int64(lo) || u.Bytes > int64(hi) {
		r.fail("Usage %s: Bytes=%d outside [%d, %d]", v.name, u.Bytes, lo, hi)
	}
	limit, used, err := v.view.Quota(r.ctx)
	if err != nil || limit != v.opts.Size || used != u {
		r.fail("Quota %s: %d, %+v, %v; want %d, %+v", v.name, limit, used, err, v.opts.Size, u)
	}
	if limit > 0 && u.Bytes > limit {
		r.fail("Usage %s: %d bytes, over the quota of %d", v.name, u.Bytes, limit)
	}
}

// compareFS walks the model tree and checks every entry, inode, content and xattr in the view,
// then the orphans by inode number.
func (r *mRunner) compareFS(label string, view *backend.View, f *mFS) {
	_, dirs := f.walk()
	seen := map[backend.Ino]bool{}
	for _, d := range dirs {
		dn := f.nodes[d]
		got, err := view.ReadDir(r.ctx, d)
		if err != nil {
			r.fail("%s: ReadDir %d: %v", label, d, err)
		}
		var gs, ws []string
		for _, e := range got {
			gs = append(gs, fmt.Sprintf("%s:%d:%o", trunc(e.Name), e.Ino, e.Mode))
		}
		for _, name := range sortedKeys(dn.ents) {
			c := f.nodes[dn.ents[name]]
			ws = append(ws, fmt.Sprintf("%s:%d:%o", trunc(name), c.ino, c.typ()))
		}
		if !slices.Equal(gs, ws) {
			r.fail("%s: ReadDir %d:\n got  %v\n want %v", label, d, gs, ws)
		}
		for _, name := range sortedKeys(dn.ents) {
			c := f.nodes[dn.ents[name]]
			a, err := view.Lookup(r.ctx, d, name)
			if err != nil {
				r.fail("%s: Lookup %d/%q: %v", label, d, trunc(name), err)
			}
			r.compareAttr(label+" Lookup", a, f, c)
			if !seen[c.ino] {
				seen[c.ino] = true
				r.compareNode(label, view, f, c)
			}
		}
	}
	r.compareNode(label, view, f, f.nodes[backend.RootIno])
	for _, ino := range r.sortedOrphans(f) {
		r.compareNode(label+" orphan", view, f, f.nodes[ino])
	}
}

func (r *mRunner) compareNode(label string, view *backend.View, f *mFS, n *mNode) {
	a, err := view.GetAttr(r.ctx, n.ino)
	if err != nil {
		r.fail("%s: GetAttr %d: %v", label, n.ino, err)
	}
	r.compareAttr(label+" GetAttr", a, f, n)
	names, err := view.ListXattr(r.ctx, n.ino)
	if err != nil {
		r.fail("%s: ListXattr %d: %v", label, n.ino, err)
	}
	slices.Sort(names)
	if want := sortedKeys(n.xattr); !slices.Equal(names, want) && !(len(names) == 0 && len(want) == 0) {
		r.fail("%s: ListXattr %d: %v, want %v", label, n.ino, names, want)
	}
	for _, name := range names {
		val, err := view.GetXattr(r.ctx, n.ino, name)
		if err != nil || !bytes.Equal(val, n.xattr[name]) {
			r.fail("%s: GetXattr %d %s: %d bytes, err %v; want %d bytes", label, n.ino, trunc(name), len(val), err, len(n.xattr[name]))
		}
	}
	switch {
	case n.isLink():
		tgt, err := view.Readlink(r.ctx, n.ino)
		if err != nil || tgt != n.target {
			r.fail("%s: Readlink %d: %q, %v; want %q", label, n.ino, tgt, err, n.target)
		}
	case n.isReg():
		r.checkRead(view, n, 0, len(n.data)+100, label+" ReadAt whole")
		r.checkChunks(label, view, n)
		r.checkSeek(label, view, n)
	}
}

func (r *mRunner) checkChunks(label string, view *backend.View, n *mNode) {
	dst := make([]byte, mtChunk)
	for i := 0; i*mtChunk < len(n.data); i++ {
		for j := range dst {
			dst[j] = 0x5A
		}
		got, err := view.ReadChunk(r.ctx, n.ino, uint64(i), dst)
		if err != nil {
			r.fail("%s: ReadChunk %d #%d: %v", label, n.ino, i, err)
		}
		want := make([]byte, mtChunk)
		copy(want, n.data[i*mtChunk:])
		lo, _ := allocBounds(want)
		if got < lo || got > mtChunk {
			r.fail("%s: ReadChunk %d #%d: length %d, want between %d and %d", label, n.ino, i, got, lo, mtChunk)
		}
		if !bytes.Equal(dst[:got], want[:got]) || !bytes.Equal(dst[got:], make([]byte, mtChunk-got)) {
			r.fail("%s: ReadChunk %d #%d: content differs (stored length %d)", label, n.ino, i, got)
		}
	}
}

// checkSeek checks SEEK_DATA/SEEK_HOLE answers against what the content allows: skipped ranges
// must read as zeros, answers are chunk aligned (or the start offset, or EOF for a hole).
func (r *mRunner) checkSeek(label string, view *backend.View, n *mNode) {
	size := int64(len(n.data))
	for _, off := range []int64{0, int64(r.r.IntN(len(n.data) + 1)), size} {
		nz := func(a, b int64) bool { return !allZero(n.data[a:b]) }
		pos, err := view.SeekData(r.ctx, n.ino, off, 3)
		switch {
		case off >= size:
			if !errors.Is(err, backend.ErrNotFound) {
				r.fail("%s: SEEK_DATA %d at %d (size %d): %d, %v; want ErrNotFound", label, n.ino, off, size, pos, err)
			}
		case errors.Is(err, backend.ErrNotFound):
			if nz(off, size) {
				r.fail("%s: SEEK_DATA %d at %d: ErrNotFound but data follows", label, n.ino, off)
			}
		case err != nil:
			r.fail("%s: SEEK_DATA %d at %d: %v", label, n.ino, off, err)
		case pos < off || pos >= size || (pos != off && pos%mtChunk != 0) || nz(off, pos):
			r.fail("%s: SEEK_DATA %d at %d (size %d): %d", label, n.ino, off, size, pos)
		}
		pos, err = view.SeekData(r.ctx, n.ino, off, 4)
		switch {
		case off >= size:
			if !errors.Is(err, backend.ErrNotFound) {
				r.fail("%s: SEEK_HOLE %d at %d (size %d): %d, %v; want ErrNotFound", label, n.ino, off, size, pos, err)
			}
		case err != nil:
			r.fail("%s: SEEK_HOLE %d at %d: %v", label, n.ino, off, err)
		case pos < off || pos > size || (pos != off && pos != size && pos%mtChunk != 0):
			r.fail("%s: SEEK_HOLE %d at %d (size %d): %d", label, n.ino, off, size, pos)
		case pos < size && nz(pos, min(size, (pos/mtChunk+1)*mtChunk)):
			r.fail("%s: SEEK_HOLE %d at %d: %d is not in a hole", label, n.ino, off, pos)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
