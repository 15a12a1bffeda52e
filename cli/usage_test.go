package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fusevol/fusevol/fs/fusetest"
)

func TestVersion(t *testing.T) {
	r := volctl(t, "version").ok(t)
	if !regexp.MustCompile(`^volctl dev \(go1\.\S+ linux/\w+\)\n$`).MatchString(r.stdout) {
		t.Errorf("version printed %q", r.stdout)
	}
	volctl(t, "version", "extra").fails(t, 2, "version takes no arguments")
}

// A socket nobody listens on: commands that need the daemon say so in one line.
func TestDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	for _, args := range [][]string{
		{"volume", "ls"},
		{"volume", "create", "v"},
		{"volume", "inspect", "v"},
		{"volume", "rm", "v"},
		{"snapshot", "ls"},
		{"snapshot", "restore", "v", "s"},
		{"df"},
		{"gc"},
		{"fsck"},
		{"mount", "v", t.TempDir()},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			r := volctl(t, append([]string{"--socket", sock}, args...)...)
			r.fails(t, 1, sock, "volctl daemon")
			if r.stdout != "" {
				t.Errorf("stdout: %q", r.stdout)
			}
		})
	}
	// The socket can come from the environment too.
	t.Setenv("FUSEVOL_SOCKET", sock)
	volctl(t, "df").fails(t, 1, sock, "volctl daemon")
}

// Usage errors exit 2 with the message and the command's usage, before the daemon is contacted
// (the socket here does not exist).
func TestUsageErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	for _, tc := range []struct {
		args  []string
		msg   string
		usage string
	}{
		{nil, "missing command", "Usage: volctl [options] COMMAND"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, "Usage: volctl [options] COMMAND"},
		{[]string{"--bogus", "df"}, "unknown option --bogus", "Usage: volctl [options] COMMAND"},
		{[]string{"volume"}, "missing command", "Usage: volctl volume [options] COMMAND"},
		{[]string{"volume", "grow"}, `unknown command "grow"`, "Usage: volctl volume [options] COMMAND"},
		{[]string{"volume", "create"}, "needs exactly one NAME", "Usage: volctl volume create [options] NAME"},
		{[]string{"volume", "create", "a", "b"}, "needs exactly one NAME", "Usage: volctl volume create"},
		{[]string{"volume", "create", "-o", "size", "a"}, `option "size": want KEY=VALUE`, "Usage: volctl volume create"},
		{[]string{"volume", "create", "-o", "size=1", "-o", "size=2", "a"}, `option "size" given twice`, "Usage: volctl volume create"},
		{[]string{"volume", "create", "--size=1G", "a"}, "unknown option --size", "Usage: volctl volume create"},
		{[]string{"volume", "ls", "x"}, "takes no arguments", "Usage: volctl volume ls"},
		{[]string{"volume", "inspect", "v", "--format", "yaml"}, `--format "yaml": want table or json`, "Usage: volctl volume inspect"},
		{[]string{"volume", "rm", "v", "-x"}, "unknown option -x", "Usage: volctl volume rm"},
		{[]string{"volume", "ls", "--format", "yaml"}, `--format "yaml": want table or json`, "Usage: volctl volume ls"},
		{[]string{"volume", "inspect"}, "at least one NAME", "Usage: volctl volume inspect [options] NAME..."},
		{[]string{"volume", "rm"}, "at least one NAME", "Usage: volctl volume rm [options] NAME..."},
		{[]string{"volume", "rm", "-x", "v"}, "unknown option -x", "Usage: volctl volume rm"},
		{[]string{"snapshot", "create", "v"}, "needs VOLUME and NAME", "Usage: volctl snapshot create [options] VOLUME NAME"},
		{[]string{"snapshot", "ls", "a", "b"}, "at most one VOLUME", "Usage: volctl snapshot ls"},
		{[]string{"snapshot", "rm", "v"}, "needs VOLUME and NAME", "Usage: volctl snapshot rm"},
		{[]string{"snapshot", "restore", "v", "s", "x"}, "needs VOLUME and NAME", "Usage: volctl snapshot restore"},
		{[]string{"snapshot", "diff", "v"}, "needs VOLUME FROM [TO]", "Usage: volctl snapshot diff [options] VOLUME FROM [TO]"},
		{[]string{"snapshot", "diff", "v", "a", "b", "c"}, "needs VOLUME FROM [TO]", "Usage: volctl snapshot diff"},
		{[]string{"df", "--format"}, "option --format needs a value", "Usage: volctl df"},
		{[]string{"df", "--format=csv"}, `--format "csv"`, "Usage: volctl df"},
		{[]string{"gc", "now"}, "takes no arguments", "Usage: volctl gc"},
		{[]string{"fsck", "--fix"}, "unknown option --fix", "Usage: volctl fsck"},
		{[]string{"mount", "v"}, "needs VOLUME[@SNAPSHOT] and DIR", "Usage: volctl mount [options] VOLUME[@SNAPSHOT] DIR"},
		{[]string{"unmount"}, "exactly one DIR", "Usage: volctl unmount [options] DIR"},
		{[]string{"completion"}, "exactly one shell", "Usage: volctl completion [options] bash|zsh"},
		{[]string{"completion", "fish"}, `unknown shell "fish"`, "Usage: volctl completion"},
		{[]string{"daemon", "now"}, "takes no arguments", "Usage: volctl daemon"},
		{[]string{"daemon", "--log-level", "loud"}, `--log-level "loud"`, "Usage: volctl daemon"},
		{[]string{"daemon", "--log-format", "xml"}, `--log-format "xml"`, "Usage: volctl daemon"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			r := volctl(t, append([]string{"--socket", sock}, tc.args...)...)
			r.fails(t, 2, "volctl: ", tc.msg)
			if !strings.Contains(r.stderr, "\n"+tc.usage) {
				t.Errorf("stderr has no %q:\n%s", tc.usage, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout: %q", r.stdout)
			}
		})
	}
}

