package cli

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// buildVolctl builds the real binary once per test.
func buildVolctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "volctl")
	out, err := exec.Command("go", "build", "-o", bin, "./volctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// treeLines lists every path under dir with its type, mode, owner, size, mtime, link count,
// target, xattrs and content: what a received volume must show the same.
func treeLines(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o uid=%d size=%d mtime=%d.%09d nlink=%d", rel, st.Mode, st.Uid, st.Size,
			st.Mtim.Sec, st.Mtim.Nsec, st.Nlink)
		if st.Nlink > 1 && !d.IsDir() {
			if first, ok := inodes[st.Ino]; ok {
				line += " link-of=" + first
			} else {
				inodes[st.Ino] = rel
			}
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" data=%x", b[:min(len(b), 16)]) + fmt.Sprintf(" len=%d", len(b))
			v := make([]byte, 64)
			if n, err := unix.Lgetxattr(p, "user.tag", v); err == nil {
				line += " user.tag=" + string(v[:n])
			}
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// sh runs a shell pipeline of the real binary against the daemon.
func (td *testDaemon) sh(t *testing.T, bin, pipeline string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", "set -o pipefail; "+pipeline)
	cmd.Env = append(os.Environ(), "V="+bin+" --socket "+td.socket)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// volctl send | volctl receive with the real binary: full, incremental, damaged, wrong base.
func TestSendReceivePipe(t *testing.T) {
	fusetest.Require(t)
	bin := buildVolctl(t)
	td := startDaemon(t)
	td.run(t, "volume", "create", "-o", "chunk-size=64KiB", "v").ok(t)
	dir := td.mountVolume(t, "v", "src")
	writeFile(t, filepath.Join(dir, "a/b/file"), strings.Repeat("data ", 50000))
	writeFile(t, filepath.Join(dir, "small"), "small")
	if err := os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "a/hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/b/file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "small"), "user.tag", []byte("tagged"), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("end"), 1<<30)
	f.Close()
	td.run(t, "snapshot", "create", "v", "s1").ok(t)

	out, err := td.sh(t, bin, `$V send v@s1 | $V receive w`)
	if err != nil || !strings.Contains(out, "received w@s1:") || !strings.Contains(out, "skipped (already in store)") {
		t.Fatalf("send | receive: %v\n%s", err, out)
	}
	got := td.mountVolume(t, "w@s1", "w1")
	want := td.mountVolume(t, "v@s1", "v1")
	if a, b := treeLines(t, want), treeLines(t, got); a != b {
		t.Fatalf("received tree differs:\n%s\n--- want:\n%s", b, a)
	}

	// Incremental: change a little, send what changed.
	writeFile(t, filepath.Join(dir, "small"), "changed")
	os.Remove(filepath.Join(dir, "link"))
	writeFile(t, filepath.Join(dir, "new"), "new file")
	td.run(t, "snapshot", "create", "v", "s2").ok(t)
	out, err = td.sh(t, bin, `$V send --from v@s1 v@s2 | $V receive --format json w`)
	if err != nil || !strings.Contains(out, `"incremental": true`) {
		t.Fatalf("incremental send | receive: %v\n%s", err, out)
	}
	got2 := td.mountVolume(t, "w@s2", "w2")
	want2 := td.mountVolume(t, "v@s2", "v2")
	if a, b := treeLines(t, want2), treeLines(t, got2); a != b {
		t.Fatalf("incremental tree differs:\n%s\n--- want:\n%s", b, a)
	}

	// A file, damaged: refused, nothing left; the same stream intact is received.
	stream := filepath.Join(td.dir, "s1.stream")
	td.run(t, "send", "-o", stream, "v@s1").ok(t)
	td.run(t, "send", "-o", stream, "v@s1").fails(t, 1, "exists")
	b, err := os.ReadFile(stream)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	bad := filepath.Join(td.dir, "bad.stream")
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	td.run(t, "receive", "-i", bad, "x").fails(t, 1, "receive x@s1", "bad send stream")
	td.run(t, "receive", "-i", stream+".missing", "x").fails(t, 1, "no such file")
	if r := td.run(t, "volume", "ls", "-q").ok(t); r.stdout != "v\nw\n" {
		t.Errorf("after a refused receive, volumes are %q", r.stdout)
	}
	// Wrong base: w2 is v@s2 in full; s2-from-s1 does not apply to it.
	td.run(t, "receive", "-i", stream, "x").ok(t)
	out, err = td.sh(t, bin, `$V send v@s2 | $V receive w2 && $V send --from s1 v@s2 | $V receive w2`)
	if err == nil || !strings.Contains(out, "no snapshot the stream was sent from") {
		t.Fatalf("wrong base: %v\n%s", err, out)
	}
	// A mounted volume takes no incremental stream; a full one onto an existing name is refused.
	out, err = td.sh(t, bin, `$V send --from s1 v@s2 | $V receive x && echo received`)
	if err != nil || !strings.Contains(out, "received x@s2") {
		t.Fatalf("incremental onto x: %v\n%s", err, out)
	}
	td.mountVolume(t, "x", "xm")
	out, err = td.sh(t, bin, `$V send --from s1 v@s2 | $V receive x`)
	if err == nil || !strings.Contains(out, "in use") && !strings.Contains(out, "mounted") {
		t.Fatalf("receive into a mounted volume: %v\n%s", err, out)
	}
	out, err = td.sh(t, bin, `$V send v@s1 | $V receive w2`)
	if err == nil || !strings.Contains(out, "exists") {
		t.Fatalf("full stream onto w2: %v\n%s", err, out)
	}
	td.run(t, "send", "v@nosuch").fails(t, 1, "nosuch", "not found")
	td.run(t, "send", "v").fails(t, 2, "VOLUME@SNAPSHOT")
	td.run(t, "fsck").ok(t)
}

func TestSendProgressLine(t *testing.T) {
	for _, c := range []struct {
		total, n, chunks int64
		elapsed          time.Duration
		want             string
	}{
		{0, 10 << 20, 40, time.Second, "sent 10 MiB, 40 chunks  10 MiB/s"},
		{100 << 20, 10 << 20, 1, 2 * time.Second, "sent 10 MiB, 1 chunk  5 MiB/s  ETA 18s"},
		{10 << 20, 10 << 20, 40, time.Second, "sent 10 MiB, 40 chunks  10 MiB/s"},
	} {
		p := &progress{label: "sent", total: c.total}
		if got := p.line(c.n, c.chunks, c.elapsed); got != c.want {
			t.Errorf("%+v: %q, want %q", c, got, c.want)
		}
	}
	// Not a terminal: nothing is written, and the stream passes whole.
	var errb, out bytes.Buffer
	p := newProgress(&errb, "sent", 0)
	p.writer(&out).Write([]byte("stream"))
	p.stop()
	if errb.Len() != 0 || out.String() != "stream" {
		t.Errorf("progress to a buffer wrote %q, passed %q", errb.String(), out.String())
	}
}
