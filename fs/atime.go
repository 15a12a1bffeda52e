package fs

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/fusevol/fusevol/backend"
)

// Atime says when reads update a file's access time, as the mount options of those names do.
// The kernel leaves atime to a FUSE server (it never updates it itself) and answers reads from
// its page cache without asking, so the mount decides at open whether the open's first read
// updates atime, and opens such a file without FOPEN_KEEP_CACHE, which makes that read reach
// it. Directories' atime is not updated by reading them.
type Atime int32

const (
	// AtimeRelative (relatime, the default): when atime is not after mtime or ctime, or is a
	// day old.
	AtimeRelative Atime = iota
	// AtimeStrict (strictatime): at every open's first read; such opens do not keep the page
	// cache.
	AtimeStrict
	// AtimeNever (noatime, and what a read-only mount means): never.
	AtimeNever
)

var atimeNames = []string{AtimeRelative: "relatime", AtimeStrict: "strictatime", AtimeNever: "noatime"}

func (a Atime) String() string {
	if int(a) < len(atimeNames) {
		return atimeNames[a]
	}
	return fmt.Sprintf("Atime(%d)", int(a))
}

// ParseAtime reads an Atime by its mount option's name; "" is the default, relatime.
func ParseAtime(s string) (Atime, error) {
	if s == "" {
		return AtimeRelative, nil
	}
	for i, n := range atimeNames {
		if n == s {
			return Atime(i), nil
		}
	}
	return 0, fmt.Errorf("atime mode %q: want relatime, strictatime or noatime", s)
}

// SetAtime changes when reads through the mount update atime, for the opens that follow.
func (m *Mounted) SetAtime(a Atime) { m.f.atime.Store(int32(a)) }

// atimeStore is what updating atime needs of a view (atime.go).
type atimeStore interface {
	Touch(ctx context.Context, ino backend.Ino, atime int64) error
}

var _ atimeStore = (*backend.View)(nil)

// relatimeSpan is how old an atime relatime still updates.
const relatimeSpan = 24 * time.Hour

// atimeDue reports whether a read through an open of node id with flags should update atime.
func (f *fsys) atimeDue(id uint64, flags uint32) bool {
	mode := Atime(f.atime.Load())
	if mode == AtimeNever || f.ro || id>>slotShift != 0 || flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		return false
	}
	if mode == AtimeStrict {
		return true
	}
	a, err := f.settled(0, func() (backend.Attr, error) { return f.vol.GetAttr(f.ctx, backend.Ino(id&inoMask)) })
	if err != nil {
		return false // the read reports it
	}
	return a.Atime <= a.Mtime || a.Atime <= a.Ctime || time.Since(time.Unix(0, a.Atime)) >= relatimeSpan
}

// touch records a read of the file (of the mounted view: atimeDue) as its access time. The
// kernel asks for atime again after a read it sent.
func (f *fsys) touch(h *fileHandle) {
	if err := f.vol.Touch(f.ctx, h.ino, time.Now().UnixNano()); err != nil {
		f.log.Warn("update atime", "ino", h.ino, "err", err)
	}
}