func TestUsageErrorGolden(t *testing.T) {
	r := volctl(t, "snapshot", "diff", "--colour", "v", "s")
	r.fails(t, 2)
	golden(t, "usage_error", r.stderr)
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh"} {
		r := volctl(t, "completion", shell).ok(t)
		golden(t, "completion_"+shell, r.stdout)
	}
}

// TestBashCompletion loads the bash script in a real bash with the built binary on PATH (urfave's
// completion reads os.Args, so it only works in a real process).
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	bin := fusetest.BuildVolctl(t, t.TempDir())
	td := startDaemon(t)
	td.run(t, "volume", "create", "alpha").ok(t)
	td.run(t, "snapshot", "create", "alpha", "snap1").ok(t)
	r := volctl(t, "completion", "bash").ok(t)
	script := filepath.Join(t.TempDir(), "volctl.bash")
	if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		words, want string
	}{
		{"volctl vol", "volume"},
		{"volctl volume ", "create inspect ls remove rm"},
		{"volctl snapshot re", "remove restore"},
		{"volctl volume rm --f", "--force"},
		{"volctl volume rm a", "alpha"},
		{"volctl snapshot restore alpha ", "snap1"},
		{"volctl mount al", "alpha alpha@snap1"},
	} {
		cmd := exec.Command(bash, "--norc", "-c", `source "$1"; read -r -a COMP_WORDS <<< "$2"; [[ "$2" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _volctl_complete; printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '`, "bash", script, tc.words)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "FUSEVOL_SOCKET="+td.socket)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.words, err, out)
		}
		got := strings.Fields(string(out))
		for _, w := range strings.Fields(tc.want) {
			if !slices.Contains(got, w) {
				t.Errorf("completing %q gave %q, want it to hold %q", tc.words, got, w)
			}
		}
	}
}
