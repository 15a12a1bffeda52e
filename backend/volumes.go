package backend

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// CreateVolume creates a volume; opts.From ("VOL@SNAP") makes it a clone of that snapshot, sharing
// its data (the clone's chunk size is the origin's, and so is its quota unless opts.Size is set).
// VOL@SNAP may name a snapshot of a removed volume (removed.go); a clone of one into the removed
// volume's own name takes back all of its snapshots. Zero options take their defaults
// (DefaultVolumeOptions). ErrExists if the name is taken. A non-zero opts.Schedule becomes the
// volume's schedule (schedule.go) in the same transaction; a clone has none unless given one.
func (s *Store) CreateVolume(ctx context.Context, name string, opts VolumeOptions) (VolumeInfo, error) {
	if err := ValidateName(name); err != nil {
		return VolumeInfo{}, err
	}
	if !opts.Schedule.IsZero() {
		if err := opts.Schedule.Validate(); err != nil {
			return VolumeInfo{}, fmt.Errorf("volume %q: %w", name, err)
		}
	}
	opts = opts.withDefaults()
	rec := &volRec{Name: name, ID: uuid.NewString(), CreatedAt: time.Now().UTC(), Options: opts}
	err := s.update(ctx, func(t *tx) error {
		var existing volRec
		if err := t.getJSON(volumeKey(name), &existing); err == nil {
			return fmt.Errorf("volume %q: %w", name, ErrExists)
		} else if err != ErrNotFound {
			return err
		}
		if !opts.Schedule.IsZero() {
			if err := t.set(scheduleKey(name), encodeSchedule(opts.Schedule)); err != nil {
				return err
			}
		}
		if opts.From != "" {
			return s.initClone(t, rec)
		}
		return s.initVolume(t, rec)
	})
	if err != nil {
		return VolumeInfo{}, err
	}
	if opts.From != "" {
		if err := s.reclaimOrphans(ctx, name); err != nil {
			return VolumeInfo{}, err
		}
	}
	return rec.info(), nil
}

// initVolume creates a new snapshot tree with an empty root directory.
func (s *Store) initVolume(t *tx, rec *volRec) error {
	tree, err := t.newTree()
	if err != nil {
		return err
	}
	head, err := t.newNode(tree, 0)
	if err != nil {
		return err
	}
	rec.Tree, rec.Head = tree, head
	t.at(tree, head, []uint32{head})
	now := time.Now().UnixNano()
	root := &inode{Attr: Attr{Ino: RootIno, Mode: syscall.S_IFDIR | rec.Options.Mode&07777,
		UID: rec.Options.UID, GID: rec.Options.GID, Nlink: 2, Atime: now, Mtime: now, Ctime: now, Gen: 1}}
	if err := t.putInode(root); err != nil {
		return err
	}
	if err := t.addUsage(head, 0, 1); err != nil {
		return err
	}
	return s.putVolume(t, rec)
}

// initClone makes rec a new child of a snapshot's node.
func (s *Store) initClone(t *tx, rec *volRec) error {
	volName, snapName, _ := strings.Cut(rec.Options.From, "@")
	volName, err := resolveSnapshot(t, volName, snapName)
	if err != nil {
		return fmt.Errorf("clone from %q: %w", rec.Options.From, err)
	}
	var origin volRec
	if err := t.getJSON(volumeKey(volName), &origin); err != nil {
		return fmt.Errorf("clone from %q: volume %q: %w", rec.Options.From, volName, err)
	}
	var snap snapRec
	if err := t.getJSON(snapshotKey(volName, snapName), &snap); err != nil {
		return fmt.Errorf("clone from %q: snapshot %q: %w", rec.Options.From, snapName, err)
	}
	if rec.Options.ChunkSize != origin.Options.ChunkSize && rec.Options.ChunkSize != DefaultChunkSize {
		return fmt.Errorf("%w: option chunk-size: a clone keeps its origin's chunk size (%d)", ErrInvalid, origin.Options.ChunkSize)
	}
	rec.Options.ChunkSize = origin.Options.ChunkSize
	// Size 0 is "not given" (the option must be positive): the clone holds what its origin
	// held, so it gets the origin's limit rather than none.
	if rec.Options.Size == 0 {
		rec.Options.Size = origin.Options.Size
	}
	rec.Options.From = volName + "@" + snapName
	head, err := t.newNode(origin.Tree, snap.Node)
	if err != nil {
		return err
	}
	rec.Tree, rec.Head = origin.Tree, head
	if err := copyUsage(t, snap.Node, head); err != nil {
		return err
	}
	if IsRemovedName(volName) {
		if err := s.adoptRemoved(t, rec, volName); err != nil {
			return err
		}
	}
	return s.putVolume(t, rec)
}

