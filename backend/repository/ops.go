package repository

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/backend/sendstream"
)

func sortBackups(b []Backup) {
	slices.SortFunc(b, func(x, y Backup) int {
		if c := strings.Compare(x.Volume, y.Volume); c != 0 {
			return c
		}
		if c := x.Created.Compare(y.Created); c != 0 {
			return c
		}
		return strings.Compare(x.Snapshot, y.Snapshot)
	})
}

// RestoreStats is what a Restore wrote.
type RestoreStats struct {
	Backup
	Bodies int64 // chunk bodies in the stream (each once)
}

// Restore writes the backup of volume@snapshot to w as a full sendstream, every chunk read
// from the repository and checked against its hash first. On any error (a missing or damaged
// chunk, a damaged manifest) w gets no trailer, so a receiver refuses the stream and builds
// nothing.
func (r *Repository) Restore(ctx context.Context, volume, snapshot string, w io.Writer) (RestoreStats, error) {
	var st RestoreStats
	unlock, err := r.st.Lock(ctx, false)
	if err != nil {
		return st, err
	}
	defer unlock()
	b, dec, c, err := r.openBackup(ctx, volume, snapshot)
	if err != nil {
		return st, err
	}
	defer c.Close()
	st.Backup = b
	fail := func(err error) (RestoreStats, error) {
		return st, fmt.Errorf("restore %s@%s: %w", volume, snapshot, err)
	}
	enc, err := sendstream.NewEncoder(w, dec.Header())
	if err != nil {
		return fail(err)
	}
	sent := map[Hash]bool{}
	for {
		rec, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("%w: manifest: %w", ErrDamaged, err))
		}
		if rec.Type == sendstream.TChunk && !sent[rec.Hash] {
			data, err := r.getChunk(ctx, rec.Hash)
			if err != nil {
				return fail(err)
			}
			if len(data) != int(rec.Length) {
				return fail(fmt.Errorf("%w: chunk %x holds %d bytes, the manifest says %d", ErrDamaged, rec.Hash[:8], len(data), rec.Length))
			}
			if err := enc.Body(rec.Hash, data); err != nil {
				return fail(err)
			}
			sent[rec.Hash] = true
			st.Bodies++
		}
		if err := encode(enc, rec); err != nil {
			return fail(err)
		}
	}
	if err := enc.Close(); err != nil {
		return fail(err)
	}
	return st, nil
}

// encode writes a manifest's record (one a full stream holds) to enc.
func encode(enc *sendstream.Encoder, r sendstream.Record) error {
	switch r.Type {
	case sendstream.TInode:
		return enc.Inode(r.Inode)
	case sendstream.TDirent:
		return enc.Dirent(r.Dir, r.Name, r.Ino, r.Kind)
	case sendstream.TXattr:
		return enc.Xattr(r.Ino, r.Name, r.Data)
	case sendstream.TChunk:
		return enc.Chunk(r.Ino, r.Index, r.Hash, r.Length)
	}
	return fmt.Errorf("%w: manifest: unexpected %s record", ErrDamaged, r.Type)
}

// Policy is which backups Forget keeps, per volume: restic's keep rules (see
// backend.SchedulePolicy.Prunable, which it uses), by each snapshot's creation time.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly int
}

func (p Policy) schedule() backend.SchedulePolicy {
	return backend.SchedulePolicy{Keep: p.Last, KeepHourly: p.Hourly, KeepDaily: p.Daily, KeepWeekly: p.Weekly, KeepMonthly: p.Monthly}
}

// Forget deletes the backups p does not keep (of volume, or of every volume when volume is
// "") and returns them. The chunks stay until a Prune. A zero policy is refused: it would keep
// nothing.
func (r *Repository) Forget(ctx context.Context, volume string, p Policy) ([]Backup, error) {
	if p == (Policy{}) {
		return nil, fmt.Errorf("%w: forget needs a keep rule (it would delete every backup)", ErrInvalid)
	}
	for _, n := range []int{p.Last, p.Hourly, p.Daily, p.Weekly, p.Monthly} {
		if n < 0 {
			return nil, fmt.Errorf("%w: a keep rule of %d", ErrInvalid, n)
		}
	}
	unlock, err := r.st.Lock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	list, err := r.list(ctx, volume)
	if err != nil {
		return nil, err
	}
	byVolume := map[string][]backend.SnapshotInfo{}
	byName := map[string]Backup{}
	for _, b := range list {
		byVolume[b.Volume] = append(byVolume[b.Volume], backend.SnapshotInfo{Volume: b.Volume, Name: b.Snapshot, CreatedAt: b.Created, Auto: true})
		byName[b.Volume+"@"+b.Snapshot] = b
	}
	var gone []Backup
	for _, vol := range slices.Sorted(maps.Keys(byVolume)) {
		for _, s := range p.schedule().Prunable(byVolume[vol]) {
			if err := r.st.Delete(ctx, backupName(vol, s.Name)); err != nil {
				return gone, err
			}
			gone = append(gone, byName[vol+"@"+s.Name])
		}
	}
	sortBackups(gone)
	return gone, nil
}

