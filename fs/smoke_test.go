package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/fusevol/fusevol/backend"
)

func TestSmoke(t *testing.T) {
	tv := newVolume(t, backend.VolumeOptions{}, Options{})
	p := filepath.Join(tv.dir, "a")
	data := bytes.Repeat([]byte("hello world "), 300000)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(data))
	}
	if err := os.Mkdir(filepath.Join(tv.dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(tv.dir)
	if err != nil || len(ents) != 2 {
		t.Fatalf("readdir: %v %v", ents, err)
	}
}
