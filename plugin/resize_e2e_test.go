package plugin

import (
	"strconv"
	"strings"
	"testing"
)

// TestDockerResize: `volctl volume set -o size=...` on a volume a running container uses; df
// inside the container shows each new size at once, a write that did not fit fits after a
// raise, and a size below the usage is refused with the usage.
func TestDockerResize(t *testing.T) {
	e := newE2E(t)
	e.mustDocker("volume", "create", "-d", e.driver, "-o", "size=32MiB", "data")
	e.mustDocker("run", "-d", "--name", "app", "--network", "none", "-v", "data:/data", e2eImage, "sleep", "600")
	df := func(want string) {
		t.Helper()
		out := e.mustDocker("exec", "app", "sh", "-c", "df -Pk /data | tail -n 1")
		t.Logf("df -Pk /data in the container: %s", out)
		if f := strings.Fields(out); len(f) < 4 || f[1] != want {
			t.Fatalf("df in the container: %q, want %s KiB blocks", out, want)
		}
	}
	fill := func(name string, mib int) (string, error) {
		return e.docker("exec", "app", "sh", "-c",
			"dd if=/dev/urandom of=/data/"+name+" bs=1M count="+strconv.Itoa(mib)+" 2>&1")
	}

	df("32768")
	if out, err := fill("a", 24); err != nil {
		t.Fatalf("24 MiB under a 32 MiB quota: %v\n%s", err, out)
	}
	if out, err := fill("b", 16); err == nil || !strings.Contains(out, "No space left") {
		t.Fatalf("16 MiB more under a 32 MiB quota: %v\n%s", err, out)
	}
	e.mustDocker("exec", "app", "rm", "/data/b")

	t.Logf("volctl volume set: %s", e.mustVolctl("volume", "set", "-o", "size=1GiB", "data"))
	df("1048576")
	if out, err := fill("b", 16); err != nil {
		t.Fatalf("16 MiB more after raising the quota to 1 GiB: %v\n%s", err, out)
	}

	out, err := e.volctl("volume", "set", "-o", "size=16MiB", "data")
	t.Logf("volctl volume set -o size=16MiB: %v: %s", err, out)
	if err == nil || !strings.Contains(out, "uses 41943040 bytes (40.0 MiB)") {
		t.Fatalf("shrinking below the usage: %v, %q; want refused with the usage of 40 MiB", err, out)
	}
	df("1048576")

	e.mustVolctl("volume", "set", "-o", "size=48MiB", "data")
	df("49152")
}
