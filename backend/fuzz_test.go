package backend

// Fuzz tests of every parser and key encoding, and of the snapshot visibility rule against a
// brute-force walk up the snapshot tree. `make fuzz` runs each target for a short while.

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"", "a", "vol-1", "x.y_z", "..", ".", "-a", "_a", "a/b", "a b", "é", "a\x00",
		strings.Repeat("a", 255), strings.Repeat("a", 256), "A9", "9", "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if want := validName.MatchString(name); want != (err == nil) {
			t.Fatalf("ValidateName(%q) = %v, regexp says valid=%v", name, err, want)
		}
		if err != nil && (!errors.Is(err, ErrInvalid) || err.Error() == ErrInvalid.Error()) {
			t.Fatalf("ValidateName(%q): error %q must wrap ErrInvalid and say why", name, err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1", "512MiB", "10GiB", "1G", "1GB", "64KiB", " 4 MiB ", "-1", "1.5G", "9223372036854775807",
		"4611686018427387904", "4611686018427387903B", "4611686018427387904K", "KiB", "", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative", s, n)
		}
		// The canonical form of an accepted size parses to the same number.
		if m, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Fatalf("ParseSize(%q) = %d, but ParseSize(%d) = %d, %v", s, n, n, m, err)
		}
	})
}

var optionKeys = append([]string{"size", "chunk-size", "compression", "uid", "gid", "mode", "from"}, scheduleOptionKeys...)

// formatOptions is the -o map that should parse back to o.
func formatOptions(o VolumeOptions) map[string]string {
	m := map[string]string{
		"chunk-size":  strconv.Itoa(o.ChunkSize),
		"compression": o.Compression,
		"uid":         strconv.FormatUint(uint64(o.UID), 10),
		"gid":         strconv.FormatUint(uint64(o.GID), 10),
		"mode":        fmt.Sprintf("%#o", o.Mode),
	}
	if o.Size != 0 {
		m["size"] = strconv.FormatInt(o.Size, 10)
	}
	if o.From != "" {
		m["from"] = o.From
	}
	if p := o.Schedule; !p.IsZero() {
		m["snapshot-every"] = FormatEvery(p.Every)
		for _, k := range p.keeps() {
			m["snapshot-"+k.name] = strconv.Itoa(*k.n)
		}
	}
	return m
}

func FuzzParseVolumeOptions(f *testing.F) {
	f.Add("size", "10GiB", "chunk-size", "64KiB")
	f.Add("compression", "zstd", "mode", "0755")
	f.Add("uid", "1000", "gid", "4294967295")
	f.Add("from", "vol@snap", "mode", "7777")
	f.Add("from", "vol@", "size", "0")
	f.Add("chunk-size", "3MiB", "compression", "lz4")
	f.Add("bogus", "1", "uid", "-1")
	f.Add("mode", "10000", "chunk-size", "4M")
	f.Add("snapshot-every", "1h", "snapshot-keep", "24")
	f.Add("snapshot-every", "1d", "snapshot-keep-weekly", "x")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		in := map[string]string{k1: v1, k2: v2}
		o, err := ParseVolumeOptions(in)
		unknown := ""
		for k := range in {
			if !slices.Contains(optionKeys, k) {
				unknown = k
			}
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseVolumeOptions(%q): error %v does not wrap ErrInvalid", in, err)
			}
			named := func(k string) bool {
				return strings.Contains(err.Error(), k) || strings.Contains(err.Error(), strconv.Quote(k))
			}
			if !named(k1) && !named(k2) {
				t.Fatalf("ParseVolumeOptions(%q): error %q names neither option", in, err)
			}
			return
		}
		if unknown != "" {
			t.Fatalf("ParseVolumeOptions(%q) accepted unknown option %q", in, unknown)
		}
		checkOptions(t, in, o)
		back, err := ParseVolumeOptions(formatOptions(o))
		if err != nil || back != o {
			t.Fatalf("options %+v do not round-trip through %q: %+v, %v", o, formatOptions(o), back, err)
		}
	})
}