// PruneStats is what a Prune deleted.
type PruneStats struct {
	Chunks    int64 // chunks no backup uses
	Bytes     int64 // their stored bytes
	Leftovers int64 // temporary files of writes that never finished
	Kept      int64 // chunks still in use
}

// Prune deletes the chunks no backup uses, under the exclusive lock (no backup is writing
// chunks it has not referenced yet). A backup whose file does not read stops it: its chunks
// cannot be told from garbage.
func (r *Repository) Prune(ctx context.Context) (PruneStats, error) {
	var st PruneStats
	unlock, err := r.st.Lock(ctx, true)
	if err != nil {
		return st, err
	}
	defer unlock()
	used, err := r.used(ctx)
	if err != nil {
		return st, fmt.Errorf("prune: %w", err)
	}
	names, err := r.st.List(ctx, "chunks/")
	if err != nil {
		return st, err
	}
	for _, n := range names {
		if used[n] {
			st.Kept++
			continue
		}
		if size, err := r.size(ctx, n); err == nil {
			st.Bytes += size
		}
		if err := r.st.Delete(ctx, n); err != nil {
			return st, err
		}
		st.Chunks++
	}
	if d, ok := r.st.(*Dir); ok {
		n, err := d.removeLeftovers()
		st.Leftovers = int64(n)
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

func (r *Repository) size(ctx context.Context, name string) (int64, error) {
	rc, err := r.st.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}

// used is the set of chunk object names the backups use, with the length each must have.
func (r *Repository) used(ctx context.Context) (map[string]bool, error) {
	list, err := r.list(ctx, "")
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, b := range list {
		t, err := r.readTree(ctx, b.Volume, b.Snapshot)
		if err != nil {
			return nil, err
		}
		_ = t.refs(func(_, _ uint64, c chunkRef) error { used[chunkName(c.hash)] = true; return nil })
	}
	return used, nil
}

// CheckReport is what Check found.
type CheckReport struct {
	Backups      int64
	Chunks       int64    // chunks read and checked
	Unreferenced int64    // chunks no backup uses (prune deletes them)
	Leftovers    int64    // temporary files of writes that never finished (prune deletes them)
	Problems     []string // each a backup that would not restore, and why
}

// Clean reports whether every backup restores.
func (c CheckReport) Clean() bool { return len(c.Problems) == 0 }

// Check reads every backup file and every chunk the backups use, checking each chunk against
// its hash and its length against what the manifests say.
func (r *Repository) Check(ctx context.Context) (CheckReport, error) {
	var rep CheckReport
	unlock, err := r.st.Lock(ctx, false)
	if err != nil {
		return rep, err
	}
	defer unlock()
	names, err := r.st.List(ctx, "backups/")
	if err != nil {
		return rep, err
	}
	want := map[Hash]uint32{}
	users := map[Hash]string{}
	for _, n := range names {
		rep.Backups++
		parts := strings.Split(n, "/")
		if len(parts) != 3 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: not a backup's name", n))
			continue
		}
		t, err := r.readTree(ctx, parts[1], parts[2])
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
			continue
		}
		_ = t.refs(func(_, _ uint64, c chunkRef) error {
			if l, ok := want[c.hash]; ok && l != c.length {
				rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s@%s: chunk %x of %d bytes, another backup's of %d", parts[1], parts[2], c.hash[:8], c.length, l))
			}
			want[c.hash] = c.length
			if _, ok := users[c.hash]; !ok {
				users[c.hash] = parts[1] + "@" + parts[2]
			}
			return nil
		})
	}
	for _, h := range sortedHashes(want) {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Chunks++
		data, err := r.getChunk(ctx, h)
		if err == nil && len(data) != int(want[h]) {
			err = fmt.Errorf("%w: chunk %x holds %d bytes, the manifest says %d", ErrDamaged, h[:8], len(data), want[h])
		}
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s (and any other using it): %v", users[h], err))
		}
	}
	all, err := r.st.List(ctx, "chunks/")
	if err != nil {
		return rep, err
	}
	for _, n := range all {
		if h, ok := parseChunkName(n); !ok {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: not a chunk's name", n))
		} else if _, used := want[h]; !used {
			rep.Unreferenced++
		}
	}
	if d, ok := r.st.(*Dir); ok {
		files, err := d.leftovers()
		if err != nil {
			return rep, err
		}
		rep.Leftovers = int64(len(files))
	}
	return rep, nil
}

func sortedHashes(m map[Hash]uint32) []Hash {
	out := make([]Hash, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Hash) int { return strings.Compare(string(a[:]), string(b[:])) })
	return out
}
