// Package api defines the fusevol control API: the JSON types and routes that volctl (through
// plugin/client) uses to talk to the daemon over its unix socket, next to Docker's volume plugin
// protocol. Every route lives under Prefix, so the two protocols never share a path.
//
// Invariants: requests and responses are plain JSON; every failure is an HTTP status >= 400 with
// an Error body; field names are stable (scripts depend on `volctl ... --format json`).
package api

import (
	"errors"
	"fmt"
	"time"
)

// Version is the control API version, part of every route.
const Version = "v1"

// Prefix is the path prefix of every control API route.
const Prefix = "/fusevol/" + Version

// Routes, in net/http ServeMux pattern syntax ({name} is a path segment). Query parameters are
// listed next to each route.
const (
	RouteStatus          = "GET " + Prefix + "/status"                                       // -> Status
	RouteVolumeList      = "GET " + Prefix + "/volumes"                                      // -> []Volume
	RouteVolumeCreate    = "POST " + Prefix + "/volumes"                                     // CreateVolumeRequest -> Volume
	RouteVolumeInspect   = "GET " + Prefix + "/volumes/{name}"                               // -> Volume
	RouteVolumeRemove    = "DELETE " + Prefix + "/volumes/{name}"                            // ?force=true&snapshots=true -> 204
	RouteVolumeSet       = "PATCH " + Prefix + "/volumes/{name}"                             // SetVolumeRequest -> Volume
	RouteSnapshotList    = "GET " + Prefix + "/snapshots"                                    // ?volume=V -> []Snapshot
	RouteSnapshotCreate  = "POST " + Prefix + "/volumes/{name}/snapshots"                    // CreateSnapshotRequest -> Snapshot
	RouteSnapshotRemove  = "DELETE " + Prefix + "/volumes/{name}/snapshots/{snapshot}"       // -> 204
	RouteSnapshotRestore = "POST " + Prefix + "/volumes/{name}/snapshots/{snapshot}/restore" // -> 204
	RouteSnapshotDiff    = "GET " + Prefix + "/volumes/{name}/diff"                          // ?from=SNAP&to=SNAP (to empty = live) -> Diff
	RouteScheduleGet     = "GET " + Prefix + "/volumes/{name}/schedule"                      // -> Schedule
	RouteScheduleSet     = "POST " + Prefix + "/volumes/{name}/schedule"                     // Schedule -> Schedule
	RouteScheduleRemove  = "DELETE " + Prefix + "/volumes/{name}/schedule"                   // -> 204
	RouteDF              = "GET " + Prefix + "/df"                                           // -> DF
	RouteGC              = "POST " + Prefix + "/gc"                                          // -> GCResult
	RouteFsck            = "POST " + Prefix + "/fsck"                                        // FsckRequest -> FsckReport
	RouteMountList       = "GET " + Prefix + "/mounts"                                       // -> []Mount
	RouteMount           = "POST " + Prefix + "/mounts"                                      // MountRequest -> Mount
	RouteUnmount         = "POST " + Prefix + "/unmount"                                     // UnmountRequest -> 204
)

// MaxBodyBytes is the largest request body the daemon reads (both protocols).
const MaxBodyBytes = 1 << 20

// Error codes: the machine-readable part of Error, one per class of failure.
const (
	CodeInvalid     = "invalid"     // 400: bad name, option, JSON or argument
	CodeForbidden   = "forbidden"   // 403: peer is neither root nor in the socket's group
	CodeNotFound    = "not_found"   // 404: no such volume, snapshot or mount
	CodeExists      = "exists"      // 409: name already taken
	CodeInUse       = "in_use"      // 409: volume is mounted
	CodeTooLarge    = "too_large"   // 413: request body over MaxBodyBytes
	CodeUnavailable = "unavailable" // 503: daemon shutting down or store not open
	CodeInternal    = "internal"    // 500: anything else, including a handler panic
)

// Error is the body of every failed control API response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	// Status is the HTTP status; filled in by the client from the response, not sent.
	Status int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Status is the daemon's state.
type Status struct {
	Version   string    `json:"version"` // daemon build version
	API       string    `json:"api"`     // Version
	Ready     bool      `json:"ready"`   // store open and serving
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	Root      string    `json:"root"`
	Socket    string    `json:"socket"`
	MountRoot string    `json:"mount_root"`
	Volumes   int       `json:"volumes"`
	Mounts    int       `json:"mounts"` // live FUSE mounts (Docker's and volctl's)
}

// VolumeOptions are a volume's options as stored (sizes in bytes).
type VolumeOptions struct {
	Size        int64  `json:"size,omitempty"` // quota in bytes, 0 = none
	ChunkSize   int    `json:"chunk_size"`
	Compression string `json:"compression"`
	UID         uint32 `json:"uid"`
	GID         uint32 `json:"gid"`
	Mode        uint32 `json:"mode"` // permission bits of the root directory
	From        string `json:"from,omitempty"`
}

// Usage is what a volume holds before dedup.
type Usage struct {
	Bytes int64 `json:"bytes"`
	Files int64 `json:"files"`
}

// Volume is one volume. List fills Name, ID, CreatedAt, Options, Mounted and Mountpoint;
// Inspect fills everything.
type Volume struct {
	Name       string        `json:"name"`
	ID         string        `json:"id"`
	CreatedAt  time.Time     `json:"created_at"`
	Options    VolumeOptions `json:"options"`
	Mounted    bool          `json:"mounted"`
	Mountpoint string        `json:"mountpoint,omitempty"` // where the FUSE mount lives while mounted
	// MountIDs counts Docker's references per mount ID (the same ID may hold several).
	MountIDs map[string]int `json:"mount_ids,omitempty"`
	// Dirs lists directories volctl mounted this volume (or its snapshots) on.
	Dirs      []string   `json:"dirs,omitempty"`
	Usage     *Usage     `json:"usage,omitempty"`
	Snapshots []Snapshot `json:"snapshots,omitempty"`
	// Schedule is the volume's snapshot schedule (Inspect only; absent when it has none).
	Schedule *Schedule `json:"schedule,omitempty"`
}

