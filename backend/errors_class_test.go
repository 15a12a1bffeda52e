package backend

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// exportedErrors is every exported error of the package with the errno a FUSE caller must see.
// TestErrorClasses fails when backend's source declares an Err* variable missing here.
var exportedErrors = map[string]struct {
	err   error
	errno syscall.Errno
}{
	"ErrNotFound":    {ErrNotFound, syscall.ENOENT},
	"ErrExists":      {ErrExists, syscall.EEXIST},
	"ErrNotDir":      {ErrNotDir, syscall.ENOTDIR},
	"ErrIsDir":       {ErrIsDir, syscall.EISDIR},
	"ErrNotEmpty":    {ErrNotEmpty, syscall.ENOTEMPTY},
	"ErrInvalid":     {ErrInvalid, syscall.EINVAL},
	"ErrReadOnly":    {ErrReadOnly, syscall.EROFS},
	"ErrNoSpace":     {ErrNoSpace, syscall.ENOSPC},
	"ErrNameTooLong": {ErrNameTooLong, syscall.ENAMETOOLONG},
	"ErrNoData":      {ErrNoData, syscall.ENODATA},
	"ErrCorrupt":     {ErrCorrupt, syscall.EIO},
	"ErrInUse":       {ErrInUse, syscall.EBUSY},
	"ErrTooManyLink": {ErrTooManyLink, syscall.EMLINK},
	"ErrNotSupp":     {ErrNotSupp, syscall.EOPNOTSUPP},
	"ErrClosed":      {ErrClosed, syscall.EIO},
	"ErrPerm":        {ErrPerm, syscall.EPERM}, // link(2) of a directory
}

// declaredErrors parses the package's non-test sources for exported package-level Err* variables.
func declaredErrors(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, f)
	}
	var names []string
	for _, f := range parsed {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				for _, id := range spec.(*ast.ValueSpec).Names {
					if id.IsExported() && strings.HasPrefix(id.Name, "Err") {
						names = append(names, id.Name)
					}
				}
			}
		}
	}
	sort.Strings(names)
	return names
}

func TestErrorClasses(t *testing.T) {
	names := declaredErrors(t)
	if len(names) == 0 {
		t.Fatal("found no exported Err* variables in the package source")
	}
	for _, n := range names {
		if _, ok := exportedErrors[n]; !ok {
			t.Errorf("%s is declared but not in exportedErrors (and maybe not in classes): classify it in errors.go", n)
		}
	}
	if len(names) != len(exportedErrors) {
		t.Errorf("source declares %d exported errors %v; exportedErrors lists %d", len(names), names, len(exportedErrors))
	}
	if got := len(Errors()); got != len(names) {
		t.Errorf("classes has %d entries; the source declares %d exported errors", got, len(names))
	}
	for n, e := range exportedErrors {
		if k := count(Errors(), e.err); k != 1 {
			t.Errorf("%s has %d entries in classes, want 1", n, k)
		}
		wrapped := fmt.Errorf("some context: %w", e.err)
		c, ok := Classify(wrapped)
		if !ok {
			t.Errorf("%s: no class", n)
			continue
		}
		if c.Errno == 0 || c.Status < 400 || c.Code == "" {
			t.Errorf("%s: incomplete class %+v", n, c)
		}
		if got := Errno(wrapped); got != e.errno {
			t.Errorf("Errno(%s) = %v (%d), want %v (%d)", n, got, got, e.errno, e.errno)
		}
	}
	if c, ok := Classify(errors.New("other")); ok || c != Unclassified || Errno(errors.New("other")) != syscall.EIO {
		t.Errorf("an error of no class: %+v, %v", c, ok)
	}
	if Errno(nil) != 0 {
		t.Errorf("Errno(nil) = %v", Errno(nil))
	}
	if got := Errno(fmt.Errorf("guard: %w", syscall.ENOSPC)); got != syscall.ENOSPC {
		t.Errorf("Errno of a wrapped errno = %v, want ENOSPC", got)
	}
	// The control API classes that clients and tests rely on.
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{ErrInvalid, http.StatusBadRequest, "invalid"},
		{ErrNameTooLong, http.StatusBadRequest, "invalid"},
		{ErrNotFound, http.StatusNotFound, "not_found"},
		{ErrExists, http.StatusConflict, "exists"},
		{ErrInUse, http.StatusConflict, "in_use"},
		{ErrClosed, http.StatusServiceUnavailable, "unavailable"},
		{ErrCorrupt, http.StatusInternalServerError, "internal"},
	} {
		if c, _ := Classify(tc.err); c.Status != tc.status || c.Code != tc.code {
			t.Errorf("Classify(%v) = %d %s, want %d %s", tc.err, c.Status, c.Code, tc.status, tc.code)
		}
	}
}

func count(errs []error, e error) int {
	k := 0
	for _, x := range errs {
		if x == e {
			k++
		}
	}
	return k
}
