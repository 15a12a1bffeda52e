package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/fb"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/klauspost/compress/snappy"
)

// Damage in Badger's files (see README, Guarantees): what the store promises is EIO
// (ErrCorrupt), never other bytes, a panic or a hung request.
//
//   - SST tables: Badger checks a block's checksum when it reads the block (OnBlockRead), but an
//     iterator that meets a bad block just ends, so the keys of that block and of the rest of
//     the table would read as absent (files of zeros) and a compaction would drop them for good.
//     So Open checks every block of every table the manifest lists before Badger opens them
//     (verifyTables) and refuses a store with a damaged table: ErrCorrupt naming the files.
//     Badger's own check at open (OnTableRead) cannot be used: it runs in Badger's goroutines,
//     where a damaged block can panic and kill the process.
//   - Value log (chunk bodies only): every value's CRC is checked on read (VerifyValueChecksum)
//     and every body against its hash; a mismatch is ErrCorrupt for the files naming it.
//   - A panic inside Badger on a read path is recovered at the backend boundary (Store.view,
//     update, load) and becomes ErrCorrupt, logged once with its stack.

// engineErr classifies an error that Badger returned: a checksum mismatch is ErrCorrupt; other
// errors are returned as they are. Badger's wrapping (y.Wrap) formats the errors it wraps with
// %+v, so their text is all that is left of them.
func engineErr(err error) error {
	if err == nil || errors.Is(err, ErrCorrupt) ||
		!(errors.Is(err, y.ErrChecksumMismatch) || strings.Contains(err.Error(), y.ErrChecksumMismatch.Error())) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// envErrnos are the errnos whose text in an error of badger.Open means the system refused
// something (access, space, the directory lock held by another process), not that the content of
// Badger's files is bad.
var envErrnos = []syscall.Errno{syscall.EACCES, syscall.EPERM, syscall.ENOENT, syscall.EAGAIN,
	syscall.ENOSPC, syscall.EROFS, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EIO,
	syscall.EBUSY, syscall.ENOTDIR, syscall.EISDIR, syscall.EEXIST, syscall.EINVAL}

// openErr classifies an error of badger.Open: one that is or names no errno of envErrnos is
// Badger refusing the content of its own files (a table, a value-log header, the manifest):
// ErrCorrupt. Badger keeps only the text of the errors it wraps (see engineErr).
func openErr(err error) error {
	if err == nil || errors.Is(err, ErrCorrupt) {
		return err
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return err
	}
	msg := err.Error()
	for _, en := range envErrnos {
		if strings.Contains(msg, en.Error()) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// panicked is what a recovered panic of the storage engine becomes: ErrCorrupt. The first
// one a store meets is logged with its stack (later ones without: a damaged block panics every
// reader that meets it).
func (s *Store) panicked(what string, p any) error {
	err := fmt.Errorf("%w: storage engine panicked in %s: %v", ErrCorrupt, what, p)
	if s.panics.Add(1) == 1 {
		s.log.Error("storage engine panic (damaged files?); later ones are logged without the stack", "in", what, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	} else {
		s.log.Error("storage engine panic", "in", what, "panic", fmt.Sprint(p))
	}
	return err
}

// recoverInto turns a panic of the storage engine into *err (see panicked). Deferred.
func (s *Store) recoverInto(what string, err *error) {
	if p := recover(); p != nil {
		*err = s.panicked(what, p)
	}
}

// guarded runs fn (work that calls into Badger outside view and update: GC, the format upgrade)
// with a panic of the storage engine returned as ErrCorrupt.
func (s *Store) guarded(what string, fn func() error) (err error) {
	defer func() { err = engineErr(err) }()
	defer s.recoverInto(what, &err)
	return fn()
}

// verifyTables checks every block checksum of every table that dir's manifest lists (tables not
// in the manifest are leftovers Badger deletes). A manifest it cannot read is left to
// badger.Open to report.
func verifyTables(dir string, bo badger.Options, log *slog.Logger) error {
	fp, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	mf, err := replayManifest(fp, bo)
	fp.Close()
	if err != nil {
		return nil
	}
	ids := make(chan uint64)
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				if err := verifyTable(table.NewFilename(id, dir), bo, mf.Tables[id]); err != nil {
					log.Error("damaged table", "file", table.IDToFilename(id), "err", err)
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: %v", table.IDToFilename(id), err))
					mu.Unlock()
				}
			}
		}()
	}
	for id := range mf.Tables {
		ids <- id
	}
	close(ids)
	wg.Wait()
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%w: %d damaged table file(s) (restore the store from a backup): %s", ErrCorrupt, len(bad), strings.Join(bad, "; "))
	}
	return nil
}