func copyUsage(t *tx, from, to uint32) error {
	u, err := t.getUsage(from)
	if err != nil {
		return err
	}
	return t.set(usageKey(to), encodeUsage(u))
}

// putVolume writes a volume record and mirrors it in memory on commit.
func (s *Store) putVolume(t *tx, rec *volRec) error {
	if err := t.setJSON(volumeKey(rec.Name), rec); err != nil {
		return err
	}
	cp := *rec
	t.onCommit(func() { s.vols[cp.Name] = &cp })
	return nil
}

// GetVolume returns ErrNotFound for an unknown name (and for a removed volume's record). It reads
// the store, not a cache.
func (s *Store) GetVolume(ctx context.Context, name string) (VolumeInfo, error) {
	var rec volRec
	err := s.view(func(t *tx) error {
		if IsRemovedName(name) {
			return ErrNotFound
		}
		return t.getJSON(volumeKey(name), &rec)
	})
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("volume %q: %w", name, err)
	}
	return rec.info(), nil
}

// ListVolumes returns every volume, sorted by name, read from the store. Removed volumes' records
// are not volumes: they are left out.
func (s *Store) ListVolumes(ctx context.Context) ([]VolumeInfo, error) {
	var out []VolumeInfo
	err := s.view(func(t *tx) error {
		return scanPrefix(t.txn, []byte{pVolume}, true, func(k, v []byte) error {
			var r volRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: volume record %q: %v", ErrCorrupt, k[1:], err)
			}
			if !IsRemovedName(r.Name) {
				out = append(out, r.info())
			}
			return nil
		})
	})
	return out, err
}

// DeleteVolume deletes a volume and its snapshots (clones made from them survive); given a
// removed volume's record, it deletes the record and its kept snapshots. DeleteVolumeKeepSnapshots
// keeps them. Space is reclaimed by GC. The caller must make sure it is not mounted.
func (s *Store) DeleteVolume(ctx context.Context, name string) error {
	return s.update(ctx, func(t *tx) error {
		var rec volRec
		if err := t.getJSON(volumeKey(name), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
		if err := scanPrefix(t.txn, snapshotPrefix(name), false, func(k, _ []byte) error {
			return t.delete(k)
		}); err != nil {
			return err
		}
		return s.deleteVolumeIn(t, name)
	})
}

// CreateSnapshot takes a read-only snapshot of the volume's committed state in constant time: the
// live node is frozen as the snapshot and the volume continues in a new child of it. Names
// starting with AutoPrefix are the scheduler's (CreateAutoSnapshot) and refused here.
func (s *Store) CreateSnapshot(ctx context.Context, volume, name string) (SnapshotInfo, error) {
	if strings.HasPrefix(name, AutoPrefix) {
		return SnapshotInfo{}, fmt.Errorf("%w: snapshot name %q: names starting with %q are reserved for scheduled snapshots (volctl snapshot schedule)", ErrInvalid, name, AutoPrefix)
	}
	return s.createSnapshot(ctx, volume, name, snapRec{CreatedAt: time.Now().UTC()})
}

// createSnapshot takes the snapshot volume@name with the record's time and flag.
func (s *Store) createSnapshot(ctx context.Context, volume, name string, snap snapRec) (SnapshotInfo, error) {
	if err := ValidateName(name); err != nil {
		return SnapshotInfo{}, err
	}
	if err := s.settleVolume(ctx, s.volumeID(volume)); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s@%s: apply logged writes: %w", volume, name, err)
	}
	err := s.update(ctx, func(t *tx) error {
		var rec volRec
		if err := t.getJSON(volumeKey(volume), &rec); err != nil || IsRemovedName(volume) {
			return fmt.Errorf("volume %q: %w", volume, cmp.Or(err, ErrNotFound))
		}
		var existing snapRec
		if err := t.getJSON(snapshotKey(volume, name), &existing); err == nil {
			return fmt.Errorf("snapshot %s@%s: %w", volume, name, ErrExists)
		} else if err != ErrNotFound {
			return err
		}
		if snap.Auto {
			if err := mustBeScheduled(t, volume); err != nil {
				return err
			}
		}
		head, err := t.newNode(rec.Tree, rec.Head)
		if err != nil {
			return err
		}
		if err := copyUsage(t, rec.Head, head); err != nil {
			return err
		}
		snap.Node, rec.Head = rec.Head, head
		if err := t.setJSON(snapshotKey(volume, name), snap); err != nil {
			return err
		}
		return s.putVolume(t, &rec)
	})
	if err != nil {
		return SnapshotInfo{}, err
	}
	return SnapshotInfo{Volume: volume, Name: name, CreatedAt: snap.CreatedAt, Auto: snap.Auto}, nil
}

