package fs

import (
	"github.com/fusevol/fusevol/backend"
)

// Volume is what a mount needs from a backend view: every role the parts of fs consume,
// each declared beside its consumer. It is the one composite, because Mount hands the
// view to fsys, which dispatches each kernel request to the view of the node's slot and so
// may use any role; everything below fsys takes only the role it calls. *backend.View
// implements it.
type Volume interface {
	viewInfo    // mount.go: Mount, newFsys
	attrStore   // entries.go, dirs.go, snapshots.go
	namespace   // entries.go, fsys.go (orphan reclaim)
	dirLister   // dirs.go
	xattrStore  // xattrs.go
	fileData    // writeback.go (includes chunkReader, cache.go)
	fileSpace   // files.go
	rangeCloner // copy.go
	syncer      // dirs.go, files.go: fsync
	quotaSource // quota.go, dirs.go: statfs
	atimeStore  // atime.go
}

var _ Volume = (*backend.View)(nil)
