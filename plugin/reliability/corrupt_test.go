package reliability

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestCorruptValueLog flips bytes of one chunk inside an older value-log file of the store while
// the daemon is stopped: the files holding that chunk fail with EIO, never return other bytes, every other
// file reads back intact, and fsck exits non-zero naming exactly the damaged files.
func TestCorruptValueLog(t *testing.T) {
	d, mnt := setupMounted(t, "corrupt", "compression=none", "chunk-size=256KiB")

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	victim := random(200 << 10) // one chunk
	files := map[string][]byte{
		"victim":    victim,
		"twin":      victim, // the same chunk, stored once
		"other":     random(200 << 10),
		"multi":     random(1<<20 + 12345),
		"dir/inner": random(5000),
	}
	must(t, os.Mkdir(filepath.Join(mnt, "dir"), 0o755))
	for name, data := range files {
		must(t, os.WriteFile(filepath.Join(mnt, name), data, 0o644))
	}
	d.mustVolctl("unmount", mnt)
	d.stop()
	// Badger truncates the newest value-log file at its first bad checksum when it opens (its
	// recovery of a torn tail after a crash), dropping every value after that point. One more
	// start makes the file holding the data an older one, which is read as it is: the damage
	// under test is bit rot in data written earlier.
	d.start()
	d.stop()

	marker := victim[100000 : 100000+64]
	flipped := flipInValueLog(t, filepath.Join(d.root, "store"), marker)
	t.Logf("flipped 16 bytes in %s", flipped)

	d.start()
	d.mustVolctl("mount", "corrupt", mnt)
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		damaged := name == "victim" || name == "twin"
		switch {
		case damaged && !errors.Is(err, syscall.EIO):
			t.Errorf("%s (damaged): %d bytes, %v; want EIO", name, len(got), err)
		case !damaged && (err != nil || !bytes.Equal(got, data)):
			t.Errorf("%s (intact): %d bytes, %v; want its %d bytes", name, len(got), err, len(data))
		}
	}
	// A small read far from the flipped bytes still covers the damaged chunk.
	f, err := os.Open(filepath.Join(mnt, "victim"))
	must(t, err)
	buf := make([]byte, 512)
	if n, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the victim's first 512 bytes: %d bytes, %v; want EIO", n, err)
	}
	f.Close()

	out, err := d.volctl("fsck", "--format", "json")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("fsck of a damaged store: %v, want exit status 1\n%s", err, out)
	}
	var rep struct {
		Clean    bool     `json:"clean"`
		Problems []string `json:"problems"`
		Damaged  []string `json:"damaged"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("fsck --format json: %v\n%s", err, out)
	}
	if want := []string{"corrupt:/twin", "corrupt:/victim"}; rep.Clean || !slices.Equal(rep.Damaged, want) {
		t.Errorf("fsck damaged %q (clean %v), want %q; problems %q", rep.Damaged, rep.Clean, want, rep.Problems)
	}
	if !bytes.Contains(readFile(t, d.log), []byte("volume=corrupt")) {
		t.Errorf("the daemon log does not name the volume of the failed read")
	}
	d.mustVolctl("unmount", mnt)
}

// flipInValueLog finds marker in exactly one place among the value-log files under dir and
// inverts 16 bytes there. It returns the file.
func flipInValueLog(t *testing.T, dir string, marker []byte) string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no value-log files in %s: %v", dir, err)
	}
	var file string
	var at int
	for _, p := range logs {
		data := readFile(t, p)
		i := bytes.Index(data, marker)
		if i < 0 {
			continue
		}
		if file != "" || bytes.Contains(data[i+1:], marker) {
			t.Fatalf("the chunk is stored more than once (%s and %s)", file, p)
		}
		file, at = p, i
	}
	if file == "" {
		t.Fatalf("the victim's bytes are in none of %v", logs)
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	b := make([]byte, 16)
	_, err = f.ReadAt(b, int64(at+24))
	must(t, err)
	for i := range b {
		b[i] ^= 0xff
	}
	_, err = f.WriteAt(b, int64(at+24))
	must(t, err)
	must(t, f.Sync())
	return file
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}
