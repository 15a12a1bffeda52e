package plugin

import (
	"context"
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"strings"
	"sync"
	"testing"
	"time"
)

func TestDockerHandshake(t *testing.T) {
	td := startDaemon(t, "")
	out := td.ok(t, "Plugin.Activate", "")
	if fmt.Sprint(out["Implements"]) != "[VolumeDriver]" {
		t.Errorf("Activate = %v, want Implements [VolumeDriver]", out)
	}
	out = td.ok(t, "VolumeDriver.Capabilities", "{}")
	if fmt.Sprint(out["Capabilities"]) != "map[Scope:local]" {
		t.Errorf("Capabilities = %v, want scope local", out)
	}
}

func TestDockerLifecycle(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "")
	td.fails(t, "VolumeDriver.Get", `{"Name":"v1"}`, "not found")
	td.ok(t, "VolumeDriver.Create", `{"Name":"v1","Opts":null}`)
	td.ok(t, "VolumeDriver.Create", `{"Name":"v1","Opts":{"size":"1GiB"}}`) // idempotent

	got := td.ok(t, "VolumeDriver.Get", `{"Name":"v1"}`)
	vol, _ := got["Volume"].(map[string]any)
	if vol["Name"] != "v1" {
		t.Fatalf("Get = %v", got)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(vol["CreatedAt"])); err != nil {
		t.Errorf("CreatedAt %v is not RFC 3339: %v", vol["CreatedAt"], err)
	}
	want := filepath.Join(td.root, "mounts", "v1")
	if vol["Mountpoint"] != want {
		t.Errorf("Get Mountpoint = %v, want %s", vol["Mountpoint"], want)
	}
	if p := td.ok(t, "VolumeDriver.Path", `{"Name":"v1"}`)["Mountpoint"]; p != want {
		t.Errorf("Path = %v, want %s", p, want)
	}

	// Two mounts with the same ID (docker cp on a running container) count twice.
	for i := 0; i < 2; i++ {
		mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"v1","ID":"a"}`)["Mountpoint"]
		if mp != want {
			t.Fatalf("Mount = %v, want %s", mp, want)
		}
	}
	if !isMountPoint(t, want) {
		t.Fatalf("%s is not mounted after Mount", want)
	}
	if err := os.WriteFile(filepath.Join(want, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatalf("write through the mount: %v", err)
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v1","ID":"a"}`)
	if !isMountPoint(t, want) {
		t.Fatal("unmounted while one reference was left")
	}
	if b, err := os.ReadFile(filepath.Join(want, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("read after first unmount: %q, %v", b, err)
	}
	td.fails(t, "VolumeDriver.Remove", `{"Name":"v1"}`, "in use")
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v1","ID":"a"}`)
	if isMountPoint(t, want) {
		t.Fatal("still mounted after the last Unmount")
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v1","ID":"a"}`)   // below zero: no-op
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v1","ID":"zzz"}`) // unknown ID: no-op

	// Data survives unmount and remount.
	td.ok(t, "VolumeDriver.Mount", `{"Name":"v1","ID":"b"}`)
	if b, err := os.ReadFile(filepath.Join(want, "f")); err != nil || string(b) != "hello" {
		t.Fatalf("read after remount: %q, %v", b, err)
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v1","ID":"b"}`)

	list := td.ok(t, "VolumeDriver.List", `{}`)
	if vols, _ := list["Volumes"].([]any); len(vols) != 1 {
		t.Fatalf("List = %v, want v1 only", list)
	}
	td.ok(t, "VolumeDriver.Remove", `{"Name":"v1"}`)
	td.fails(t, "VolumeDriver.Get", `{"Name":"v1"}`, "not found")
	td.fails(t, "VolumeDriver.Mount", `{"Name":"v1","ID":"c"}`, "not found")
	td.ok(t, "VolumeDriver.Remove", `{"Name":"v1"}`) // already gone: dockerd only wants it gone

	// Re-creating the name gives an empty volume.
	td.ok(t, "VolumeDriver.Create", `{"Name":"v1"}`)
	td.ok(t, "VolumeDriver.Mount", `{"Name":"v1","ID":"d"}`)
	ents, err := os.ReadDir(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ".snapshots" {
			t.Errorf("re-created volume holds %s", e.Name())
		}
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"v1","ID":"d"}`)
}

func TestDockerBadInput(t *testing.T) {
	td := startDaemon(t, "")
	big := `{"Name":"` + strings.Repeat("x", 2<<20) + `"}`
	tests := []struct {
		endpoint, body string
		status         int
		want           string
	}{
		{"VolumeDriver.Create", `{"Name":`, 400, "malformed"},
		{"VolumeDriver.Create", `[1,2]`, 400, "malformed"},
		{"VolumeDriver.Mount", `{"Name":"v","ID":7}`, 400, "malformed"},
		{"VolumeDriver.Get", big, 413, "too large"},
		{"VolumeDriver.Nope", `{}`, 404, "unknown endpoint"},
		{"Other.Thing", ``, 404, "unknown endpoint"},
		{"VolumeDriver.Create", `{"Name":"../x"}`, 500, "volume name"},
		{"VolumeDriver.Create", `{"Name":"a/b"}`, 500, "volume name"},
		{"VolumeDriver.Create", `{"Name":""}`, 500, "empty"},
		{"VolumeDriver.Create", `{"Name":".hidden"}`, 500, "volume name"},
		{"VolumeDriver.Create", `{"Name":"` + strings.Repeat("n", 256) + `"}`, 500, "volume name"},
		{"VolumeDriver.Create", `{"Name":"ok","Opts":{"colour":"blue"}}`, 500, "colour"},
		{"VolumeDriver.Create", `{"Name":"ok","Opts":{"size":"lots"}}`, 500, "size"},
		{"VolumeDriver.Mount", `{"Name":"../../etc","ID":"x"}`, 500, "volume name"},
		{"VolumeDriver.Get", `{"Name":"missing"}`, 500, "not found"},
		{"VolumeDriver.Path", `{"Name":"missing"}`, 500, "not found"},
	}
	for _, tt := range tests {
		name := tt.endpoint + " " + tt.body
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			status, out := td.post(t, tt.endpoint, tt.body)
			msg, _ := out["Err"].(string)
			if status != tt.status || !strings.Contains(msg, tt.want) {
				t.Errorf("status %d, Err %q; want %d and an Err containing %q", status, msg, tt.status, tt.want)
			}
		})
	}
	// Nothing bad was created, and the daemon still serves.
	td.ok(t, "VolumeDriver.Create", `{"Name":"ok"}`)
	list := td.ok(t, "VolumeDriver.List", `{}`)
	if vols, _ := list["Volumes"].([]any); len(vols) != 1 {
		t.Errorf("List = %v, want only \"ok\"", list)
	}
}

// TestDockerConcurrentCreateRemoveList races Create, Remove, Get and List on a few names; when
// the dust settles List and Get agree (no volume resurrected by a concurrent List, moby#21403).
func TestDockerConcurrentCreateRemoveList(t *testing.T) {
	td := startDaemon(t, "")
	names := []string{"c0", "c1", "c2", "c3"}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				n := names[(w+i)%len(names)]
				switch (w*7 + i) % 4 {
				case 0, 1:
					td.ok(t, "VolumeDriver.Create", `{"Name":"`+n+`"}`)
				case 2:
					td.ok(t, "VolumeDriver.Remove", `{"Name":"`+n+`"}`)
				case 3:
					td.ok(t, "VolumeDriver.List", `{}`)
					td.post(t, "VolumeDriver.Get", `{"Name":"`+n+`"}`)
				}
			}
		}(w)
	}
	wg.Wait()
	listed := map[string]bool{}
	for _, v := range td.ok(t, "VolumeDriver.List", `{}`)["Volumes"].([]any) {
		listed[v.(map[string]any)["Name"].(string)] = true
	}
	for _, n := range names {
		status, _ := td.post(t, "VolumeDriver.Get", `{"Name":"`+n+`"}`)
		if found := status == http.StatusOK; found != listed[n] {
			t.Errorf("%s: listed=%v but Get found=%v", n, listed[n], found)
		}
	}
}

// TestDockerConcurrentMounts takes and drops references from many goroutines; at the end the
// volume is unmounted, removable, and no FUSE mount is left.
func TestDockerConcurrentMounts(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "")
	td.ok(t, "VolumeDriver.Create", `{"Name":"m"}`)
	td.ok(t, "VolumeDriver.Create", `{"Name":"n"}`)
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			vol := []string{"m", "n"}[w%2]
			for i := 0; i < 5; i++ {
				id := fmt.Sprintf(`{"Name":"%s","ID":"id%d"}`, vol, w%3) // IDs shared between workers
				if mp := td.ok(t, "VolumeDriver.Mount", id)["Mountpoint"]; mp == "" {
					t.Error("Mount returned an empty path")
				}
				if _, err := os.ReadDir(filepath.Join(td.root, "mounts", vol)); err != nil {
					t.Errorf("read mounted volume: %v", err)
				}
				td.ok(t, "VolumeDriver.Unmount", id)
			}
		}(w)
	}
	wg.Wait()
	if m := mountedUnder(t, filepath.Join(td.root, "mounts")); len(m) != 0 {
		t.Fatalf("mounts left after every reference was dropped: %v", m)
	}
	td.ok(t, "VolumeDriver.Remove", `{"Name":"m"}`)
	td.ok(t, "VolumeDriver.Remove", `{"Name":"n"}`)
}

// TestGetAtStartup asks for an existing volume the moment a restarted daemon's socket appears:
// the answer must be the volume, not "not found" because the store was still opening.
func TestGetAtStartup(t *testing.T) {
	root := t.TempDir()
	td := startDaemon(t, root)
	for _, n := range []string{"a", "b", "c"} {
		td.ok(t, "VolumeDriver.Create", `{"Name":"`+n+`"}`)
	}
	td.stop(t)
	for round := 0; round < 3; round++ {
		td = startDaemon(t, root)
		td.ok(t, "VolumeDriver.Get", `{"Name":"b"}`)
		if vols := td.ok(t, "VolumeDriver.List", `{}`)["Volumes"].([]any); len(vols) != 3 {
			t.Fatalf("List after restart = %v", vols)
		}
		td.stop(t)
	}
}

// TestShutdownUnmounts stops a daemon holding a mount: Run returns nil, nothing stays mounted, the
// socket is gone, and the data is there after a restart.
func TestShutdownUnmounts(t *testing.T) {
	fusetest.Require(t)
	root := t.TempDir()
	td := startDaemon(t, root)
	td.ok(t, "VolumeDriver.Create", `{"Name":"s"}`)
	mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"s","ID":"x"}`)["Mountpoint"].(string)
	if err := os.WriteFile(filepath.Join(mp, "kept"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	td.stop(t)
	t.Logf("shutdown took %v", time.Since(start))
	if m := mountedUnder(t, filepath.Join(root, "mounts")); len(m) != 0 {
		t.Fatalf("mounted after shutdown: %v", m)
	}
	if _, err := os.Stat(td.sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
	td = startDaemon(t, root)
	mp = td.ok(t, "VolumeDriver.Mount", `{"Name":"s","ID":"x"}`)["Mountpoint"].(string)
	if b, err := os.ReadFile(filepath.Join(mp, "kept")); err != nil || string(b) != "data" {
		t.Fatalf("after restart: %q, %v", b, err)
	}
}

// TestStaleMountsCleaned leaves a mount under the mount root, as a killed daemon would: the next
// daemon detaches it before serving the volume there.
func TestStaleMountsCleaned(t *testing.T) {
	fusetest.Require(t)
	root := t.TempDir()
	td := startDaemon(t, root)
	td.ok(t, "VolumeDriver.Create", `{"Name":"st"}`)
	td.stop(t)
	stale := filepath.Join(root, "mounts", "st")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mountTmpfs(stale); err != nil {
		t.Fatalf("mount a stand-in stale mount: %v", err)
	}
	t.Cleanup(func() { sysMounter{}.Unmount(stale, true) })
	os.WriteFile(filepath.Join(stale, "stale-marker"), nil, 0o644)

	td = startDaemon(t, root)
	mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"st","ID":"x"}`)["Mountpoint"].(string)
	if _, err := os.Stat(filepath.Join(mp, "stale-marker")); !os.IsNotExist(err) {
		t.Fatalf("the stale mount is still in place (marker: %v)", err)
	}
	if got := mountedUnder(t, filepath.Join(root, "mounts")); len(got) != 1 {
		t.Fatalf("mounts under the root = %v, want only the volume's", got)
	}
}

func TestPanicBecomes500(t *testing.T) {
	d, err := NewDaemon(Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := d.recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	for _, path := range []string{"/VolumeDriver.Get", "/fusevol/v1/status"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		if rec.Code != 500 || !strings.Contains(rec.Body.String(), "boom") {
			t.Errorf("%s: status %d body %q; want 500 naming the panic", path, rec.Code, rec.Body)
		}
	}
}

// TestShutdownWithBusyMount stops a daemon while a process still has a file open in a mounted
// volume: the daemon still exits within Docker's 10 s grace.
func TestShutdownWithBusyMount(t *testing.T) {
	fusetest.Require(t)
	td := startDaemon(t, "")
	td.ok(t, "VolumeDriver.Create", `{"Name":"busy"}`)
	mp := td.ok(t, "VolumeDriver.Mount", `{"Name":"busy","ID":"x"}`)["Mountpoint"].(string)
	f, err := os.Create(filepath.Join(mp, "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("held open"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	td.stop(t)
	if took := time.Since(start); took > 9*time.Second {
		t.Errorf("shutdown with a busy mount took %v", took)
	}
}

// TestStoreOpenFailure gives the daemon a root it cannot use: Run returns the error instead of
// serving a daemon without a store.
func TestStoreOpenFailure(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := NewDaemon(Config{Root: filepath.Join(file, "root"), Socket: filepath.Join(dir, "s.sock")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "root") {
			t.Fatalf("Run = %v, want an error about the root", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going without a store")
	}
	if _, err := os.Stat(filepath.Join(dir, "s.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestSocketInUse starts a second daemon on a live daemon's socket: it refuses rather than
// stealing the socket, and the first keeps serving.
func TestSocketInUse(t *testing.T) {
	td := startDaemon(t, "")
	d2, err := NewDaemon(Config{Root: t.TempDir(), Socket: td.sock})
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Fatalf("second daemon on a live socket: %v", err)
	}
	td.ok(t, "VolumeDriver.List", `{}`)
}
