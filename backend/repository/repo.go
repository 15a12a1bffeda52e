package repository

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/backend/sendstream"
)

// Errors of a repository operation, besides ErrDamaged.
var (
	ErrNotFound = errors.New("not in the repository")
	ErrExists   = errors.New("already in the repository")
	ErrInvalid  = errors.New("invalid")

	errMissing = errors.New("missing")
)

// Repository is a backup repository in a Storage.
type Repository struct {
	st    Storage
	codec *codec
	log   *slog.Logger
}

// Open opens the repository in st. With create, an empty st becomes a new repository; a
// Storage holding other objects and no repository config is refused either way.
func Open(ctx context.Context, st Storage, create bool, log *slog.Logger) (*Repository, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := newCodec()
	if err != nil {
		return nil, err
	}
	r := &Repository{st: st, codec: c, log: log}
	b, err := r.read(ctx, configName)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("%w: no repository here (volctl send --to makes one)", ErrNotFound)
		}
		return r, r.create(ctx)
	}
	if err != nil {
		return nil, err
	}
	var cfg config
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Format != configFormat {
		return nil, fmt.Errorf("%w: not a fusevol repository (its config does not read as one)", ErrInvalid)
	}
	if cfg.Version != configVersion {
		return nil, fmt.Errorf("%w: repository version %d (this volctl reads %d)", ErrInvalid, cfg.Version, configVersion)
	}
	return r, nil
}

func (r *Repository) create(ctx context.Context) error {
	names, err := r.st.List(ctx, "")
	if err != nil {
		return err
	}
	for _, n := range names {
		if n != lockFile {
			return fmt.Errorf("%w: not a repository and not empty (holds %s)", ErrInvalid, n)
		}
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	b, _ := json.Marshal(config{Format: configFormat, Version: configVersion, ID: hex.EncodeToString(id[:])})
	return r.st.Put(ctx, configName, bytes.NewReader(b))
}

func (r *Repository) read(ctx context.Context, name string) ([]byte, error) {
	rc, err := r.st.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// getChunk reads chunk h, checked against its hash.
func (r *Repository) getChunk(ctx context.Context, h Hash) ([]byte, error) {
	b, err := r.read(ctx, chunkName(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: chunk %x: %w", ErrDamaged, h[:8], errMissing)
	}
	if err != nil {
		return nil, err
	}
	return r.codec.decodeChunk(h, b)
}

// BackupStats is what a Backup wrote.
type BackupStats struct {
	Backup
	Verified    int64 // chunk bodies of the stream the repository held already: read and checked, not written
	Repaired    int64 // chunk bodies the repository held damaged, written again (counted in Added)
	StreamBytes int64 // stream bytes read
}

// Backup reads a sendstream (full, or incremental from a snapshot the repository holds a
// backup of) and stores it as the backup of the stream's snapshot: the chunk bodies it does
// not hold, then the backup file. Nothing is visible until the backup file is in place, so an
// interrupted Backup leaves chunks that the next one of the same snapshot verifies instead of
// writing, and that prune deletes if none comes.
func (r *Repository) Backup(ctx context.Context, in io.Reader) (BackupStats, error) {
	var st BackupStats
	unlock, err := r.st.Lock(ctx, false)
	if err != nil {
		return st, err
	}
	defer unlock()
	dec, err := sendstream.NewDecoder(in)
	if err != nil {
		return st, err
	}
	h := dec.Header()
	st.Volume, st.Snapshot, st.SnapshotID, st.Created = h.Volume, h.Snapshot, h.SnapshotID, time.Unix(0, h.Created).UTC()
	if err := checkNames(h.Volume, h.Snapshot); err != nil {
		return st, err
	}
	name := backupName(h.Volume, h.Snapshot)
	if rc, err := r.st.Get(ctx, name); err == nil {
		rc.Close()
		return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	t, err := r.startTree(ctx, h)
	if err != nil {
		return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, err)
	}
	held := map[Hash]bool{} // chunks known to be in the repository: the base's, and those the stream brought
	_ = t.refs(func(_, _ uint64, c chunkRef) error { held[c.hash] = true; return nil })
	w := r.newChunkWriter(ctx, &st)
	defer w.wait()
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, err)
		}
		if rec.Type == sendstream.TBody {
			if err := w.put(rec.Hash, rec.Data); err != nil {
				return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, err)
			}
			held[rec.Hash] = true
			continue
		}
		if err := t.apply(rec); err != nil {
			return st, err
		}
	}
	// Every chunk durable before the backup file names it.
	if err := w.wait(); err != nil {
		return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, err)
	}
	st.StreamBytes = int64(dec.Counts().Bytes)
	if err := r.summarise(t, held, &st.Backup); err != nil {
		return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, err)
	}
	st.BackedUp = time.Now().UTC()
	if err := r.putBackup(ctx, name, st.Backup, t); err != nil {
		return st, fmt.Errorf("backup %s@%s: %w", h.Volume, h.Snapshot, err)
	}
	r.log.Info("backup stored", "volume", h.Volume, "snapshot", h.Snapshot, "chunks", st.Chunks,
		"added", st.Added, "verified", st.Verified)
	return st, nil
}