// checkOptions checks the invariants of accepted options.
func checkOptions(t *testing.T, in map[string]string, o VolumeOptions) {
	t.Helper()
	cs := o.ChunkSize
	if cs < 64<<10 || cs > 4<<20 || cs&(cs-1) != 0 {
		t.Fatalf("ParseVolumeOptions(%q): chunk size %d is not a power of two in [64KiB, 4MiB]", in, cs)
	}
	if o.Compression != "none" && o.Compression != "s2" && o.Compression != "zstd" {
		t.Fatalf("ParseVolumeOptions(%q): compression %q", in, o.Compression)
	}
	if o.Mode > 07777 || o.Size < 0 {
		t.Fatalf("ParseVolumeOptions(%q): mode %o size %d", in, o.Mode, o.Size)
	}
	if o.From != "" {
		vol, snap, ok := strings.Cut(o.From, "@")
		if !ok || !validName.MatchString(vol) || !validName.MatchString(snap) {
			t.Fatalf("ParseVolumeOptions(%q): from %q is not VOLUME@SNAPSHOT", in, o.From)
		}
	}
	if v, ok := in["uid"]; ok {
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err != nil || uint32(n) != o.UID {
			t.Fatalf("ParseVolumeOptions(%q): uid %d", in, o.UID)
		}
	}
	if v, ok := in["compression"]; ok && strings.TrimSpace(v) != o.Compression {
		t.Fatalf("ParseVolumeOptions(%q): compression %q", in, o.Compression)
	}
}

// metaKeyIn builds a versioned metadata key from fuzz input; ok is false for inputs the store never
// writes (dirent and xattr names are non-empty and NUL-free).
func metaKeyIn(tree uint32, kindSel uint8, ino uint64, name string, index uint64, node uint32) (metaKey, []byte, bool) {
	kinds := []byte{kInode, kDirent, kXattr, kChunk, kOrphan, kExtent}
	m := metaKey{tree: tree, kind: kinds[int(kindSel)%len(kinds)], ino: Ino(ino), node: node}
	switch m.kind {
	case kDirent, kXattr:
		if name == "" || strings.IndexByte(name, 0) >= 0 {
			return m, nil, false
		}
		m.name = name
	case kChunk:
		m.index = index
	case kExtent:
		m.index, m.seq = index>>8, uint32(index)^node
	}
	lk := m.logicalKey()
	m.lkeyLn = len(lk)
	return m, versionKey(lk, node), true
}

// wantOrder is the intended order of versioned keys: tree, kind, inode, name or chunk index, extent seq,
// then node; so all versions of one logical key are contiguous and ordered by node ID.
func wantOrder(a, b metaKey) int {
	return cmp.Or(cmp.Compare(a.tree, b.tree), cmp.Compare(a.kind, b.kind), cmp.Compare(a.ino, b.ino),
		strings.Compare(a.name, b.name), cmp.Compare(a.index, b.index), cmp.Compare(a.seq, b.seq), cmp.Compare(a.node, b.node))
}

