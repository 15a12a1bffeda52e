package fs

import (
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// toErrno maps a backend (or fs) error to the errno the kernel reports to the caller; the
// mapping is backend's (backend.Errno), an errno in err's chain standing for itself.
func toErrno(err error) syscall.Errno { return backend.Errno(err) }

// (*fsys).status converts err to a FUSE status, logging errors that are not expected results.
func (f *fsys) status(op string, err error) fuse.Status {
	en := toErrno(err)
	if en == syscall.EIO {
		f.log.Error("fs operation failed", "op", op, "err", err)
	}
	return fuse.Status(en)
}
