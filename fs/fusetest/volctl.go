package fusetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// VolctlPackage is the import path of the volctl command.
const VolctlPackage = "github.com/fusevol/fusevol/cli/volctl"

// BuildVolctl builds a static volctl from this module into dir and returns its path.
func BuildVolctl(t testing.TB, dir string) string {
	t.Helper()
	bin, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Build is BuildVolctl for callers without a test (a sync.Once shared by several tests).
func Build(dir string) (string, error) {
	goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first on PATH
	if err != nil {
		return "", fmt.Errorf("build volctl: %w", err)
	}
	bin := filepath.Join(dir, "volctl")
	cmd := exec.Command(goBin, "build", "-o", bin, VolctlPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", VolctlPackage, err, out)
	}
	return bin, nil
}

// CopySelf copies the running test binary to path, executable by every user, so that a test can
// run it as another user (who may not reach the go test cache).
func CopySelf(path string) error {
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		return err
	}
	return os.WriteFile(path, self, 0o755)
}
