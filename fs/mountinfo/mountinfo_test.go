package mountinfo

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const table = `22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw
35 22 0:30 / /var/lib/fusevol/mounts rw shared:12 - tmpfs tmpfs rw
40 35 0:40 / /var/lib/fusevol/mounts/a\040b rw,nosuid shared:13 master:2 - fuse.fusevol fusevol:a\040b rw
41 35 0:41 / /var/lib/fusevol/mounts/c rw - fuse.fusevol fusevol:c rw
42 41 0:42 / /var/lib/fusevol/mounts/c/deeper rw - tmpfs tmpfs rw
short line
`
	got, err := parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := Table{
		{"/", "ext4"},
		{"/var/lib/fusevol/mounts", "tmpfs"},
		{"/var/lib/fusevol/mounts/a b", "fuse.fusevol"},
		{"/var/lib/fusevol/mounts/c", "fuse.fusevol"},
		{"/var/lib/fusevol/mounts/c/deeper", "tmpfs"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parse = %q, want %q", got, want)
	}
	if u := got.Under("/var/lib/fusevol/mounts/"); !slices.Equal(u, []string{
		"/var/lib/fusevol/mounts/c/deeper", "/var/lib/fusevol/mounts/a b", "/var/lib/fusevol/mounts/c",
	}) {
		t.Fatalf("Under = %q: want strictly under the root, deepest first", u)
	}
	if e, ok := got.Find("/var/lib/fusevol/mounts/c"); !ok || e.FSType != "fuse.fusevol" {
		t.Fatalf("Find = %v, %v", e, ok)
	}
	if _, ok := got.Find("/var/lib/fusevol"); ok {
		t.Fatal("Find of a directory that is not a mount point succeeded")
	}
}

func TestReadSelf(t *testing.T) {
	table, err := Read()
	if err != nil {
		t.Skipf("no mount table: %v", err)
	}
	if _, ok := table.Find("/"); !ok {
		t.Fatalf("mount table without /: %q", table)
	}
}

// escapeMountPath escapes like the kernel does in /proc/self/mountinfo.
func escapeMountPath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			b.WriteByte('\\')
			b.WriteByte('0' + c>>6)
			b.WriteByte('0' + c>>3&7)
			b.WriteByte('0' + c&7)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzUnescape(f *testing.F) {
	for _, s := range []string{"/a b", `/back\slash`, "/tab\there", "/plain", `\`, `\04`, "/new\nline"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := Unescape(escapeMountPath(s)); got != s {
			t.Fatalf("unescape(escape(%q)) = %q", s, got)
		}
	})
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`:  "/mnt/a b",
		`/x\134y`:      `/x\y`,
		`/trailing\04`: `/trailing\04`,
		`/no/escapes`:  "/no/escapes",
		`/bad\08z`:     `/bad\08z`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
