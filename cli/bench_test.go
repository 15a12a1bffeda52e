package cli

import (
	"fmt"
	"io"
	"testing"
)

// BenchmarkVolumeList measures one `volctl volume ls` against a daemon holding 100 volumes:
// the round trip a script pays per call (in-process, so without the exec).
func BenchmarkVolumeList(b *testing.B) {
	td := startDaemon(b)
	for i := range 100 {
		td.run(b, "volume", "create", fmt.Sprintf("vol%03d", i)).ok(b)
	}
	for _, format := range []string{"table", "json"} {
		b.Run(format, func(b *testing.B) {
			for b.Loop() {
				if code := Main(b.Context(), []string{"volctl", "--socket", td.socket, "volume", "ls", "--format", format}, io.Discard, io.Discard); code != 0 {
					b.Fatalf("exit %d", code)
				}
			}
		})
	}
}
