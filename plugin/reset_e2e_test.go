package plugin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// TestDockerPluginStateReset plays, on a real dockerd, what docker plugin upgrade does to a
// managed plugin with a custom state.source: the source goes back to the config's default while
// the plugin (its ID, its propagated mount) stays. The plugin must refuse to start on the new
// empty store there, saying so in dockerd's log and creating nothing; with
// FUSEVOL_ALLOW_NEW_STORE=true it starts on an empty store; with state.source set back it serves
// the old volumes again.
func TestDockerPluginStateReset(t *testing.T) {
	e := newE2E(t)
	name := "fusevol-reset:test"
	dir := pluginDir(t, e, "reset-plugin")
	custom, empty := stateDir(t, e, "state-custom"), stateDir(t, e, "state-empty")
	e.mustDocker("plugin", "create", name, dir)
	e.mustDocker("plugin", "set", name, "state.source="+custom)
	e.mustDocker("plugin", "enable", name)
	e.mustDocker("volume", "create", "-d", name, "kept")
	id := e.mustDocker("plugin", "inspect", "-f", "{{.Id}}", name)
	volumes := func() string { t.Helper(); return managedVolumes(t, e, id) }
	if got := volumes(); got != "kept" {
		t.Fatalf("volumes before the reset: %q", got)
	}
	e.mustDocker("plugin", "disable", "-f", name) // -f: Docker holds the volume's reference

	// The reset. The config's own default is what an upgrade really falls back to; it is used
	// when this host has no store there (the refused start creates nothing), else an empty dir.
	reset, resetStore := "/var/lib", filepath.Join(DefaultRoot, "store")
	if _, err := os.Stat(DefaultRoot); err == nil {
		t.Logf("%s exists on this host: resetting state.source to an empty directory instead", DefaultRoot)
		reset, resetStore = empty, filepath.Join(empty, "fusevol", "store")
	}
	e.mustDocker("plugin", "set", name, "state.source="+reset)
	start := time.Now()
	if out, err := e.docker("plugin", "enable", name); err == nil {
		t.Errorf("plugin enabled on a new, empty store after the reset:\n%s", out)
	} else {
		t.Logf("docker plugin enable after the reset failed after %v: %s", time.Since(start).Round(time.Millisecond), out)
	}
	if !e.logContains("dockerd.log", "refusing to start on a new, empty store") || !e.logContains("dockerd.log", "state.source") {
		t.Errorf("dockerd's log does not hold the plugin's refusal naming state.source:\n%s", e.logTail("dockerd.log"))
	}
	if _, err := os.Stat(resetStore); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused plugin created %s: %v", resetStore, err)
	}
	e.docker("plugin", "disable", "-f", name)

	e.mustDocker("plugin", "set", name, "state.source="+empty, "FUSEVOL_ALLOW_NEW_STORE=true")
	// dockerd removes the refused plugin's container a moment after its enable failed: until
	// then an enable finds it "already in use", or (CI, once) fails on the container it is
	// removing: 'container "ID" in namespace "...-plugins": not found'.
	waitFor(t, func() bool {
		out, err := e.docker("plugin", "enable", name)
		if err != nil && strings.Contains(out, "already enabled") {
			return true // dockerd restarted the plugin, with the new settings, by itself
		}
		if err != nil && !strings.Contains(out, "already in use") && !strings.Contains(out, "not found") {
			t.Fatalf("docker plugin enable with FUSEVOL_ALLOW_NEW_STORE=true: %v\n%s", err, out)
		}
		return err == nil
	})
	if got := volumes(); got != "" {
		t.Errorf("volumes on the new store: %q, want none", got)
	}
	e.mustDocker("plugin", "disable", "-f", name) // -f: Docker holds the volume's reference

	e.mustDocker("plugin", "set", name, "state.source="+custom, "FUSEVOL_ALLOW_NEW_STORE=false")
	e.mustDocker("plugin", "enable", name)
	if got := volumes(); got != "kept" {
		t.Errorf("volumes with state.source set back: %q, want kept", got)
	}
	e.mustDocker("volume", "rm", "kept")
	e.mustDocker("plugin", "disable", "-f", name) // -f: Docker holds the volume's reference
	e.mustDocker("plugin", "rm", name)
}

// pluginDir lays out a managed plugin as make plugin does (plugin/config.json and a rootfs with
// the volctl binary) in the work directory's subdirectory name.
func pluginDir(t *testing.T, e *e2eEnv, name string) string {
	t.Helper()
	dir := filepath.Join(e.work, name)
	for _, d := range []string{"run/docker/plugins", "mnt/volumes", "mnt/state", "tmp", "dev", "proc", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, "rootfs", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fusetest.BuildVolctl(t, filepath.Join(dir, "rootfs"))
	cfg, err := os.ReadFile("config.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// stateDir makes a directory for a plugin's state.source in the work directory.
func stateDir(t *testing.T, e *e2eEnv, name string) string {
	t.Helper()
	dir := filepath.Join(e.work, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// managedVolumes lists the volumes of the managed plugin with ID id through volctl.
func managedVolumes(t *testing.T, e *e2eEnv, id string) string {
	t.Helper()
	out, err := fusetest.Volctl{Bin: e.bin, Socket: e.managedSocket(t, id)}.Run("volume", "ls", "-q")
	if err != nil {
		t.Fatalf("volctl volume ls through the plugin: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}
