package plugin

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// TestServedMarker plays docker plugin upgrade resetting state.source: the mount root (the
// plugin's propagated mount, kept across upgrades) stays, the root moves to a new empty
// directory. The daemon refuses that store, saying which setting to check and how to override,
// and creates nothing there; the old root still starts; the override starts on the new one.
func TestServedMarker(t *testing.T) {
	fusetest.RequireRoot(t, "the Docker protocol serves root only")
	mnt := t.TempDir()
	oldRoot, newRoot := t.TempDir(), filepath.Join(t.TempDir(), "reset")
	at := func(allowNew bool) func(*Config) {
		return func(c *Config) { c.MountRoot, c.AllowNewStore = mnt, allowNew }
	}

	td := startDaemon(t, oldRoot, at(false)) // first start: no marker, a new store is fine
	td.ok(t, "VolumeDriver.Create", `{"Name":"kept"}`)
	td.stop(t)
	if m, err := readMarker(mnt); err != nil || m == nil || m.Store != filepath.Join(oldRoot, "store") {
		t.Fatalf("marker after the first start: %+v, %v", m, err)
	}

	logs, err := runRefused(t, Config{Root: newRoot, MountRoot: mnt})
	if !errors.Is(err, errNewStore) {
		t.Fatalf("Run on a new store with the marker: %v, want %v", err, errNewStore)
	}
	for _, want := range []string{filepath.Join(mnt, markerName), filepath.Join(oldRoot, "store"),
		"state.source", "--root", "--allow-new-store", "FUSEVOL_ALLOW_NEW_STORE"} {
		if !strings.Contains(err.Error(), want) || !strings.Contains(logs, want) {
			t.Errorf("refusal does not name %q\nerror: %v\nlog: %s", want, err, logs)
		}
	}
	if _, err := os.Stat(filepath.Join(newRoot, "store")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused daemon created a store: %v", err)
	}

	td = startDaemon(t, oldRoot, at(false)) // the setting set back: the old store serves again
	td.ok(t, "VolumeDriver.Get", `{"Name":"kept"}`)
	td.stop(t)

	td = startDaemon(t, newRoot, at(true))
	td.fails(t, "VolumeDriver.Get", `{"Name":"kept"}`, "not found")
	td.stop(t)
	if m, _ := readMarker(mnt); m == nil || m.Store != filepath.Join(newRoot, "store") {
		t.Errorf("marker after the override: %+v, want the new store", m)
	}
	startDaemon(t, newRoot, at(false)).stop(t) // that store exists now: no override needed
}

// TestServedMarkerDamaged: a marker that does not parse still means a store was served.
func TestServedMarkerDamaged(t *testing.T) {
	mnt := t.TempDir()
	if err := os.WriteFile(filepath.Join(mnt, markerName), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		allowNew bool
		want     error
	}{{false, errNewStore}, {true, nil}} {
		if err := checkMarker(mnt, filepath.Join(t.TempDir(), "store"), tt.allowNew); !errors.Is(err, tt.want) {
			t.Errorf("allowNew=%v: %v, want %v", tt.allowNew, err, tt.want)
		}
	}
}

// runRefused runs a daemon that must stop by itself at start-up and returns its error and log.
func runRefused(t *testing.T, cfg Config) (string, error) {
	t.Helper()
	var logs fusetest.SyncBuffer
	cfg.Socket = filepath.Join(t.TempDir(), "s.sock")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	d, err := NewDaemon(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = d.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("the daemon did not stop by itself: %v", err)
	}
	return logs.String(), err
}
