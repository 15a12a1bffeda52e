package reliability

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin"
)

// fuzzEndpoints are the Docker protocol endpoints and control API routes that take a body.
// Mount (both protocols) is left out: a fuzz worker is killed when fuzzing ends, and the FUSE
// mounts it made would outlive it. Mount decodes its body with the same code as the others.
var fuzzEndpoints = []string{
	"Plugin.Activate", "VolumeDriver.Capabilities", "VolumeDriver.Create", "VolumeDriver.Remove",
	"VolumeDriver.Get", "VolumeDriver.List", "VolumeDriver.Path", "VolumeDriver.Unmount",
	"fusevol/v1/volumes", "fusevol/v1/volumes/fz/snapshots", "fusevol/v1/unmount",
	"fusevol/v1/volumes/fz/schedule",
}

// FuzzRequestBodies sends arbitrary bodies to every endpoint of a daemon running in this process
// over its real socket. Every answer must be a well-formed JSON error or success, no handler
// may panic, a volume Create accepts must be valid and found by Get, and nothing may appear
// outside the daemon's root.
func FuzzRequestBodies(f *testing.F) {
	for i := range fuzzEndpoints {
		for _, body := range []string{
			"", "{}", "null", "[]", `"x"`, "{", `{"Name":"fz"}`, `{"Name":"fz","Opts":null}`,
			`{"Name":"fz","Opts":{"size":"1GiB","mode":"0700"}}`, `{"Name":"../x"}`, `{"Name":"a\u0000b"}`,
			`{"Name":"fz","ID":"abc"}`, `{"Name":1}`, `{"name":"fz","options":{"from":"fz@s"}}`,
			`{"Name":"fz","Opts":{"from":"../../etc@x"}}`, `{"dir":"/"}`, `{"dir":"../.."}`,
			`{"Name":"fz","Opts":{"snapshot-every":"1m","snapshot-keep":"1"}}`, `{"every":"1h","keep":2}`,
			`{"every":"1s","keep":1}`, `{"every":"1h","keep":-1,"keep_daily":1e9}`,
		} {
			f.Add(uint8(i), []byte(body))
		}
	}
	base, err := os.MkdirTemp("", "fvfuzz-")
	if err != nil {
		f.Fatal(err)
	}
	root := filepath.Join(base, "root")
	d, err := plugin.NewDaemon(plugin.Config{Root: root, Socket: filepath.Join(root, "s.sock")})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(base) })
	fusetest.StartDaemon(f, d.Socket(), 15*time.Second, d.Run)
	c := fusetest.UnixHTTP(d.Socket())
	// The socket answers before the store is open, and open writes the served-before marker
	// (via a temporary file) into the mount root: wait for it, so that the entries checked
	// below are the fuzzed request's doing. List waits for the store.
	if r, err := postDocker(c, "VolumeDriver.List", []byte("{}")); err != nil || r.Status != http.StatusOK {
		f.Fatalf("List before fuzzing: %+v, %v", r, err)
	}

	f.Fuzz(func(t *testing.T, ep uint8, body []byte) {
		endpoint := fuzzEndpoints[int(ep)%len(fuzzEndpoints)]
		if strings.HasPrefix(endpoint, "fusevol/") {
			checkControl(t, c, endpoint, body)
		} else {
			checkDocker(t, c, endpoint, body)
		}
		wantEntries(t, base, "root")
		wantEntries(t, filepath.Join(root, "mounts"))
	})
}

func checkDocker(t *testing.T, c *http.Client, endpoint string, body []byte) {
	r, err := postDocker(c, endpoint, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status >= 500 && strings.Contains(r.Err, "internal error in") {
		t.Fatalf("%s %q: handler panicked: %s", endpoint, body, r.Err)
	}
	if endpoint != "VolumeDriver.Create" || r.Status != http.StatusOK {
		return
	}
	var req struct{ Name string }
	if err := json.Unmarshal(body, &req); err != nil && len(bytes.TrimSpace(body)) > 0 {
		t.Fatalf("Create accepted a body that is not a request (%v): %q", err, body)
	}
	if err := backend.ValidateName(req.Name); err != nil {
		t.Fatalf("Create accepted the invalid name %q: %v", req.Name, err)
	}
	g, err := postDocker(c, "VolumeDriver.Get", mustJSON(map[string]string{"Name": req.Name}))
	if err != nil || g.Status != http.StatusOK || g.Volume == nil || g.Volume.Name != req.Name {
		t.Fatalf("Get %q after Create succeeded: %+v %v", req.Name, g, err)
	}
}

func checkControl(t *testing.T, c *http.Client, endpoint string, body []byte) {
	req, err := http.NewRequest(http.MethodPost, "http://fusevol/"+endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Code    string `json:"code"`
		Message string `json:"error"`
	}
	dec := json.NewDecoder(resp.Body)
	if resp.StatusCode >= 300 {
		if err := dec.Decode(&e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s %q: status %d with a malformed error body (%v)", endpoint, body, resp.StatusCode, err)
		}
		if e.Code == "internal" && strings.Contains(e.Message, "internal error in") {
			t.Fatalf("%s %q: handler panicked: %s", endpoint, body, e.Message)
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
