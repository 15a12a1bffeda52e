package fusetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// Volctl runs a built volctl (Bin) against the daemon on Socket.
type Volctl struct{ Bin, Socket string }

// Run runs volctl --socket Socket args and returns its output and error as Output does.
func (v Volctl) Run(args ...string) (string, error) {
	return Output(2*time.Minute, nil, v.Bin, append([]string{"--socket", v.Socket}, args...)...)
}

// Must is Run for a command that must succeed: otherwise it fails the test with the output.
func (v Volctl) Must(t testing.TB, args ...string) string {
	t.Helper()
	return MustOutput(t, 2*time.Minute, nil, v.Bin, append([]string{"--socket", v.Socket}, args...)...)
}

// Output runs name with args, env added to the environment, killed after timeout, and returns
// its combined output without surrounding white space and its error.
func Output(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// MustOutput is Output for a command that must succeed: otherwise it fails the test with the
// output.
func MustOutput(t testing.TB, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	out, err := Output(timeout, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}
