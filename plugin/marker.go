package plugin

// The "served before" marker: a daemon that has served a store refuses, from then on, to start
// on a new, empty one unless told to (Config.AllowNewStore).
//
// The failure it guards against: `docker plugin upgrade` replaces the managed plugin's config,
// mount sources included, so a custom state.source falls back to the default and the upgraded
// plugin opens a new empty store in the wrong place. Every volume seems gone, and Docker and
// users start writing into the new store. So the marker must live somewhere that survives
// exactly that reset and that is not chosen by the setting which was reset:
//
//   - not in the store's root (state.source, --root): that is what changed;
//   - not next to the socket: /run is a tmpfs, emptied at every boot, so after a reboot the
//     marker would be gone and a reset setting would go unnoticed;
//   - in the mount root. For the managed plugin that is its propagated mount, which Docker
//     keeps per plugin ID in <data-root>/plugins/<id>/propagated-mount: an upgrade keeps the ID
//     and swaps only rootfs, so the marker survives it, whatever Docker's data root, and
//     `docker plugin rm` (a new ID) starts over. For volctl daemon it is --mount-root, beside the
//     store by default (<root>/mounts), where the check is harmless; a --mount-root of its own
//     makes it guard --root too.
//
// The marker's name starts with '.', which no volume name does, so it never meets a volume's
// mount directory.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// markerName is the marker's file name in the mount root.
const markerName = ".fusevol-served"

// marker is what the marker file holds: which store was served last, since when, by what version.
type marker struct {
	Store   string    `json:"store"`
	Since   time.Time `json:"since"`
	Version string    `json:"version"`
}

// errNewStore is the start-up refusal of a new store when the marker exists.
var errNewStore = errors.New("refusing to start on a new, empty store")

// checkMarker refuses to start when the store in storeDir is new (no MANIFEST: Badger has never
// created it) and the marker in mountRoot says a store was served before. It runs before
// anything is created, so a refused start leaves no empty store behind to pass the next check.
func checkMarker(mountRoot, storeDir string, allowNew bool) error {
	m, err := readMarker(mountRoot)
	if err != nil || m == nil || allowNew {
		return err
	}
	if _, err := os.Stat(filepath.Join(storeDir, "MANIFEST")); !errors.Is(err, os.ErrNotExist) {
		return nil // an existing store (or one Stat cannot tell about: Open will say)
	}
	served := m.Store
	if served == storeDir {
		// The managed plugin sees its store at one path whatever the mount source behind it.
		served = "this path (then backed by another directory)"
	}
	return fmt.Errorf("%w in %s: %s says this installation has served volumes from %s since %s; "+
		"the store's location was probably reset (docker plugin upgrade resets the managed plugin's "+
		"state.source; volctl daemon takes --root or FUSEVOL_ROOT): set it back, or start once with "+
		"--allow-new-store (FUSEVOL_ALLOW_NEW_STORE=true) to begin with an empty store",
		errNewStore, storeDir, filepath.Join(mountRoot, markerName), served, m.Since.Format(time.RFC3339))
}

// readMarker returns the marker in mountRoot, nil when there is none.
func readMarker(mountRoot string) (*marker, error) {
	b, err := os.ReadFile(filepath.Join(mountRoot, markerName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read store marker: %w", err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		// A damaged marker still says a store was served: refuse a new one rather than guess.
		return &marker{Store: "an unknown store (marker unreadable: " + err.Error() + ")"}, nil
	}
	return &m, nil
}

// writeMarker records that storeDir is served, keeping the first start's time while the store
// stays the same. It writes a temporary file and renames it, so a crash leaves the old marker
// or the new one, never half of one.
func writeMarker(mountRoot, storeDir, version string) error {
	m := marker{Store: storeDir, Since: time.Now().UTC(), Version: version}
	if old, err := readMarker(mountRoot); err == nil && old != nil && old.Store == storeDir && !old.Since.IsZero() {
		m.Since = old.Since
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	path := filepath.Join(mountRoot, markerName)
	tmp := path + ".tmp"
	if err := writeSynced(tmp, append(b, '\n')); err != nil {
		return fmt.Errorf("write store marker: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write store marker: %w", err)
	}
	return nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
