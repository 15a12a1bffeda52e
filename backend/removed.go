package backend

// Removed volumes whose snapshots are kept.
//
// Removing a volume (DeleteVolumeKeepSnapshots) must not take its snapshots with it: they are
// what users keep to recover from mistakes. A removed volume that had snapshots leaves a
// removed-volume record named NAME~ID8 (ID8: the first 8 hex digits of the removed volume's ID,
// longer if that name is taken), and its snapshot records move under that name
// (S NAME~ID8 0x00 SNAP). '~' is not allowed in volume names, so:
//
//   - a volume created later under the same name starts with no snapshots, and its snapshot
//     names never collide with the removed one's; two removals of the same name stay apart;
//   - NAME~ID8@SNAP names a kept snapshot for ever; NAME@SNAP names it too (for clones and
//     snapshot removal) while no volume NAME has a snapshot SNAP and only one removed NAME has.
//
// The removed-volume record is a volume record to GC and fsck: same tree, and a live node that is
// an empty leaf child of its newest kept snapshot which nothing ever writes (ListVolumes and
// GetVolume hide it; the plugin refuses '~' in the names it mounts). So the tree invariants hold,
// fsck checks kept snapshots like any other, and GC frees everything the snapshots do not hold.
// Removing a record's last snapshot removes the record; removing its newest one moves the live
// node to the new newest, so the removed snapshot's space comes back.
//
// Cloning a kept snapshot into a volume of the removed volume's own name (volume create NAME -o
// from=NAME@SNAP) undoes the removal: the new volume adopts every kept snapshot of that record.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// removedSep separates a removed volume's name from its ID in the name of its record.
const removedSep = "~"

// removedRec is the record of a removed volume: a volume record (GC and fsck read it as one)
// with the removed volume's name and ID and the time of removal.
type removedRec struct {
	volRec
	Volume    string    `json:"removed_volume"`
	VolumeID  string    `json:"removed_volume_id"`
	RemovedAt time.Time `json:"removed_at"`
}

// IsRemovedName reports whether name is that of a removed volume's record (NAME~ID8).
func IsRemovedName(name string) bool {
	base, id, ok := strings.Cut(name, removedSep)
	if !ok || ValidateName(base) != nil || len(id) < 8 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isAlnum(id[i]) && id[i] != '-' {
			return false
		}
	}
	return true
}

// ValidateVolumeRef accepts a volume name or the name of a removed volume's record.
func ValidateVolumeRef(name string) error {
	if IsRemovedName(name) {
		return nil
	}
	return ValidateName(name)
}

// DeleteVolumeKeepSnapshots removes a volume but keeps its snapshots under a removed-volume
// record (see the top of this file). It returns the record's name, "" when the volume had no
// snapshots (it is then deleted as by DeleteVolume). The caller makes sure it is not mounted.
func (s *Store) DeleteVolumeKeepSnapshots(ctx context.Context, name string) (string, error) {
	var kept string
	err := s.update(ctx, func(t *tx) error {
		var rec volRec
		if err := t.getJSON(volumeKey(name), &rec); err != nil {
			return fmt.Errorf("volume %q: %w", name, err)
		}
		if IsRemovedName(name) {
			return fmt.Errorf("volume %q: removed already: %w", name, ErrNotFound)
		}
		snaps, err := snapshotsIn(t, name)
		if err != nil || len(snaps) == 0 {
			if err == nil {
				err = s.deleteVolumeIn(t, name)
			}
			return err
		}
		r := removedRec{volRec: rec, Volume: name, VolumeID: rec.ID, RemovedAt: time.Now().UTC()}
		if r.Name, err = freeRemovedName(t, name, rec.ID); err != nil {
			return err
		}
		// A new ID: the removed volume's logged writes are dropped, not applied to the record.
		r.ID = uuid.NewString()
		if err := moveSnapshots(t, name, r.Name, snaps); err != nil {
			return err
		}
		if err := s.deleteVolumeIn(t, name); err != nil {
			return err
		}
		kept = r.Name
		return s.putRemoved(t, &r, newest(snaps))
	})
	return kept, err
}