func FuzzMetaKey(f *testing.F) {
	f.Add(uint32(1), uint8(1), uint64(1), "a", uint64(0), uint32(0xffffffff), uint32(1), uint8(1), uint64(1), "ab", uint64(0), uint32(0xfffffffe))
	f.Add(uint32(1), uint8(3), uint64(7), "", uint64(255), uint32(5), uint32(1), uint8(3), uint64(7), "", uint64(256), uint32(6))
	f.Add(uint32(2), uint8(0), uint64(1<<40), "", uint64(0), uint32(9), uint32(2), uint8(4), uint64(1<<40), "", uint64(0), uint32(9))
	f.Add(uint32(1), uint8(2), uint64(3), "user.a", uint64(0), uint32(1), uint32(1), uint8(2), uint64(3), "user.a\xff", uint64(0), uint32(0))
	f.Fuzz(func(t *testing.T, tr1 uint32, k1 uint8, i1 uint64, n1 string, x1 uint64, nd1 uint32,
		tr2 uint32, k2 uint8, i2 uint64, n2 string, x2 uint64, nd2 uint32) {
		a, ka, ok1 := metaKeyIn(tr1, k1, i1, n1, x1, nd1)
		b, kb, ok2 := metaKeyIn(tr2, k2, i2, n2, x2, nd2)
		if !ok1 || !ok2 {
			return
		}
		for _, c := range []struct {
			m metaKey
			k []byte
		}{{a, ka}, {b, kb}} {
			got, err := parseMetaKey(c.k)
			if err != nil || got != c.m {
				t.Fatalf("parseMetaKey(%x) = %+v, %v; want %+v", c.k, got, err, c.m)
			}
			if !bytes.Equal(got.logicalKey(), c.k[:got.lkeyLn]) {
				t.Fatalf("logicalKey of %x = %x", c.k, got.logicalKey())
			}
			if !bytes.HasPrefix(c.k, treePrefix(c.m.tree)) || !bytes.HasPrefix(c.k, metaKind(c.m.tree, c.m.kind, c.m.ino)) {
				t.Fatalf("key %x lacks its tree or kind prefix", c.k)
			}
		}
		if got, want := bytes.Compare(ka, kb), wantOrder(a, b); got != want {
			t.Fatalf("order of %+v and %+v: bytes %d, intended %d\n%x\n%x", a, b, got, want, ka, kb)
		}
		// lookup treats "has the logical key as prefix and 4 more bytes" as "a version of it".
		la, lb := ka[:a.lkeyLn], kb[:b.lkeyLn]
		isVersion := bytes.HasPrefix(kb, la) && len(kb) == len(la)+4
		if isVersion != bytes.Equal(la, lb) {
			t.Fatalf("key %x taken as a version of %x: %v", kb, la, isVersion)
		}
	})
}

func FuzzValueCodecs(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"), uint64(3), uint32(4096), uint32(100), int64(-1), "target", uint32(0o100644))
	f.Add(make([]byte, 32), uint64(1<<63), uint32(0), uint32(0), int64(1<<62), "", uint32(0o40755))
	f.Fuzz(func(t *testing.T, h []byte, u64 uint64, u32a, u32b uint32, i64 int64, s string, mode uint32) {
		var hash Hash
		copy(hash[:], h)
		cr := chunkRef{hash: hash, n: u32a}
		if got, err := decodeChunkRef(encodeChunkRef(cr)); err != nil || got != cr {
			t.Fatalf("chunkRef %+v round-trips to %+v, %v", cr, got, err)
		}
		rv := refVal{count: u64, plain: u32a, stored: u32b}
		if got, err := decodeRef(encodeRef(rv)); err != nil || got != rv {
			t.Fatalf("refVal %+v round-trips to %+v, %v", rv, got, err)
		}
		if ino, typ, err := decodeDirent(encodeDirent(Ino(u64), mode)); err != nil || ino != Ino(u64) || typ != mode {
			t.Fatalf("dirent %d %o round-trips to %d %o, %v", u64, mode, ino, typ, err)
		}
		u := Usage{Bytes: i64, Files: int64(u64)}
		if got, err := decodeUsage(encodeUsage(u)); err != nil || got != u {
			t.Fatalf("usage %+v round-trips to %+v, %v", u, got, err)
		}
		nr := nodeRec{tree: u32a, parent: u32b}
		if got, err := decodeNode(encodeNode(nr)); err != nil || got != nr {
			t.Fatalf("node %+v round-trips to %+v, %v", nr, got, err)
		}
		in := &inode{Attr: Attr{Ino: Ino(u64), Mode: mode, UID: u32a, GID: u32b, Size: u64 >> 1, Nlink: u32b ^ 7,
			Rdev: u32a ^ 9, Atime: i64, Mtime: -i64, Ctime: i64 ^ 5, Gen: u64 ^ 1}, alloc: u64 >> 3, parent: Ino(u64 ^ 3), target: s, extents: u32a ^ u32b}
		in.Blocks = (in.alloc + 511) / 512
		got, err := decodeInode(in.Ino, encodeInode(in))
		if err != nil || *got != *in {
			t.Fatalf("inode %+v round-trips to %+v, %v", in, got, err)
		}
	})
}