// ListSnapshots returns a volume's snapshots, oldest first (volume "" lists all volumes'). Kept
// snapshots of removed volumes come with them, named by their records (NAME~ID8, see removed.go)
// and with RemovedAt set: all of them for "", those of removed volumes of that name for a name.
// ErrNotFound when there is neither such a volume nor a removed one with snapshots.
func (s *Store) ListSnapshots(ctx context.Context, volume string) ([]SnapshotInfo, error) {
	prefixes := [][]byte{{pSnapshot}}
	if volume != "" {
		prefixes = [][]byte{snapshotPrefix(volume), append([]byte{pSnapshot}, volume+removedSep...)}
	}
	var out []SnapshotInfo
	err := s.view(func(t *tx) error {
		removed := map[string]time.Time{}
		for _, prefix := range prefixes {
			if err := scanPrefix(t.txn, prefix, true, func(k, v []byte) error {
				vol, name, _ := strings.Cut(string(k[1:]), "\x00")
				var r snapRec
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("%w: snapshot record %q: %v", ErrCorrupt, k[1:], err)
				}
				info := SnapshotInfo{Volume: vol, Name: name, CreatedAt: r.CreatedAt, Auto: r.Auto}
				if IsRemovedName(vol) {
					at, ok := removed[vol]
					if !ok {
						var err error
						if at, err = removedAt(t, vol); err != nil {
							return fmt.Errorf("snapshot %s@%s: %w", vol, name, err)
						}
						removed[vol] = at
					}
					info.RemovedAt = at
				}
				out = append(out, info)
				return nil
			}); err != nil {
				return err
			}
		}
		if volume == "" || len(out) > 0 {
			return nil
		}
		var rec volRec
		if err := t.getJSON(volumeKey(volume), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", volume, err)
		}
		return nil
	})
	sortSnapshots(out)
	return out, err
}

func sortSnapshots(s []SnapshotInfo) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && snapLess(s[j], s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func snapLess(a, b SnapshotInfo) bool {
	if a.Volume != b.Volume {
		return a.Volume < b.Volume
	}
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.Name < b.Name
}

// DeleteSnapshot deletes a snapshot; clones made from it are unaffected. Its space is reclaimed by
// GC. volume@name may name a kept snapshot of a removed volume (removed.go).
func (s *Store) DeleteSnapshot(ctx context.Context, volume, name string) error {
	return s.update(ctx, func(t *tx) error {
		vol, err := resolveSnapshot(t, volume, name)
		if err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", volume, name, err)
		}
		var snap snapRec
		if err := t.getJSON(snapshotKey(vol, name), &snap); err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", vol, name, err)
		}
		if err := t.delete(snapshotKey(vol, name)); err != nil {
			return err
		}
		if IsRemovedName(vol) {
			return s.forgetSnapshot(t, vol, snap)
		}
		return nil
	})
}

// RestoreSnapshot rolls the volume back to the snapshot: the volume continues in a new child of the
// snapshot's node and its previous live node is left to GC. The caller makes sure it is not mounted.
func (s *Store) RestoreSnapshot(ctx context.Context, volume, name string) error {
	var rec volRec
	err := s.update(ctx, func(t *tx) error {
		if err := t.getJSON(volumeKey(volume), &rec); err != nil || IsRemovedName(volume) {
			return fmt.Errorf("volume %q: %w", volume, cmp.Or(err, ErrNotFound))
		}
		var snap snapRec
		if err := t.getJSON(snapshotKey(volume, name), &snap); err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", volume, name, err)
		}
		head, err := t.newNode(rec.Tree, snap.Node)
		if err != nil {
			return err
		}
		if err := copyUsage(t, snap.Node, head); err != nil {
			return err
		}
		if err := s.voidVolumeIn(t, rec.ID); err != nil {
			return err
		}
		rec.Head = head
		return s.putVolume(t, &rec)
	})
	if err != nil {
		return err
	}
	return s.reclaimOrphans(ctx, volume)
}

