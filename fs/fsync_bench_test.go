package fs

import (
	"expvar"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
)

// BenchmarkRandWriteFsync4K overwrites random 4 KiB blocks of a file and fsyncs each, a
// database's commit pattern, on the native filesystem and on a volume (served by this
// process). For the volume it also reports store_bytes/op, what Badger wrote per op (settled
// and committed chunks, metadata, compactions; the intent log's own 4 KiB records aside): the
// write amplification that competes with the next fsync for the device.
func BenchmarkRandWriteFsync4K(b *testing.B) {
	fusetest.Require(b)
	// The file is four times the write buffer, as in the bench harness's soak (256 MiB against
	// the daemon's 64 MiB): commits, and with them settling of the intent log, run throughout.
	tv := newVolume(b, backend.VolumeOptions{}, Options{DirtyLimit: randFileSize / 4})
	for _, t := range []benchTarget{{"native", b.TempDir()}, {"fusevol", tv.dir}} {
		b.Run(t.name, func(b *testing.B) {
			fd := randFile(b, filepath.Join(t.dir, "db"))
			buf := randBytes(9, 4096)
			r := rand.New(rand.NewPCG(5, 6))
			start := storeWriteBytes()
			for b.Loop() {
				buf[0]++
				if _, err := unix.Pwrite(fd, buf, int64(r.IntN(randFileSize/4096))*4096); err != nil {
					b.Fatal(err)
				}
				if err := unix.Fdatasync(fd); err != nil {
					b.Fatal(err)
				}
			}
			if t.name == "fusevol" {
				b.ReportMetric(float64(storeWriteBytes()-start)/float64(b.N), "store_bytes/op")
			}
		})
	}
}

// storeWriteBytes sums Badger's counters of bytes written (memtable log, value log, level-0
// flushes, compactions) in this process. /proc/self/io cannot stand in: on this machine's disk
// it counts 1 MiB for every 4 KiB fdatasync.
func storeWriteBytes() int64 {
	var n int64
	for _, name := range []string{"badger_write_bytes_user", "badger_write_bytes_vlog", "badger_write_bytes_l0"} {
		if v, ok := expvar.Get(name).(*expvar.Int); ok {
			n += v.Value()
		}
	}
	if m, ok := expvar.Get("badger_write_bytes_compaction").(*expvar.Map); ok {
		m.Do(func(kv expvar.KeyValue) {
			if v, ok := kv.Value.(*expvar.Int); ok {
				n += v.Value()
			}
		})
	}
	return n
}
