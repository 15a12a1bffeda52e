package plugin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// FuzzDockerRequest sends arbitrary bodies to every Docker endpoint that does not mount: each
// answer is JSON with a status dockerd understands, and no input makes a handler panic.
func FuzzDockerRequest(f *testing.F) {
	endpoints := []string{"/VolumeDriver.Create", "/VolumeDriver.Get", "/VolumeDriver.Remove",
		"/VolumeDriver.List", "/VolumeDriver.Path", "/VolumeDriver.Capabilities", "/Plugin.Activate",
		"/VolumeDriver.Unmount"}
	for i := range endpoints {
		f.Add(uint8(i), `{"Name":"v1","Opts":{"size":"1GiB"}}`)
		f.Add(uint8(i), `{"Name":"../x","Opts":null}`)
		f.Add(uint8(i), `{"Name":"v1","ID":"a"}`)
		f.Add(uint8(i), `{`)
		f.Add(uint8(i), ``)
	}
	root := f.TempDir()
	d, err := NewDaemon(Config{Root: root, Socket: root + "/s.sock"})
	if err != nil {
		f.Fatal(err)
	}
	fusetest.StartDaemon(f, d.Socket(), 10*time.Second, d.Run)
	h := d.handler()
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		ep := endpoints[int(which)%len(endpoints)]
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		// As dockerd, which is root: other callers get 403 (TestDockerEndpointsRootOnly).
		rctx = context.WithValue(rctx, peerKey{}, peer{known: true})
		req := httptest.NewRequestWithContext(rctx, http.MethodPost, ep, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %q: answer is not a JSON object: %q", ep, body, rec.Body)
		}
		switch rec.Code {
		case http.StatusOK:
			if e, _ := out["Err"].(string); e != "" {
				t.Fatalf("%s %q: 200 with Err %q", ep, body, e)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusInternalServerError:
			e, _ := out["Err"].(string)
			if e == "" || strings.HasPrefix(e, "internal error") {
				t.Fatalf("%s %q: status %d with Err %q", ep, body, rec.Code, e)
			}
		default:
			t.Fatalf("%s %q: status %d", ep, body, rec.Code)
		}
	})
}
