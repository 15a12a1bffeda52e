package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusevol/fusevol/fs/fusetest"
	"github.com/fusevol/fusevol/plugin/client"
)

// TestDockerRemoveKeepsSnapshots: docker volume rm (compose down -v, prune) removes the volume
// but not its snapshots; docker volume create -o from=NAME@SNAP brings it back with them, and
// volctl volume rm --with-snapshots removes both.
func TestDockerRemoveKeepsSnapshots(t *testing.T) {
	fusetest.Require(t)
	ctx := context.Background()
	td := startDaemon(t, "")
	c := client.New(td.sock)
	td.ok(t, "VolumeDriver.Create", `{"Name":"db","Opts":{"size":"64MiB"}}`)
	writeThrough(t, td, "db", "v1")
	if _, err := c.CreateSnapshot(ctx, "db", "before"); err != nil {
		t.Fatal(err)
	}
	writeThrough(t, td, "db", "v2")

	td.ok(t, "VolumeDriver.Remove", `{"Name":"db"}`)
	td.fails(t, "VolumeDriver.Get", `{"Name":"db"}`, "not found")
	if vols := td.ok(t, "VolumeDriver.List", `{}`)["Volumes"]; fmt.Sprint(vols) != "[]" {
		t.Fatalf("List after remove = %v", vols)
	}
	snaps, err := c.ListSnapshots(ctx, "db")
	if err != nil || len(snaps) != 1 || snaps[0].Name != "before" || snaps[0].RemovedAt == nil ||
		!strings.HasPrefix(snaps[0].Volume, "db~") {
		t.Fatalf("snapshots after docker volume rm: %+v %v", snaps, err)
	}

	td.ok(t, "VolumeDriver.Create", `{"Name":"db","Opts":{"from":"db@before"}}`)
	if got := readThrough(t, td, "db"); got != "v1" {
		t.Fatalf("recreated db reads %q, want v1", got)
	}
	vol, _ := td.ok(t, "VolumeDriver.Get", `{"Name":"db"}`)["Volume"].(map[string]any)
	if opts := fmt.Sprint(vol["Status"].(map[string]any)["options"]); !strings.Contains(opts, "size:6.7108864e+07") {
		t.Fatalf("recreated db's options %s: want the origin's quota", opts)
	}
	snaps, err = c.ListSnapshots(ctx, "")
	if err != nil || len(snaps) != 1 || snaps[0].Volume != "db" || snaps[0].RemovedAt != nil {
		t.Fatalf("snapshots after recreating db: %+v %v", snaps, err)
	}

	if err := c.RemoveVolumeAndSnapshots(ctx, "db", false); err != nil {
		t.Fatal(err)
	}
	if snaps, err = c.ListSnapshots(ctx, ""); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots after remove --with-snapshots: %+v %v", snaps, err)
	}
	rep, err := c.Fsck(ctx, false)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("fsck: %+v %v", rep, err)
	}
}

// writeThrough mounts a volume as Docker does, writes its file f and unmounts it.
func writeThrough(t *testing.T, td *testDaemon, vol, content string) {
	t.Helper()
	dir := td.ok(t, "VolumeDriver.Mount", `{"Name":"`+vol+`","ID":"w"}`)["Mountpoint"].(string)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	td.ok(t, "VolumeDriver.Unmount", `{"Name":"`+vol+`","ID":"w"}`)
}

func readThrough(t *testing.T, td *testDaemon, vol string) string {
	t.Helper()
	dir := td.ok(t, "VolumeDriver.Mount", `{"Name":"`+vol+`","ID":"r"}`)["Mountpoint"].(string)
	defer td.ok(t, "VolumeDriver.Unmount", `{"Name":"`+vol+`","ID":"r"}`)
	b, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
