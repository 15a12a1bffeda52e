package repository

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

// FuzzBackupFile: any bytes as a backup file decode or fail with an error, never a panic or
// an allocation beyond the caps; what decodes writes back as a manifest that decodes to the
// same tree.
func FuzzBackupFile(f *testing.F) {
	s := newStore(f)
	dir := f.TempDir()
	r := newRepo(f, dir)
	vo := newVolume(f, s, "v", 2)
	vo.change(12)
	vo.snapshot("s")
	backup(f, r, send(f, s, "v", "s", ""))
	b, err := os.ReadFile(filepath.Join(dir, "backups", "v", "s"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte(backupMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		desc, dec, err := decodeBackup(bytes.NewReader(b))
		if err != nil {
			return
		}
		tr, err := treeOf(dec)
		if err != nil {
			return
		}
		var again bytes.Buffer
		prefix, err := encodeBackupPrefix(desc)
		if err != nil {
			t.Fatal(err)
		}
		again.Write(prefix)
		if err := tr.write(&again); err != nil {
			return // a tree the encoder refuses (a name or value over its caps) is no manifest
		}
		desc2, dec2, err := decodeBackup(&again)
		if err != nil {
			t.Fatalf("a rewritten backup file does not decode: %v", err)
		}
		tr2, err := treeOf(dec2)
		if err != nil || desc2 != desc || !sameTree(tr, tr2) {
			t.Fatalf("a rewritten backup file decodes differently: %v", err)
		}
	})
}

func sameTree(a, b *tree) bool {
	var x, y bytes.Buffer
	return a.write(&x) == nil && b.write(&y) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}

// FuzzChunk: a chunk object decodes to the bytes whose hash names it or fails, never to
// other bytes; what encodeChunk makes decodes to its input.
func FuzzChunk(f *testing.F) {
	c, err := newCodec()
	if err != nil {
		f.Fatal(err)
	}
	for _, data := range [][]byte{[]byte("x"), bytes.Repeat([]byte("abc"), 5000)} {
		f.Add(data, c.encodeChunk(data))
	}
	f.Add([]byte("x"), []byte{codecZstd, 0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, data, obj []byte) {
		h := blake3.Sum256(data)
		if got, err := c.decodeChunk(h, obj); err == nil && !bytes.Equal(got, data) {
			t.Fatalf("decoded %d other bytes", len(got))
		}
		if len(data) == 0 {
			return
		}
		got, err := c.decodeChunk(h, c.encodeChunk(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("an encoded chunk does not decode: %v", err)
		}
	})
}