func checkNames(volume, snapshot string) error {
	for _, n := range []string{volume, snapshot} {
		if err := backend.ValidateName(n); err != nil {
			return fmt.Errorf("%w: name %q: %v", ErrInvalid, n, err)
		}
	}
	return nil
}

// startTree is the tree a stream with header h applies to: an empty one, or the tree of the
// backup of the stream's base.
func (r *Repository) startTree(ctx context.Context, h sendstream.Header) (*tree, error) {
	if !h.Incremental {
		return newTree(h), nil
	}
	// Any volume's: a received snapshot keeps its identity, so a copy's base may be backed up
	// under the volume it came from.
	list, err := r.list(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, b := range list {
		if b.SnapshotID != h.BaseID {
			continue
		}
		t, err := r.readTree(ctx, b.Volume, b.Snapshot)
		if err != nil {
			return nil, fmt.Errorf("the stream's base %s@%s: %w", b.Volume, b.Snapshot, err)
		}
		t.rebase(h)
		return t, nil
	}
	return nil, fmt.Errorf("%w: the stream's base %s@%s (id %s) has no backup here: send it first", ErrNotFound,
		h.Volume, h.BaseName, h.BaseID)
}

// chunkWriters is how many chunks a backup writes at once: each write waits for two fsyncs,
// which a filesystem can batch (BenchmarkBackup).
const chunkWriters = 8

// chunkWriter stores a stream's bodies, several at once.
type chunkWriter struct {
	r   *Repository
	ctx context.Context
	sem chan struct{}
	wg  sync.WaitGroup
	mu  sync.Mutex
	st  *BackupStats // its counts, under mu
	err error        // the first failure, under mu
}

func (r *Repository) newChunkWriter(ctx context.Context, st *BackupStats) *chunkWriter {
	return &chunkWriter{r: r, ctx: ctx, sem: make(chan struct{}, chunkWriters), st: st}
}

// put starts storing body data (copied: the decoder reuses it) under h, unless the repository
// holds it intact already; it returns an earlier put's failure.
func (w *chunkWriter) put(h Hash, data []byte) error {
	if err := w.failed(); err != nil {
		return err
	}
	data = append([]byte(nil), data...)
	w.sem <- struct{}{}
	w.wg.Add(1)
	go func() {
		defer func() { <-w.sem; w.wg.Done() }()
		var st BackupStats
		err := w.r.putChunk(w.ctx, h, data, &st)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil && w.err == nil {
			w.err = err
		}
		w.st.Verified += st.Verified
		w.st.Repaired += st.Repaired
		w.st.Added += st.Added
		w.st.AddedBytes += st.AddedBytes
	}()
	return nil
}

func (w *chunkWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// wait waits for every put and returns the first failure.
func (w *chunkWriter) wait() error {
	w.wg.Wait()
	return w.failed()
}

// putChunk stores a body unless the repository holds it intact already.
func (r *Repository) putChunk(ctx context.Context, h Hash, data []byte, st *BackupStats) error {
	if blake3.Sum256(data) != h {
		return fmt.Errorf("%w: a chunk body that does not match its hash %x", sendstream.ErrFormat, h[:8])
	}
	_, err := r.getChunk(ctx, h)
	switch {
	case err == nil:
		st.Verified++
		return nil
	case !errors.Is(err, ErrDamaged):
		return err
	case !errors.Is(err, errMissing):
		st.Repaired++
		r.log.Warn("backup: rewriting a damaged chunk", "err", err)
	}
	st.Added++
	st.AddedBytes += int64(len(data))
	return r.st.Put(ctx, chunkName(h), bytes.NewReader(r.codec.encodeChunk(data)))
}

// summarise counts what tree t uses, every chunk of which must be in held.
func (r *Repository) summarise(t *tree, held map[Hash]bool, b *Backup) error {
	b.Inodes, b.Chunks, b.Bytes = int64(len(t.inodes)), 0, 0
	seen := map[Hash]bool{}
	return t.refs(func(ino, index uint64, c chunkRef) error {
		if !held[c.hash] {
			return fmt.Errorf("%w: chunk %d of inode %d (%x) is neither in the stream nor in the repository", ErrInvalid, index, ino, c.hash[:8])
		}
		if !seen[c.hash] {
			seen[c.hash] = true
			b.Chunks++
			b.Bytes += int64(c.length)
		}
		return nil
	})
}

// putBackup writes the backup file: the commit point of a backup.
func (r *Repository) putBackup(ctx context.Context, name string, b Backup, t *tree) error {
	prefix, err := encodeBackupPrefix(b)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := pw.Write(prefix)
		if err == nil {
			err = t.write(pw)
		}
		pw.CloseWithError(err)
	}()
	err = r.st.Put(ctx, name, pr)
	pr.CloseWithError(io.ErrClosedPipe) // stops the writer if Put gave up early
	return err
}

// openBackup opens a backup file, returning its description and a decoder at its manifest.
func (r *Repository) openBackup(ctx context.Context, volume, snapshot string) (Backup, *sendstream.Decoder, io.Closer, error) {
	if err := checkNames(volume, snapshot); err != nil {
		return Backup{}, nil, nil, err
	}
	rc, err := r.st.Get(ctx, backupName(volume, snapshot))
	if errors.Is(err, fs.ErrNotExist) {
		return Backup{}, nil, nil, fmt.Errorf("backup %s@%s: %w", volume, snapshot, ErrNotFound)
	}
	if err != nil {
		return Backup{}, nil, nil, err
	}
	b, dec, err := decodeBackup(rc)
	if err != nil {
		rc.Close()
		return b, nil, nil, fmt.Errorf("backup %s@%s: %w", volume, snapshot, err)
	}
	if b.Volume != volume || b.Snapshot != snapshot {
		rc.Close()
		return b, nil, nil, fmt.Errorf("backup %s@%s: %w: its file describes %s@%s", volume, snapshot, ErrDamaged, b.Volume, b.Snapshot)
	}
	return b, dec, rc, nil
}

// decodeBackup reads a backup file's description and the header of its manifest, which must
// agree.
func decodeBackup(r io.Reader) (Backup, *sendstream.Decoder, error) {
	b, err := readBackupPrefix(r)
	if err != nil {
		return b, nil, err
	}
	dec, err := sendstream.NewDecoder(r)
	if err != nil {
		return b, nil, fmt.Errorf("%w: manifest: %w", ErrDamaged, err)
	}
	h := dec.Header()
	if h.Incremental || h.Volume != b.Volume || h.Snapshot != b.Snapshot || h.SnapshotID != b.SnapshotID {
		return b, nil, fmt.Errorf("%w: the manifest's header does not match the backup's description", ErrDamaged)
	}
	return b, dec, nil
}

func (r *Repository) readTree(ctx context.Context, volume, snapshot string) (*tree, error) {
	_, dec, c, err := r.openBackup(ctx, volume, snapshot)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	t, err := treeOf(dec)
	if err != nil {
		return nil, fmt.Errorf("backup %s@%s: %w: manifest: %w", volume, snapshot, ErrDamaged, err)
	}
	return t, nil
}

// treeOf reads the rest of a manifest into a tree.
func treeOf(dec *sendstream.Decoder) (*tree, error) {
	t := newTree(dec.Header())
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			return t, nil
		}
		if err == nil {
			err = t.apply(rec)
		}
		if err != nil {
			return nil, err
		}
	}
}

// List returns the backups of volume (every volume's when volume is ""), by volume and then
// oldest first.
func (r *Repository) List(ctx context.Context, volume string) ([]Backup, error) {
	unlock, err := r.st.Lock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.list(ctx, volume)
}

func (r *Repository) list(ctx context.Context, volume string) ([]Backup, error) {
	prefix := "backups/"
	if volume != "" {
		if err := backend.ValidateName(volume); err != nil {
			return nil, fmt.Errorf("%w: volume name %q: %v", ErrInvalid, volume, err)
		}
		prefix += volume + "/"
	}
	names, err := r.st.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []Backup
	for _, n := range names {
		parts := strings.Split(n, "/")
		if len(parts) != 3 {
			return nil, fmt.Errorf("%w: unexpected object %s", ErrDamaged, n)
		}
		b, _, c, err := r.openBackup(ctx, parts[1], parts[2])
		if err != nil {
			return nil, err
		}
		c.Close()
		out = append(out, b)
	}
	sortBackups(out)
	return out, nil
}