// FuzzDecode feeds arbitrary bytes to every decoder: errors are fine, panics are not, and
// whatever decodes re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{tagLive, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x80, 0})
	f.Add(versionKey(direntLKey(1, 1, "a"), 5))
	f.Add(versionKey(chunkLKey(1, 2, 3), 5))
	f.Add(encodeInode(&inode{Attr: Attr{Mode: 0o100644}, target: "x"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parseMetaKey(b); err == nil {
			if got := versionKey(m.logicalKey(), m.node); !bytes.Equal(got, b) {
				t.Fatalf("parseMetaKey(%x) = %+v, re-encodes to %x", b, m, got)
			}
		}
		if r, err := decodeChunkRef(b); err == nil && !bytes.Equal(encodeChunkRef(r), b) {
			t.Fatalf("decodeChunkRef(%x) does not re-encode", b)
		}
		if r, err := decodeRef(b); err == nil && !bytes.Equal(encodeRef(r), b) {
			t.Fatalf("decodeRef(%x) does not re-encode", b)
		}
		if ino, typ, err := decodeDirent(b); err == nil && !bytes.Equal(encodeDirent(ino, typ), b) {
			t.Fatalf("decodeDirent(%x) does not re-encode", b)
		}
		if u, err := decodeUsage(b); err == nil && !bytes.Equal(encodeUsage(u), b) {
			t.Fatalf("decodeUsage(%x) does not re-encode", b)
		}
		if n, err := decodeNode(b); err == nil && !bytes.Equal(encodeNode(n), b) {
			t.Fatalf("decodeNode(%x) does not re-encode", b)
		}
		if n, err := decodeInode(7, b); err == nil {
			// The sixth 32-bit field, once reserved and written as zero, is the extent count.
			if got, want := encodeInode(n), b; !bytes.Equal(got, want) {
				t.Fatalf("decodeInode(%x) re-encodes to %x", b, got)
			}
		}
	})
}

