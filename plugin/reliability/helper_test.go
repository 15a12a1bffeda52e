package reliability

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// Processes started by the tests run this test binary with helperEnv set to a mode; the last
// command-line argument is the mode's target.
const helperEnv = "FUSEVOL_RELIABILITY_HELPER"

func runHelper(mode, arg string) int {
	switch mode {
	case "writer":
		return runWriter(arg)
	case "status":
		return runStatus(arg)
	default:
		if op, ok := strings.CutPrefix(mode, "try-"); ok {
			fmt.Printf("RESULT=%s\n", errName(tryOp(op, arg)))
			return 0
		}
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// runWriter writes files into dir until a system call fails or FV_COUNT files are done. Each
// file is written under a temporary name, fsynced, renamed into place and its directory
// fsynced; only then is "ACK name sha256" printed. File names start at FV_START. Files whose
// index is ephemeral are deleted again three files later: "DELETING name" is printed before
// the unlink, "DEL name" once the directory is fsynced after it.
func runWriter(dir string) int {
	start, _ := strconv.Atoi(os.Getenv("FV_START"))
	count, _ := strconv.Atoi(os.Getenv("FV_COUNT"))
	seed, _ := strconv.ParseUint(os.Getenv("FV_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, uint64(start)))
	d, err := os.Open(dir)
	if err != nil {
		fmt.Printf("ERR open dir: %v\n", err)
		return 0
	}
	defer d.Close()
	for i := start; i < start+count; i++ {
		data := make([]byte, 1+rng.IntN(300<<10))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		name := fileName(i)
		if err := writeDurably(d, dir, name, data, rng); err != nil {
			fmt.Printf("ERR %s: %v\n", name, err)
			return 0
		}
		sum := sha256.Sum256(data)
		fmt.Printf("ACK %s %s\n", name, hex.EncodeToString(sum[:]))
		if old := i - 3; old >= start && ephemeral(old) {
			fmt.Printf("DELETING %s\n", fileName(old))
			if err := os.Remove(filepath.Join(dir, fileName(old))); err != nil {
				fmt.Printf("ERR unlink %s: %v\n", fileName(old), err)
				return 0
			}
			if err := d.Sync(); err != nil {
				fmt.Printf("ERR sync dir after unlink: %v\n", err)
				return 0
			}
			fmt.Printf("DEL %s\n", fileName(old))
		}
	}
	return 0
}

func fileName(i int) string { return fmt.Sprintf("f%06d", i) }

// ephemeral reports whether the writer deletes file i again.
func ephemeral(i int) bool { return i%4 == 1 }

// writeDurably writes data in a few pieces to a temporary file, fsyncs it, renames it to name
// and fsyncs the directory.
func writeDurably(d *os.File, dir, name string, data []byte, rng *rand.Rand) error {
	tmp := filepath.Join(dir, ".tmp-"+name)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(128<<10))
		if _, err := f.Write(rest[:n]); err != nil {
			f.Close()
			return err
		}
		rest = rest[n:]
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return d.Sync()
}

// runStatus asks the daemon on sock for its status and prints RESULT=ok or the error code.
func runStatus(sock string) int {
	fmt.Printf("RESULT=%s\n", fusetest.StatusAnswer(sock))
	return 0
}

// tryOp does one file operation on path and returns its error.
func tryOp(op, path string) error {
	switch op {
	case "read":
		_, err := os.ReadFile(path)
		return err
	case "append":
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		if _, err := f.Write([]byte("appended by another user\n")); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	case "create":
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	}
	return fmt.Errorf("unknown op %q", op)
}

// errName is "ok", the errno's name (EACCES, ...) or the error text.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return err.Error()
}

// asUser runs the helper in mode on arg as uid:gid and returns what it printed after RESULT=.
func asUser(t testing.TB, uid, gid uint32, mode, arg string) string {
	t.Helper()
	_, helper := binaries(t)
	cmd := exec.Command(helper, arg)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT="); ok {
			return r
		}
	}
	t.Fatalf("helper %s %s as %d:%d: %v\n%s", mode, arg, uid, gid, err, out)
	return ""
}
