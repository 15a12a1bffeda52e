package plugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pluginConfig is the part of Docker's managed-plugin config (plugin/config.json) checked here.
type pluginConfig struct {
	Entrypoint      []string      `json:"entrypoint"`
	PropagatedMount string        `json:"propagatedMount"`
	Env             []pluginEnv   `json:"env"`
	Mounts          []pluginMount `json:"mounts"`
}

type pluginEnv struct {
	Name     string   `json:"name"`
	Settable []string `json:"settable"`
	Value    string   `json:"value"`
}

type pluginMount struct {
	Name        string   `json:"name"`
	Source      string   `json:"source"`
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Options     []string `json:"options"`
	Settable    []string `json:"settable"`
}

// TestPluginConfigDefaults checks the managed plugin's defaults against what Docker does with
// them (plugin/README.md, "Where the managed plugin keeps its store"):
//   - the state mount's default source must exist on any host whatever Docker's data root
//     (runc refuses a bind mount of a missing source, and Docker creates none): not under
//     /var/lib/docker, which the old default was and which is absent with another data root;
//   - it is bound without rbind, so that Docker's own mounts under it (container layers, every
//     plugin's propagated mount, this one's included) are not copied into the plugin;
//   - the store lands in DefaultRoot on the host, where volctl daemon keeps it too;
//   - --mount-root is the propagated mount, which docker plugin upgrade keeps: the served-before
//     marker lives there (marker.go);
//   - the override of the marker is an environment setting that starts off.
func TestPluginConfigDefaults(t *testing.T) {
	b, err := os.ReadFile("config.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg pluginConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	flags := map[string]string{}
	for i := 0; i+1 < len(cfg.Entrypoint); i++ {
		if strings.HasPrefix(cfg.Entrypoint[i], "--") {
			flags[cfg.Entrypoint[i]] = cfg.Entrypoint[i+1]
		}
	}
	if flags["--mount-root"] == "" || flags["--mount-root"] != cfg.PropagatedMount {
		t.Errorf("--mount-root %q is not the propagated mount %q", flags["--mount-root"], cfg.PropagatedMount)
	}

	i := slices.IndexFunc(cfg.Mounts, func(m pluginMount) bool { return m.Name == "state" })
	if i < 0 {
		t.Fatal("config.json has no state mount")
	}
	state := cfg.Mounts[i]
	src := filepath.Clean(state.Source)
	switch {
	case !filepath.IsAbs(src):
		t.Errorf("state.source %q is not absolute", state.Source)
	case src == "/var/lib/docker" || strings.HasPrefix(src, "/var/lib/docker/"):
		t.Errorf("state.source %q is under Docker's default data root: missing wherever data-root is elsewhere", state.Source)
	case !slices.Contains(state.Settable, "source"):
		t.Errorf("state.source is not settable: %v", state.Settable)
	case state.Type != "bind" || !slices.Contains(state.Options, "bind") || slices.Contains(state.Options, "rbind"):
		t.Errorf("state mount type %q options %v: want a plain bind, not rbind", state.Type, state.Options)
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		t.Errorf("state.source %q is not a directory on this host: %v", src, err)
	}
	rel, err := filepath.Rel(state.Destination, flags["--root"])
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("--root %q is not inside the state mount %q", flags["--root"], state.Destination)
	}
	if host := filepath.Join(src, rel); host != DefaultRoot {
		t.Errorf("the store's root on the host is %s, want %s (volctl daemon's default)", host, DefaultRoot)
	}

	j := slices.IndexFunc(cfg.Env, func(e pluginEnv) bool { return e.Name == "FUSEVOL_ALLOW_NEW_STORE" })
	if j < 0 || cfg.Env[j].Value != "false" || !slices.Contains(cfg.Env[j].Settable, "value") {
		t.Errorf("FUSEVOL_ALLOW_NEW_STORE: want a settable env defaulting to false, got %+v", cfg.Env)
	}
}