// freeRemovedName picks the record name for a removed volume: NAME~ and the shortest prefix of
// at least 8 characters of its ID that no record has.
func freeRemovedName(t *tx, name, id string) (string, error) {
	id = strings.ReplaceAll(id, "-", "")
	for n := 8; n <= len(id); n++ {
		cand := name + removedSep + id[:n]
		var r volRec
		if err := t.getJSON(volumeKey(cand), &r); err == ErrNotFound {
			return cand, nil
		} else if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("volume %q: no free name for its kept snapshots: %w", name, ErrExists)
}

// putRemoved writes a removed volume's record with a fresh live node under its newest snapshot.
// The previous live node, if any, is left to GC.
func (s *Store) putRemoved(t *tx, r *removedRec, newest snapRec) error {
	head, err := t.newNode(r.Tree, newest.Node)
	if err != nil {
		return err
	}
	if err := copyUsage(t, newest.Node, head); err != nil {
		return err
	}
	r.Head = head
	if err := t.setJSON(volumeKey(r.Name), r); err != nil {
		return err
	}
	cp := r.volRec
	t.onCommit(func() { s.vols[cp.Name] = &cp })
	return nil
}

// deleteVolumeIn deletes a volume's record and its schedule; its snapshot records must be gone
// or moved.
func (s *Store) deleteVolumeIn(t *tx, name string) error {
	if err := t.delete(volumeKey(name)); err != nil {
		return err
	}
	if err := t.delete(scheduleKey(name)); err != nil {
		return err
	}
	t.onCommit(func() { delete(s.vols, name) })
	return nil
}

// namedSnap is a snapshot record with its name.
type namedSnap struct {
	name string
	snapRec
}

// snapshotsIn returns the snapshot records of a volume (or removed-volume record), by name.
func snapshotsIn(t *tx, volume string) ([]namedSnap, error) {
	var out []namedSnap
	prefix := snapshotPrefix(volume)
	err := scanPrefix(t.txn, prefix, true, func(k, v []byte) error {
		var r snapRec
		if err := jsonDecode(v, &r); err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", volume, k[len(prefix):], err)
		}
		out = append(out, namedSnap{string(k[len(prefix):]), r})
		return nil
	})
	return out, err
}

// newest returns the most recent of snaps (not empty); ties go to the larger name.
func newest(snaps []namedSnap) snapRec {
	best := snaps[0]
	for _, sn := range snaps[1:] {
		if sn.CreatedAt.After(best.CreatedAt) || sn.CreatedAt.Equal(best.CreatedAt) && sn.name > best.name {
			best = sn
		}
	}
	return best.snapRec
}

// moveSnapshots re-keys snapshot records from one volume name to another.
func moveSnapshots(t *tx, from, to string, snaps []namedSnap) error {
	for _, sn := range snaps {
		if err := t.delete(snapshotKey(from, sn.name)); err != nil {
			return err
		}
		if err := t.setJSON(snapshotKey(to, sn.name), sn.snapRec); err != nil {
			return err
		}
	}
	return nil
}

// resolveSnapshot returns the name of the volume or removed-volume record holding the snapshot
// volume@snap: volume itself when it has the snapshot, else the one removed volume of that name
// that has it (ErrInvalid when several have).
func resolveSnapshot(t *tx, volume, snap string) (string, error) {
	var r snapRec
	err := t.getJSON(snapshotKey(volume, snap), &r)
	if err != ErrNotFound || IsRemovedName(volume) {
		return volume, err
	}
	var found []string
	prefix := append([]byte{pSnapshot}, volume+removedSep...)
	if err := scanPrefix(t.txn, prefix, false, func(k, _ []byte) error {
		vol, name, _ := strings.Cut(string(k[1:]), "\x00")
		if name == snap && IsRemovedName(vol) {
			found = append(found, vol)
		}
		return nil
	}); err != nil {
		return "", err
	}
	switch len(found) {
	case 0:
		return volume, ErrNotFound
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%w: %s@%s names a snapshot of %d removed volumes: use one of %s",
		ErrInvalid, volume, snap, len(found), strings.Join(found, ", "))
}

// forgetSnapshot updates a removed-volume record after one of its snapshots was deleted in t:
// the record goes with its last snapshot, and moves its live node to the newest one left.
func (s *Store) forgetSnapshot(t *tx, name string, deleted snapRec) error {
	var r removedRec
	if err := t.getJSON(volumeKey(name), &r); err != nil {
		return fmt.Errorf("removed volume %q: %w", name, err)
	}
	left, err := snapshotsIn(t, name)
	if err != nil {
		return err
	}
	if len(left) == 0 {
		return s.deleteVolumeIn(t, name)
	}
	if n := newest(left); n.CreatedAt.After(deleted.CreatedAt) {
		return nil
	}
	return s.putRemoved(t, &r, newest(left))
}

// adoptRemoved gives the new volume rec, cloned from a snapshot of the removed-volume record
// named from, every snapshot of that record when rec has the removed volume's name: the
// removal is undone. Other clones leave the record alone.
func (s *Store) adoptRemoved(t *tx, rec *volRec, from string) error {
	var r removedRec
	if err := t.getJSON(volumeKey(from), &r); err != nil {
		return fmt.Errorf("removed volume %q: %w", from, err)
	}
	if r.Volume != rec.Name {
		return nil
	}
	snaps, err := snapshotsIn(t, from)
	if err != nil {
		return err
	}
	if err := moveSnapshots(t, from, rec.Name, snaps); err != nil {
		return err
	}
	_, snap, _ := strings.Cut(rec.Options.From, "@")
	rec.Options.From = rec.Name + "@" + snap
	return s.deleteVolumeIn(t, from)
}

// removedAt returns when the volume behind a removed-volume record was removed.
func removedAt(t *tx, name string) (time.Time, error) {
	var r removedRec
	err := t.getJSON(volumeKey(name), &r)
	return r.RemovedAt, err
}
