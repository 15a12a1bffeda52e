package fs

import (
	"errors"
	"syscall"

	"github.com/fusevol/fusevol/backend"
	"github.com/hanwen/go-fuse/v2/fuse"
)

var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{backend.ErrNotFound, syscall.ENOENT},
	{backend.ErrExists, syscall.EEXIST},
	{backend.ErrNotDir, syscall.ENOTDIR},
	{backend.ErrIsDir, syscall.EISDIR},
	{backend.ErrNotEmpty, syscall.ENOTEMPTY},
	{backend.ErrInvalid, syscall.EINVAL},
	{backend.ErrReadOnly, syscall.EROFS},
	{backend.ErrNoSpace, syscall.ENOSPC},
	{backend.ErrNameTooLong, syscall.ENAMETOOLONG},
	{backend.ErrNoData, syscall.ENODATA},
	{backend.ErrCorrupt, syscall.EIO},
	{backend.ErrInUse, syscall.EBUSY},
	{backend.ErrTooManyLink, syscall.EMLINK},
	{backend.ErrNotSupp, syscall.EOPNOTSUPP},
	{backend.ErrClosed, syscall.EIO},
}

// toErrno maps a backend (or fs) error to the errno the kernel reports to the caller.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	return syscall.EIO
}

// (*fsys).status converts err to a FUSE status, logging errors that are not expected results.
func (f *fsys) status(op string, err error) fuse.Status {
	en := toErrno(err)
	if en == syscall.EIO {
		f.log.Error("fs operation failed", "op", op, "err", err)
	}
	return fuse.Status(en)
}
