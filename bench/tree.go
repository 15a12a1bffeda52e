package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// treeArchive is an in-memory tar of a made-up source tree: nested directories, text files whose
// sizes spread log-uniformly from 100 B to 64 KiB (about 13 KiB on average, like a kernel tree),
// a few executables and symlinks.
type treeArchive struct {
	data    []byte
	entries int   // directories + files + symlinks
	bytes   int64 // file content
	files   map[string]int64
}

func newTreeArchive(p *pools, nfiles int) (*treeArchive, error) {
	rng := rand.New(rand.NewPCG(42, 7))
	src := p.textSource(500)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ta := &treeArchive{files: map[string]int64{}}
	dirs := []string{"src"}
	add := func(h *tar.Header, body []byte) error {
		h.ModTime, h.Uname, h.Gname = mtime, "bench", "bench"
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		ta.entries++
		_, err := tw.Write(body)
		return err
	}
	if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: "src/", Mode: 0o755}, nil); err != nil {
		return nil, err
	}
	exts := []string{".c", ".h", ".go", ".txt", ".S", "Makefile"}
	var content []byte
	for i := 0; i < nfiles; i++ {
		// A new directory every ~16 files, under a random existing one, at most 5 deep.
		if i%16 == 0 && i > 0 {
			parent := dirs[rng.IntN(len(dirs))]
			if strings.Count(parent, "/") < 5 {
				d := fmt.Sprintf("%s/d%d", parent, len(dirs))
				dirs = append(dirs, d)
				if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}, nil); err != nil {
					return nil, err
				}
			}
		}
		d := dirs[len(dirs)-1-rng.IntN(min(len(dirs), 4))]
		name := fmt.Sprintf("%s/f%d%s", d, i, exts[rng.IntN(len(exts))])
		if i%97 == 96 {
			if err := add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: "../README", Mode: 0o777}, nil); err != nil {
				return nil, err
			}
			continue
		}
		size := int(math.Exp(math.Log(100) + rng.Float64()*(math.Log(65536)-math.Log(100))))
		if cap(content) < size+blockSize {
			content = make([]byte, size+blockSize)
		}
		body := content[:(size+blockSize-1)/blockSize*blockSize]
		src.fill(body)
		mode := int64(0o644)
		if i%50 == 0 {
			mode = 0o755
		}
		if err := add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(size)}, body[:size]); err != nil {
			return nil, err
		}
		ta.files[name] = int64(size)
		ta.bytes += int64(size)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	ta.data = buf.Bytes()
	return ta, nil
}

// extract unpacks the archive under dir the way tar -x does: mkdir, create+write+close, chmod
// via the create mode, symlink, and set modification times.
func (ta *treeArchive) extract(ctx context.Context, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(bytes.NewReader(ta.data))
	copyBuf := make([]byte, 32<<10)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.Mkdir(p, os.FileMode(h.Mode))
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			err = extractFile(p, h, tr, copyBuf)
		}
		if err != nil {
			return fmt.Errorf("unpack %s: %w", h.Name, err)
		}
	}
}

func extractFile(p string, h *tar.Header, r io.Reader, buf []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode))
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, r, buf); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chtimes(p, h.ModTime, h.ModTime)
}

// check verifies that every file of the archive is there with its size.
func (ta *treeArchive) check(dir string) error {
	for name, size := range ta.files {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("unpacked tree: %w", err)
		}
		if st.Size() != size {
			return fmt.Errorf("unpacked tree: %s has %d bytes, want %d", name, st.Size(), size)
		}
	}
	return nil
}
