package cli

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestIntersperse(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want string }{
		{"volume inspect v --format json", "volume inspect --format json v"},
		{"volume rm v -f", "volume rm -f v"},
		{"--socket /s volume rm a -f b", "--socket /s volume rm -f a b"},
		{"send a@s --from a@o -o FILE", "send --from a@o -o FILE a@s"},
		{"send a@s --from=a@o", "send --from=a@o a@s"},
		{"snapshot schedule data --every 15m --keep 96", "snapshot schedule --every 15m --keep 96 data"},
		{"receive b -F -i f", "receive -F -i f b"},
		{"mount v -- -dir", "mount v -- -dir"},
		{"volume create -o size=1G a", "volume create -o size=1G a"},
		{"df --format", "df --format"}, // a value left missing stays missing: urfave says so
		{"volume inspect v --generate-bash-completion", "volume inspect v --generate-bash-completion"},
		{"volume inspect v --format json --generate-bash-completion", "volume inspect --format json v --generate-bash-completion"},
		{"volume grow v -f", "volume grow v -f"}, // unknown command: left for urfave to refuse
		{"frobnicate -x", "frobnicate -x"},
	} {
		got := intersperse(app, append([]string{"volctl"}, strings.Fields(tc.in)...))[1:]
		if want := strings.Fields(tc.want); !slices.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, want)
		}
	}
}
