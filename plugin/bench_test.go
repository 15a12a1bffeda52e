package plugin

import (
	"fmt"
	"github.com/fusevol/fusevol/fs/fusetest"
	"log/slog"
	"testing"
)

// quiet silences the daemon's request log in benchmarks.
func quiet(c *Config) { c.Logger = slog.New(slog.DiscardHandler) }

// BenchmarkDockerGet is one Docker Get round trip over the unix socket (Docker's restore burst
// sends one per volume).
func BenchmarkDockerGet(b *testing.B) {
	td := startDaemon(b, "", quiet)
	td.ok(b, "VolumeDriver.Create", `{"Name":"g"}`)
	b.ResetTimer()
	for b.Loop() {
		td.ok(b, "VolumeDriver.Get", `{"Name":"g"}`)
	}
}

// BenchmarkDockerList lists 100 volumes (docker volume ls).
func BenchmarkDockerList(b *testing.B) {
	td := startDaemon(b, "", quiet)
	for i := range 100 {
		td.ok(b, "VolumeDriver.Create", fmt.Sprintf(`{"Name":"v%03d"}`, i))
	}
	b.ResetTimer()
	for b.Loop() {
		td.ok(b, "VolumeDriver.List", `{}`)
	}
}

// BenchmarkDockerMountUnmount is a container start and stop as the plugin sees it: the first
// reference mounts FUSE, the last unmounts it.
func BenchmarkDockerMountUnmount(b *testing.B) {
	fusetest.Require(b)
	td := startDaemon(b, "", quiet)
	td.ok(b, "VolumeDriver.Create", `{"Name":"m"}`)
	b.ResetTimer()
	for b.Loop() {
		td.ok(b, "VolumeDriver.Mount", `{"Name":"m","ID":"c"}`)
		td.ok(b, "VolumeDriver.Unmount", `{"Name":"m","ID":"c"}`)
	}
}
