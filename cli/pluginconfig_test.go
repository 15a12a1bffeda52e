package cli

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"
)

// TestPluginConfigEnvMatchesDaemonFlags keeps the managed plugin's settings (plugin/config.json,
// `docker plugin set fusevol NAME=VALUE`) in step with volctl daemon's flags: every FUSEVOL_*
// variable it lists must be a daemon flag's variable with the flag's default as its value, and
// every tuning flag must be settable there.
func TestPluginConfigEnvMatchesDaemonFlags(t *testing.T) {
	raw, err := os.ReadFile("../plugin/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Env []struct {
			Name     string   `json:"name"`
			Value    string   `json:"value"`
			Settable []string `json:"settable"`
		} `json:"env"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	for _, f := range daemonCommand().Flags {
		switch f := f.(type) {
		case *ucli.StringFlag:
			for _, e := range f.EnvVars {
				defaults[e] = f.Value
			}
		case *ucli.BoolFlag:
			for _, e := range f.EnvVars {
				defaults[e] = map[bool]string{true: "true", false: "false"}[f.Value]
			}
		}
	}
	listed := map[string]bool{}
	for _, e := range cfg.Env {
		listed[e.Name] = true
		want, ok := defaults[e.Name]
		switch {
		case !strings.HasPrefix(e.Name, "FUSEVOL_"):
			t.Errorf("%s: not a fusevol setting", e.Name)
		case !ok:
			t.Errorf("%s: no volctl daemon flag reads it", e.Name)
		case e.Value != want:
			t.Errorf("%s = %q in config.json, but the flag's default is %q", e.Name, e.Value, want)
		case !slices.Contains(e.Settable, "value"):
			t.Errorf("%s: not settable with docker plugin set", e.Name)
		}
	}
	// Root, socket and mount root are the plugin's fixed layout (its entrypoint), and the socket
	// group means nothing inside it; every other flag tunes the daemon and must be settable.
	fixed := []string{"FUSEVOL_ROOT", "FUSEVOL_SOCKET", "FUSEVOL_MOUNT_ROOT", "FUSEVOL_GROUP"}
	for e := range defaults {
		if !listed[e] && !slices.Contains(fixed, e) {
			t.Errorf("%s: a daemon setting the managed plugin cannot set (add it to plugin/config.json)", e)
		}
	}
}
