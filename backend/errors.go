package backend

import (
	"errors"
	"net/http"
	"syscall"
)

// Errors returned by the store. They are always wrapped with context, so test with errors.Is.
// What each one means at the daemon's two boundaries (the errno a FUSE caller sees, the control
// API's status and code) is said once, in classes below; fs and plugin derive their mappings
// from Classify and Errno. Every exported error must have an entry (errors_class_test.go checks).
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrNotDir      = errors.New("not a directory")
	ErrIsDir       = errors.New("is a directory")
	ErrNotEmpty    = errors.New("directory not empty")
	ErrInvalid     = errors.New("invalid argument")
	ErrReadOnly    = errors.New("read-only snapshot")
	ErrNoSpace     = errors.New("quota exceeded")
	ErrNameTooLong = errors.New("name too long")
	ErrNoData      = errors.New("no such attribute")
	ErrCorrupt     = errors.New("data integrity error")
	ErrInUse       = errors.New("in use")
	ErrTooManyLink = errors.New("too many links")
	ErrNotSupp     = errors.New("operation not supported")
	ErrClosed      = errors.New("store is closed")
	ErrPerm        = errors.New("operation not permitted")
)

// Class is what an error means to the callers of the store: the errno the kernel reports to a
// process using a mounted volume, and the HTTP status and error code of the control API
// (Code is one of plugin/api's Code* values).
type Class struct {
	Errno  syscall.Errno
	Status int
	Code   string
}

// Control API codes used below; plugin/api defines the same strings (a plugin test checks).
const (
	codeInvalid     = "invalid"
	codeNotFound    = "not_found"
	codeExists      = "exists"
	codeInUse       = "in_use"
	codeUnavailable = "unavailable"
	codeInternal    = "internal"
)

// Unclassified is the class of an error that is none of the store's: EIO, 500 internal.
var Unclassified = Class{syscall.EIO, http.StatusInternalServerError, codeInternal}

// classes lists every exported error, in the order Classify tests them (an error that wraps
// two of them gets the first one's class). An error with no control API class of its own is
// reported there as internal (500).
var classes = []struct {
	err error
	Class
}{
	{ErrNotFound, Class{syscall.ENOENT, http.StatusNotFound, codeNotFound}},
	{ErrExists, Class{syscall.EEXIST, http.StatusConflict, codeExists}},
	{ErrNotDir, Class{syscall.ENOTDIR, http.StatusInternalServerError, codeInternal}},
	{ErrIsDir, Class{syscall.EISDIR, http.StatusInternalServerError, codeInternal}},
	{ErrNotEmpty, Class{syscall.ENOTEMPTY, http.StatusInternalServerError, codeInternal}},
	{ErrInvalid, Class{syscall.EINVAL, http.StatusBadRequest, codeInvalid}},
	{ErrReadOnly, Class{syscall.EROFS, http.StatusInternalServerError, codeInternal}},
	{ErrNoSpace, Class{syscall.ENOSPC, http.StatusInternalServerError, codeInternal}},
	{ErrNameTooLong, Class{syscall.ENAMETOOLONG, http.StatusBadRequest, codeInvalid}},
	{ErrNoData, Class{syscall.ENODATA, http.StatusInternalServerError, codeInternal}},
	{ErrCorrupt, Class{syscall.EIO, http.StatusInternalServerError, codeInternal}},
	{ErrInUse, Class{syscall.EBUSY, http.StatusConflict, codeInUse}},
	{ErrTooManyLink, Class{syscall.EMLINK, http.StatusInternalServerError, codeInternal}},
	{ErrNotSupp, Class{syscall.EOPNOTSUPP, http.StatusInternalServerError, codeInternal}},
	{ErrClosed, Class{syscall.EIO, http.StatusServiceUnavailable, codeUnavailable}},
	// link(2) of a directory is EPERM (not EACCES, which is about search/write permission).
	{ErrPerm, Class{syscall.EPERM, http.StatusInternalServerError, codeInternal}},
}

// Errors returns every exported error of the store, in classification order.
func Errors() []error {
	errs := make([]error, len(classes))
	for i, c := range classes {
		errs[i] = c.err
	}
	return errs
}

// Classify returns the class of the first of the store's errors that err is or wraps, and
// whether there is one.
func Classify(err error) (Class, bool) {
	if err != nil {
		for _, c := range classes {
			if errors.Is(err, c.err) {
				return c.Class, true
			}
		}
	}
	return Unclassified, false
}

// Errno is the errno to report for err: 0 for nil; a syscall.Errno that err is or wraps
// as itself; else the errno of err's class (EIO for an error that is none of the store's).
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	c, _ := Classify(err)
	return c.Errno
}