// FuzzVisibility builds a random snapshot tree (IDs allocated downwards, as newNode does) and random
// versions of a few neighbouring logical keys, then checks tx.lookup and tx.scanVisible at every node
// against a brute-force walk up the parent chain.
func FuzzVisibility(f *testing.F) {
	f.Add([]byte{3, 0, 0, 1, 1, 2, 2, 0, 1, 5, 1, 2, 9})
	f.Add([]byte{8, 0, 1, 1, 2, 3, 3, 5, 0, 0, 0, 1, 7, 1, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7})
	f.Add([]byte{1, 0})
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithLogger(nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	var trees uint32
	f.Fuzz(func(t *testing.T, in []byte) {
		next := func() int {
			if len(in) == 0 {
				return 0
			}
			b := in[0]
			in = in[1:]
			return int(b)
		}
		trees++
		tree := trees
		// Nodes: index 0 is the root; each later node's parent is an earlier node (a larger ID).
		count := 1 + next()%40 // deeper than writeProbes, so both lookup paths run
		ids := make([]uint32, count)
		parent := make([]int, count)
		id := uint32(0xffffffff - next())
		for i := range ids {
			id -= uint32(1 + next()%3) // IDs of failed transactions are skipped
			ids[i] = id
			parent[i] = -1
			if i > 0 {
				parent[i] = i - 1 - next()%min(i, 3) // mostly long chains
			}
		}
		lkeys := [][]byte{direntLKey(tree, 5, "a"), direntLKey(tree, 5, "ab"), direntLKey(tree, 5, "a-"), inodeLKey(tree, 5), chunkLKey(tree, 5, 0)}
		type ver struct {
			val  []byte
			node int
		}
		have := make([]map[int][]byte, len(lkeys)) // per logical key: node index -> value
		for i := range have {
			have[i] = map[int][]byte{}
		}
		txn := db.NewTransaction(true)
		defer txn.Discard()
		for n := next() % 24; n > 0; n-- {
			k, node, tag := next()%len(lkeys), next()%count, byte(next()%2)
			val := []byte{tag, byte(k), byte(node)}
			have[k][node] = val
			if err := txn.Set(versionKey(lkeys[k], ids[node]), val); err != nil {
				t.Fatal(err)
			}
		}
		for q := 0; q < count; q++ {
			var anc []uint32
			var chain []int
			for n := q; n >= 0; n = parent[n] {
				anc = append(anc, ids[n])
				chain = append(chain, n)
			}
			tx := &tx{txn: txn, rw: q%2 == 1} // read and write transactions look up differently
			defer tx.closeIter()              // before the deferred Discard, also when failing
			tx.at(tree, ids[q], anc)
			visible := map[string]ver{}
			for k, lk := range lkeys {
				var found []ver
				for _, n := range chain {
					if v, ok := have[k][n]; ok {
						found = append(found, ver{v, n})
					}
				}
				for skip := 0; skip < 2; skip++ {
					got, err := tx.lookup(lk, skip)
					if err != nil {
						t.Fatal(err)
					}
					var want ver
					if skip < len(found) {
						want = found[skip]
					}
					if !bytes.Equal(got.val, want.val) || (want.val != nil && got.node != ids[want.node]) {
						t.Fatalf("lookup(%x, skip %d) at node %d (chain %v) = %x@%d, want %x@%d",
							lk, skip, ids[q], anc, got.val, got.node, want.val, ids[want.node])
					}
				}
				if len(found) > 0 {
					visible[string(lk)] = found[0]
				}
			}
			seen := 0
			err := tx.scanVisible(metaKind(tree, kDirent, 5), func(lk []byte, v version) error {
				w, ok := visible[string(lk)]
				if !ok || !bytes.Equal(v.val, w.val) || v.node != ids[w.node] {
					return fmt.Errorf("scanVisible at node %d: %x = %x@%d, want %x (visible: %v)", ids[q], lk, v.val, v.node, w.val, ok)
				}
				seen++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			wantSeen := 0
			for k := range visible {
				if strings.HasPrefix(k, string(metaKind(tree, kDirent, 5))) {
					wantSeen++
				}
			}
			if seen != wantSeen {
				t.Fatalf("scanVisible at node %d found %d keys, want %d", ids[q], seen, wantSeen)
			}
			tx.closeIter()
		}
	})
}

// FuzzRecordKeys checks the non-versioned keys: a volume's snapshot prefix holds exactly its own
// snapshots, and numbered keys sort numerically.
func FuzzRecordKeys(f *testing.F) {
	f.Add("vol", "snap", "vol2", uint32(1), uint32(256))
	f.Add("a", "b", "a.b", uint32(0xffffffff), uint32(0))
	f.Fuzz(func(t *testing.T, vol, snap, other string, a, b uint32) {
		if ValidateName(vol) != nil || ValidateName(snap) != nil || ValidateName(other) != nil {
			return
		}
		k := snapshotKey(vol, snap)
		if !bytes.HasPrefix(k, snapshotPrefix(vol)) {
			t.Fatalf("snapshot key %q lacks its volume's prefix", k)
		}
		if bytes.HasPrefix(k, snapshotPrefix(other)) != (vol == other) {
			t.Fatalf("snapshot %s@%s listed under volume %s", vol, snap, other)
		}
		if bytes.Equal(volumeKey(vol), volumeKey(other)) != (vol == other) {
			t.Fatalf("volume keys of %q and %q", vol, other)
		}
		for _, enc := range []func(uint32) []byte{nodeKey, treeKey, usageKey} {
			if got := bytes.Compare(enc(a), enc(b)); got != cmp.Compare(a, b) {
				t.Fatalf("keys of %d and %d compare %d", a, b, got)
			}
		}
	})
}
