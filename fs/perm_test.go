package fs

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The permission test runs a fixed script as an unprivileged user in a child process (this
// test binary, re-executed with dropped credentials), once in a directory of the kernel's own
// filesystem and once in a mount, and compares the two transcripts.

const (
	permUID   = 1000
	permGID   = 1000
	otherGID  = 2000
	permChild = "FUSEVOL_PERM_CHILD"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(permChild); dir != "" {
		runPermScript(os.Stdout, dir)
		os.Exit(0)
	}
	if spec := os.Getenv(writerChild); spec != "" {
		if err := runWriterChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(resumeWorkloadEnv); dir != "" {
		if err := runResumeWorkload(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(resumeChild); spec != "" {
		if err := runResumeChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// setupPermTree builds the tree the script works on (as root).
func setupPermTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	must(os.Mkdir(p("rootdir"), 0o755))
	must(os.WriteFile(p("secret"), []byte("secret"), 0o600))
	must(os.WriteFile(p("public"), []byte("public"), 0o644))
	must(os.Mkdir(p("userdir"), 0o755))
	must(os.Chown(p("userdir"), permUID, permGID))
	must(os.Mkdir(p("sticky"), 0o755))
	must(syscall.Chmod(p("sticky"), 0o1777))
	must(os.WriteFile(p("sticky/rootfile"), []byte("r"), 0o666))
	must(os.Chmod(p("sticky/rootfile"), 0o666))
	must(os.WriteFile(p("sticky/userfile"), []byte("u"), 0o644))
	must(os.Chown(p("sticky/userfile"), permUID, permGID))
	must(os.Mkdir(p("sgid"), 0o777))
	must(os.Chown(p("sgid"), 0, otherGID))
	must(syscall.Chmod(p("sgid"), 0o2777))
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"suid", 0o755 | os.ModeSetuid}, {"sgidexec", 0o775 | os.ModeSetgid}} {
		must(os.WriteFile(p(f.name), []byte("#!/bin/sh\n"), 0o755))
		must(os.Chown(p(f.name), permUID, permGID))
		must(os.Chmod(p(f.name), f.mode))
	}
	must(os.Chmod(root, 0o755))
}

// runPermScript performs the unprivileged operations and writes one line per result.
func runPermScript(w io.Writer, root string) {
	p := func(rel string) string { return filepath.Join(root, rel) }
	res := func(name string, err error) { fmt.Fprintf(w, "%s: %s\n", name, errStr(err)) }
	stat := func(name, rel string) {
		var st syscall.Stat_t
		if err := syscall.Lstat(p(rel), &st); err != nil {
			res(name, err)
			return
		}
		fmt.Fprintf(w, "%s: mode=%#o uid=%d gid=%d\n", name, st.Mode, st.Uid, st.Gid)
	}
	create := func(rel string) error {
		fd, err := syscall.Open(p(rel), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_EXCL, 0o644)
		if err == nil {
			syscall.Close(fd)
		}
		return err
	}
	open := func(rel string, flags int) error {
		fd, err := syscall.Open(p(rel), flags, 0)
		if err == nil {
			syscall.Close(fd)
		}
		return err
	}
	appendTo := func(rel string) error {
		fd, err := syscall.Open(p(rel), syscall.O_WRONLY|syscall.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		_, err = syscall.Write(fd, []byte("x"))
		return err
	}
	res("create in rootdir", create("rootdir/x"))
	res("mkdir in rootdir", syscall.Mkdir(p("rootdir/d"), 0o755))
	res("read secret", open("secret", syscall.O_RDONLY))
	res("read public", open("public", syscall.O_RDONLY))
	res("write public", open("public", syscall.O_WRONLY))
	res("truncate public", syscall.Truncate(p("public"), 0))
	res("chmod public", syscall.Chmod(p("public"), 0o777))
	res("chown public", syscall.Chown(p("public"), permUID, permGID))
	res("utimes now public", unix.UtimesNanoAt(unix.AT_FDCWD, p("public"), []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}, 0))
	res("utimes explicit sticky/rootfile", unix.UtimesNanoAt(unix.AT_FDCWD, p("sticky/rootfile"), []unix.Timespec{{Sec: 1}, {Sec: 1}}, 0))
	res("utimes now sticky/rootfile", unix.UtimesNanoAt(unix.AT_FDCWD, p("sticky/rootfile"), []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}, 0))
	res("setxattr public", unix.Setxattr(p("public"), "user.x", []byte("v"), 0))
	res("access secret R", unix.Access(p("secret"), unix.R_OK))
	res("access public W", unix.Access(p("public"), unix.W_OK))
	res("create in userdir", create("userdir/mine"))
	stat("stat userdir/mine", "userdir/mine")
	res("chmod mine", syscall.Chmod(p("userdir/mine"), 0o600))
	res("chown mine to root", syscall.Chown(p("userdir/mine"), 0, 0))
	res("chgrp mine to other group", syscall.Chown(p("userdir/mine"), -1, otherGID))
	res("setxattr mine", unix.Setxattr(p("userdir/mine"), "user.x", []byte("v"), 0))
	res("rename mine into rootdir", syscall.Rename(p("userdir/mine"), p("rootdir/mine")))
	res("write sticky/rootfile", appendTo("sticky/rootfile"))
	res("unlink sticky/rootfile", syscall.Unlink(p("sticky/rootfile")))
	res("rename sticky/rootfile", syscall.Rename(p("sticky/rootfile"), p("sticky/moved")))
	res("unlink sticky/userfile", syscall.Unlink(p("sticky/userfile")))
	res("create in sgid", create("sgid/f"))
	stat("stat sgid/f", "sgid/f")
	res("mkdir in sgid", syscall.Mkdir(p("sgid/d"), 0o755))
	stat("stat sgid/d", "sgid/d")
	res("write suid", appendTo("suid"))
	stat("stat suid", "suid")
	res("write sgidexec", appendTo("sgidexec"))
	stat("stat sgidexec", "sgidexec")
	res("chmod g+s mine (not in group)", syscall.Chmod(p("sgid/f"), 0o2755))
	stat("stat sgid/f after chmod", "sgid/f")
}

// permTranscript runs the script as permUID in root and returns its output.
func permTranscript(t *testing.T, bin, root string) string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), permChild+"="+root)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: permUID, Gid: permGID, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged child: %v\n%s", err, out)
	}
	return string(out)
}

