package repository

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
)

// BenchmarkBackup stores a full stream of 32 MiB (128 chunks of 256 KiB, random) in a new
// repository, against writing the same stream to one file and fsyncing it (the baseline, as
// send -o FILE on a disk), in the same run; ratio = backup's MiB/s over the baseline's.
func BenchmarkBackup(b *testing.B) {
	ctx := context.Background()
	s, err := backend.Open(ctx, b.TempDir(), backend.Options{GCInterval: -1}) // on disk: bodies of 256 KiB
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err = s.CreateVolume(ctx, "v", backend.VolumeOptions{ChunkSize: 256 << 10}); err != nil {
		b.Fatal(err)
	}
	v, err := s.OpenVolume(ctx, "v")
	if err != nil {
		b.Fatal(err)
	}
	vo := &volume{t: b, s: s, name: "v", v: v}
	a, err := v.Mknod(ctx, backend.RootIno, "data", backend.NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 32<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if _, err := v.WriteAt(ctx, a.Ino, data, 0); err != nil {
		b.Fatal(err)
	}
	vo.snapshot("s")
	stream := send(b, s, "v", "s", "")
	dir := b.TempDir()
	var base, repo float64
	for i := 0; b.Loop(); i++ {
		p := filepath.Join(dir, fmt.Sprint("stream", i))
		base += timed(func() {
			fh, err := os.Create(p)
			if err == nil {
				_, err = fh.Write(stream)
			}
			if err == nil {
				err = fh.Sync()
			}
			if err != nil {
				b.Fatal(err)
			}
			fh.Close()
		})
		r := newRepo(b, b.TempDir())
		repo += timed(func() {
			if _, err := r.Backup(ctx, bytes.NewReader(stream)); err != nil {
				b.Fatal(err)
			}
		})
	}
	mib := float64(len(stream)) / (1 << 20) * float64(b.N)
	b.ReportMetric(mib/repo, "backup-MiB/s")
	b.ReportMetric(mib/base, "file-MiB/s")
	b.ReportMetric(base/repo, "ratio")
}

// timed is how long fn took, in seconds.
func timed(fn func()) float64 {
	start := time.Now()
	fn()
	return time.Since(start).Seconds()
}
