package fusetest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is a program a test started (`volctl daemon`, dockerd). What it prints goes to its
// log file, which is appended to across restarts. If it still runs when the test ends, it is
// killed.
type Process struct {
	Cmd    *exec.Cmd
	Log    string // its log file
	exited chan struct{}
}

// StartProcess starts cmd with its output appended to log, to be killed (SIGKILL) should the
// test binary die, and kills it when the test ends.
func StartProcess(t testing.TB, cmd *exec.Cmd, log string) *Process {
	t.Helper()
	p, err := Start(cmd, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

// Start is StartProcess for a process that outlives the test that starts it (a subtest): the
// caller kills it.
func Start(cmd *exec.Cmd, log string) (*Process, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if cmd.SysProcAttr.Pdeathsig == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %v", cmd.Path, err)
	}
	p := &Process{Cmd: cmd, Log: log, exited: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.exited) }()
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Alive reports whether the process still runs.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to go; a process that is gone is left alone.
func (p *Process) Kill() {
	if p.Alive() {
		p.Cmd.Process.Kill()
	}
	<-p.exited
}

// Stop sends sig and waits up to grace for the process to exit. It reports false, after a
// goroutine dump (SIGQUIT) into the log and SIGKILL, if the process outlived the grace.
func (p *Process) Stop(sig os.Signal, grace time.Duration) bool {
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return true
	case <-time.After(grace):
	}
	p.Cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(2 * time.Second):
		p.Kill()
	}
	return false
}

// StopClean sends SIGTERM and fails the test unless the process exits 0 within grace (Docker
// gives a plugin 10 s).
func (p *Process) StopClean(t testing.TB, grace time.Duration) {
	t.Helper()
	if !p.Stop(syscall.SIGTERM, grace) {
		t.Fatalf("%s still running %v after SIGTERM:\n%s", p.name(), grace, p.LogTail())
	}
	if st := p.Cmd.ProcessState; !st.Success() {
		t.Errorf("%s exited with %v after SIGTERM:\n%s", p.name(), st, p.LogTail())
	}
}

func (p *Process) name() string { return strings.Join(p.Cmd.Args[:min(2, len(p.Cmd.Args))], " ") }

// Output is everything the process (and earlier ones on the same log) printed.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// LogTail is the end of the log, without go-fuse's splice chatter.
func (p *Process) LogTail() string { return LogTail(p.Log, 8000) }

// LogTail is the last n bytes of the log file at path, without go-fuse's splice chatter.
func LogTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "trySplice") {
			keep = append(keep, line)
		}
	}
	s := strings.Join(keep, "\n")
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// WaitReady waits until the volctl daemon this process is answers on sock with its store open,
// failing the test with the log's end if it exits first or takes longer than StartTimeout.
func (p *Process) WaitReady(t testing.TB, sock string) {
	t.Helper()
	p.WaitUntil(t, "daemon on "+sock, ready(sock))
}

// WaitUntil polls ok until it returns nil, failing the test with the log's end if the process
// exits first or ok still fails after StartTimeout.
func (p *Process) WaitUntil(t testing.TB, what string, ok func() error) {
	t.Helper()
	if err := poll(p.exited, ok); err != nil {
		t.Fatalf("%s: %v:\n%s", what, err, p.LogTail())
	}
}