// Usage returns one volume's allocated logical bytes and file count.
func (s *Store) Usage(ctx context.Context, volume string) (Usage, error) {
	var u Usage
	err := s.view(func(t *tx) error {
		var rec volRec
		if err := t.getJSON(volumeKey(volume), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", volume, err)
		}
		var err error
		u, err = t.getUsage(rec.Head)
		return err
	})
	return u, err
}

// settableOptions are the options SetVolumeOptions changes on an existing volume. The others
// cannot change: the chunk size is the unit of every chunk map the volume holds, uid, gid and
// mode only seeded the root directory (chown and chmod change it), from is the volume's origin.
var settableOptions = map[string]func(*VolumeOptions, string) error{
	"size": func(o *VolumeOptions, v string) error {
		if v == "none" {
			o.Size = 0
			return nil
		}
		if err := optionParsers["size"](o, v); err != nil {
			return fmt.Errorf("%v, or none for no quota", err)
		}
		return nil
	},
	// Applies to chunks written from now on: each chunk's body says its own codec.
	"compression": optionParsers["compression"],
}

// SetVolumeOptions changes settable options of a volume (size: a quota in bytes or "none";
// compression) in one transaction, and returns the volume as it is then. Open views of the
// volume see the change at once (View.options): the next quota check, statfs and chunk use it.
// A quota below the volume's usage is refused (ErrInvalid, the message giving the usage), and
// so are unknown or unsettable options; a snapshot or a removed volume's record is not a volume.
func (s *Store) SetVolumeOptions(ctx context.Context, name string, opts map[string]string) (VolumeInfo, error) {
	if vol, snap, ok := strings.Cut(name, "@"); ok {
		return VolumeInfo{}, fmt.Errorf("%w: %s@%s is a snapshot; snapshots are read-only and their options cannot be set", ErrInvalid, vol, snap)
	}
	if IsRemovedName(name) {
		return VolumeInfo{}, fmt.Errorf("volume %q (a removed volume's record): %w", name, ErrNotFound)
	}
	if err := ValidateName(name); err != nil {
		return VolumeInfo{}, err
	}
	if len(opts) == 0 {
		return VolumeInfo{}, fmt.Errorf("%w: no option given; settable options: %s", ErrInvalid, settableNames())
	}
	// Writes fsynced to the intent log count in the usage only once settled.
	if err := s.settleVolume(ctx, s.volumeID(name)); err != nil {
		return VolumeInfo{}, fmt.Errorf("volume %q: apply logged writes: %w", name, err)
	}
	var rec volRec
	err := s.update(ctx, func(t *tx) error {
		if err := t.getJSON(volumeKey(name), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
		next, err := setOptions(rec.Options, opts)
		if err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
		if next.Size > 0 && next.Size != rec.Options.Size {
			u, err := t.getUsage(rec.Head)
			if err != nil {
				return err
			}
			if u.Bytes > next.Size {
				return fmt.Errorf("volume %q: %w: it uses %d bytes (%s), more than a quota of %d bytes (%s)",
					name, ErrInvalid, u.Bytes, iec(u.Bytes), next.Size, iec(next.Size))
			}
		}
		rec.Options = next
		return s.putVolume(t, &rec)
	})
	if err != nil {
		return VolumeInfo{}, err
	}
	return rec.info(), nil
}

// setOptions returns o with opts applied, in key order so that errors are stable.
func setOptions(o VolumeOptions, opts map[string]string) (VolumeOptions, error) {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set, ok := settableOptions[k]
		switch {
		case !ok && strings.HasPrefix(k, "snapshot-"):
			return o, fmt.Errorf("%w: option %s: a volume's snapshot schedule is set with volctl snapshot schedule", ErrInvalid, k)
		case !ok && optionParsers[k] != nil:
			return o, fmt.Errorf("%w: option %s is not settable on an existing volume; settable options: %s", ErrInvalid, k, settableNames())
		case !ok:
			return o, fmt.Errorf("%w: unknown option %q; settable options: %s", ErrInvalid, k, settableNames())
		}
		if err := set(&o, strings.TrimSpace(opts[k])); err != nil {
			return o, fmt.Errorf("%w: option %s=%q: %v", ErrInvalid, k, opts[k], err)
		}
	}
	return o, nil
}

func settableNames() string {
	names := make([]string, 0, len(settableOptions))
	for k := range settableOptions {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// iec formats a byte count for a message: 1.5 MiB.
func iec(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for ; f >= 1024 && i < len(units)-1; i++ {
		f /= 1024
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}
