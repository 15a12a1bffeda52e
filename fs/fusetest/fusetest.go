// Package fusetest is the test kit every fusevol test package shares:
//
//   - Require, RequireRoot, Missing: prerequisite checks. Tests that mount FUSE filesystems run
//     in CI, where CI=true turns a missing prerequisite into a failure instead of a skip.
//   - IsMountPoint, MountsUnder, DetachUnder, TempRoot: the mount table (read with fs/mountinfo)
//     and a temporary root nothing stays mounted under.
//   - BuildVolctl, Volctl, Output, MustOutput: a static volctl built from this module, and
//     running it (or another command) with a time limit.
//   - StartProcess, Start: a program (`volctl daemon`, dockerd) with a log file, stopped with a
//     signal and a grace; WaitReady and WaitUntil wait for it to answer.
//   - StartDaemon, Go: a daemon's Run in this process, stopped by cancelling its context.
//   - WaitSocket, WaitReady, UnixHTTP: waiting for a daemon's socket and talking HTTP over it.
//   - SyncBuffer: a log sink that concurrent writers and the test may share.
//   - CopySelf, StatusAnswer: a copy of the test binary other users can run as a helper, and
//     what such a helper reports of the daemon's status.
//
// The kit imports only fs/mountinfo and the control API's client (plugin/client, which imports
// only plugin/api), never fs or plugin themselves, so that the internal tests of fs, plugin and
// cli can all use it; in-process daemons come in as their Run function.
package fusetest

import (
	"os"
	"testing"
)

// Require skips a test that mounts FUSE filesystems when the machine cannot (not root, no
// /dev/fuse), or fails it when CI=true.
func Require(t testing.TB) {
	t.Helper()
	RequireRoot(t, "to mount FUSE")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Missing(t, "needs /dev/fuse: "+err.Error())
	}
}

// RequireRoot skips a test that needs root (for what, as in "to run clients as other users")
// when it runs as another user, or fails it when CI=true.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root "+what)
	}
}

// Missing is how a test meets a missing prerequisite (why): it is skipped, or fails when CI=true.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", why)
	}
	t.Skip(why)
}