// replayManifest reads the manifest's list of tables; a manifest so damaged that Badger's reader
// panics is an error (badger.Open meets it next and reports it).
func replayManifest(fp *os.File, bo badger.Options) (mf badger.Manifest, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("manifest: %v", p)
		}
	}()
	mf, _, err = badger.ReplayManifestFile(fp, bo.ExternalMagicVersion, bo)
	return mf, err
}

// checkTables verifies every block of the tables Badger uses now, for fsck: damage since Open
// (which Badger's reads would take for missing keys). A table a compaction deleted meanwhile is
// skipped. It returns one line per damaged table.
func (s *Store) checkTables() []string {
	if s.inMemory {
		return nil
	}
	bo := s.db.Opts()
	var bad []string
	for _, ti := range s.db.Tables() {
		name := table.NewFilename(ti.ID, bo.Dir)
		err := verifyTable(name, bo, badger.TableManifest{Compression: bo.Compression})
		if err != nil && !errors.Is(err, fs.ErrNotExist) && s.hasTable(ti.ID) {
			bad = append(bad, fmt.Sprintf("%s: %v", filepath.Base(name), err))
		}
	}
	return bad
}

// hasTable reports whether Badger still uses table id: a compaction that replaced it while fsck
// read it is not damage. Badger deletes a table by truncating its file to 0 before removing it
// (z.MmapFile.Delete), so our map of it faults; it does so only once the table has left every
// level and its last reference is gone, so a table that faulted is no longer listed.
func (s *Store) hasTable(id uint64) bool {
	for _, ti := range s.db.Tables() {
		if ti.ID == id {
			return true
		}
	}
	return false
}

// verifyTable opens one table read-only and checks its index and every block. Badger's table
// code panics on some damaged bytes (and VerifyChecksum on every bad block: it reports the block
// it failed to get); a panic is damage too.
func verifyTable(name string, bo badger.Options, tm badger.TableManifest) (err error) {
	if tm.KeyID != 0 {
		return nil // an encrypted table: the store never writes them
	}
	f, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	// OpenTable closes f only on errors of its own checks at open, which OnBlockRead skips; and
	// never DecrRef the table: dropping the last reference deletes the file.
	defer f.Close(-1)
	// A table shorter than its map (cut short on disk) faults on read: SIGBUS, which would kill
	// the process; with panic-on-fault it is a panic, recovered below as damage.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("a block does not match its checksum or cannot be decoded (%v)", p)
		}
	}()
	if err := checkBlockSizes(f.Data, tm.Compression); err != nil {
		return err
	}
	t, err := table.OpenTable(f, table.Options{
		ReadOnly:    true,
		ChkMode:     options.OnBlockRead,
		BlockSize:   bo.BlockSize,
		Compression: tm.Compression,
	})
	if err != nil {
		return err
	}
	return t.VerifyChecksum()
}

// maxBlockBytes bounds what one table block may decompress to. A block holds entries up to
// BlockSize, or one bigger entry: values in the LSM tree are below valueThreshold.
const maxBlockBytes = 4 << 20

// checkBlockSizes reads a table's footer and index (unverified: OpenTable checks the index's
// checksum next) and refuses a Snappy block whose header claims more than maxBlockBytes, before
// Badger allocates that much to decompress it (a damaged length asked for gigabytes). Offsets
// out of the file are refused too; an index that is garbage may panic, which verifyTable
// recovers.
func checkBlockSizes(data []byte, compression options.CompressionType) error {
	n := len(data)
	if n < 8 {
		return fmt.Errorf("%d bytes: too short for a table", n)
	}
	chkLen := int(binary.BigEndian.Uint32(data[n-4:]))
	end := n - 4 - chkLen - 4
	if chkLen > n || end < 0 {
		return fmt.Errorf("checksum length %d does not fit in the file", chkLen)
	}
	start := end - int(binary.BigEndian.Uint32(data[end:]))
	if start < 0 {
		return errors.New("index length does not fit in the file")
	}
	if compression != options.Snappy {
		return nil // ZSTD blocks: Badger bounds the buffer itself; None: nothing to allocate
	}
	idx := fb.GetRootAsTableIndex(data[start:end], 0)
	var bo fb.BlockOffset
	for i := range idx.OffsetsLength() {
		if !idx.Offsets(&bo, i) {
			return fmt.Errorf("index entry %d cannot be read", i)
		}
		off, l := int(bo.Offset()), int(bo.Len())
		if l <= 0 || off+l > start {
			return fmt.Errorf("block %d at %d (%d bytes) lies outside the table's blocks", i, off, l)
		}
		if dl, err := snappy.DecodedLen(data[off : off+l]); err == nil && dl > maxBlockBytes {
			return fmt.Errorf("block %d claims to decompress to %d bytes", i, dl)
		}
	}
	return nil
}
