package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// skipError marks a workload that could not run here because something it needs is missing (a
// program, a user, root). The run reports it as a warning and leaves the figures empty, rather
// than as a failure: except in CI (CI=true), where .ci/run installs everything and a missing
// program is an error.
type skipError struct{ msg string }

func (e *skipError) Error() string { return e.msg }

// inCI reports whether the run is CI's, where every workload must run.
func inCI() bool { return os.Getenv("CI") == "true" }

// unavailable returns the error for a workload that cannot run: a skip, or under CI=true a plain
// error.
func unavailable(workload, why string) error {
	if inCI() {
		return fmt.Errorf("%s: %s (an error because CI=true: .ci/run installs it)", workload, why)
	}
	return &skipError{fmt.Sprintf("%s skipped: %s", workload, why)}
}

func isSkip(err error) (string, bool) {
	var s *skipError
	if errors.As(err, &s) {
		return s.msg, true
	}
	return "", false
}

// runTool runs a command and returns its standard output; on failure the error carries the tail
// of what it printed.
func runTool(cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, tail(stderr.String()+stdout.String(), 1500))
	}
	return []byte(stdout.String()), nil
}

// tail keeps the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