// reachable opens the directories above dir to other users (t.TempDir makes them 0700).
func reachable(t *testing.T, dir string) {
	t.Helper()
	for d := filepath.Dir(dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPermissions(t *testing.T) {
	tv := newVolume(t, backendOpts(64<<10), Options{})
	native := nativeDir(t)
	// The child must be able to execute the test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "fs.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{native, tv.dir, bin} {
		reachable(t, d)
	}
	setupPermTree(t, native)
	setupPermTree(t, tv.dir)
	want := permTranscript(t, bin, native)
	got := permTranscript(t, bin, tv.dir)
	if got != want {
		wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
		for i := range min(len(wl), len(gl)) {
			if wl[i] != gl[i] {
				t.Errorf("native:  %s\nmounted: %s", wl[i], gl[i])
			}
		}
		if len(wl) != len(gl) {
			t.Errorf("transcripts of %d and %d lines", len(wl), len(gl))
		}
	}
	// The reference itself must show the protections at work, or the comparison proves little.
	for _, line := range []string{
		"create in rootdir: errno:EACCES",
		"read secret: errno:EACCES",
		"unlink sticky/rootfile: errno:EPERM",
		"chown mine to root: errno:EPERM",
		fmt.Sprintf("stat sgid/f: mode=0100644 uid=%d gid=%d", permUID, otherGID),
		"stat suid: mode=0100755",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("mounted transcript lacks %q:\n%s", line, got)
		}
	}
}