// CreateVolumeRequest creates a volume; Options takes the same keys as `docker volume create -o`
// (size, from, chunk-size, compression, uid, gid, mode, and a schedule's snapshot-every,
// snapshot-keep, snapshot-keep-hourly, -daily, -weekly, -monthly).
type CreateVolumeRequest struct {
	Name    string            `json:"name"`
	Options map[string]string `json:"options,omitempty"`
}

// SetVolumeRequest changes options of an existing volume, mounted or not: size (a quota such as
// 20GiB, or none) and compression (none, s2, zstd; for data written from then on). A quota below
// the volume's usage is refused (CodeInvalid), and so is any other option.
type SetVolumeRequest struct {
	Options map[string]string `json:"options"`
}

// Snapshot is one read-only snapshot of a volume.
type Snapshot struct {
	Volume    string    `json:"volume"` // NAME~ID8 for a kept snapshot of a removed volume
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// RemovedAt is set on the kept snapshots of a removed volume: when the volume was removed.
	RemovedAt *time.Time `json:"removed_at,omitempty"`
	// Auto is set on snapshots the volume's schedule took (named auto-...); only those are
	// ever pruned.
	Auto bool `json:"auto,omitempty"`
}

// Schedule is a volume's snapshot schedule: a snapshot every Every, and the automatic ones
// pruned to those the keep rules keep (restic forget semantics: Keep the newest N, KeepHourly
// the newest of each of the N most recent hours with one, and so on, UTC; kept by any rule
// means kept). Every is empty when the volume has none. As a request (set), Volume, Last and
// Next are ignored.
type Schedule struct {
	Volume      string `json:"volume"`
	Every       string `json:"every"` // 15m, 1h, 1d: at least 1m
	Keep        int    `json:"keep,omitempty"`
	KeepHourly  int    `json:"keep_hourly,omitempty"`
	KeepDaily   int    `json:"keep_daily,omitempty"`
	KeepWeekly  int    `json:"keep_weekly,omitempty"`
	KeepMonthly int    `json:"keep_monthly,omitempty"`
	// Last is when the newest automatic snapshot was taken, Next when the next one is due.
	Last *time.Time `json:"last,omitempty"`
	Next *time.Time `json:"next,omitempty"`
}

// CreateSnapshotRequest names the new snapshot.
type CreateSnapshotRequest struct {
	Name string `json:"name"`
}

// Diff lists the paths (relative to the volume root, starting with "/") that differ between two
// states of a volume. Each list is sorted. A directory that was added or removed is listed along
// with everything under it.
type Diff struct {
	Volume   string   `json:"volume"`
	From     string   `json:"from"`
	To       string   `json:"to"` // "" = the live volume
	Added    []string `json:"added"`
	Modified []string `json:"modified"`
	Removed  []string `json:"removed"`
}

// VolumeUsage is one volume's line in DF.
type VolumeUsage struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
	Files int64  `json:"files"`
}

// DF is store-wide space accounting.
type DF struct {
	Volumes       []VolumeUsage `json:"volumes"` // sorted by name
	LogicalBytes  int64         `json:"logical_bytes"`
	UniqueBytes   int64         `json:"unique_bytes"`
	PhysicalBytes int64         `json:"physical_bytes"`
	Chunks        int64         `json:"chunks"`
	DedupRatio    float64       `json:"dedup_ratio"`
	DiskBytes     int64         `json:"disk_bytes"`
}

// GCResult reports what gc gave back.
type GCResult struct {
	DiskBytesBefore int64   `json:"disk_bytes_before"`
	DiskBytesAfter  int64   `json:"disk_bytes_after"`
	Seconds         float64 `json:"seconds"`
}

// FsckRequest asks for a check, with repair or not.
type FsckRequest struct {
	Repair bool `json:"repair"`
}

// FsckReport is the result of fsck. Clean is true when Problems is empty.
type FsckReport struct {
	Clean    bool     `json:"clean"`
	Problems []string `json:"problems"`
	Repaired []string `json:"repaired"`
	Damaged  []string `json:"damaged"`
}

// MountRequest mounts a volume ("VOLUME") or one of its snapshots ("VOLUME@SNAPSHOT", read-only)
// on Dir, an existing absolute directory on the daemon's host.
type MountRequest struct {
	Source string `json:"source"`
	Dir    string `json:"dir"`
	// Atime says when reads update atime: relatime, strictatime or noatime (what a read-only
	// mount asks for); "" leaves the volume's mode as it is (relatime when it was not mounted).
	// A live volume has one mode for all its mounts (they share one FUSE mount): that of its
	// latest mount that named one. Snapshots' atime never changes.
	Atime string `json:"atime,omitempty"`
}

// Mount is one volctl mount.
type Mount struct {
	Source   string `json:"source"`
	Volume   string `json:"volume"`
	Snapshot string `json:"snapshot,omitempty"`
	Dir      string `json:"dir"`
	ReadOnly bool   `json:"read_only"`
}

// UnmountRequest unmounts a directory mounted with Mount.
type UnmountRequest struct {
	Dir string `json:"dir"`
}

// HasCode reports whether err is (or wraps) an *Error with the given code.
func HasCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
