// Package fusetest holds what tests that mount FUSE filesystems need before they can run. Such tests
// run in CI, where CI=true turns a missing prerequisite into a failure instead of a skip.
package fusetest

import (
	"os"
	"testing"
)

// Require skips a test that mounts FUSE filesystems when the machine cannot (not root, no
// /dev/fuse), or fails it when CI=true.
func Require(t testing.TB) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root to mount FUSE"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "needs /dev/fuse: " + err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", why)
	}
	t.Skip(why)
}
