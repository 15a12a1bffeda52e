package repository

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Storage is where a repository keeps its objects: a flat namespace of names made of
// '/'-separated parts ("chunks/ab/abcd…", "backups/db/nightly-1"). Dir implements it on a local
// directory; an object store (S3) can implement it as well.
type Storage interface {
	// Put stores what r yields under name, atomically and durably: once Put returns nil the
	// object survives a crash whole, and until then readers see the old object or none. When r
	// fails, nothing is stored.
	Put(ctx context.Context, name string, r io.Reader) error
	// Get opens the object name; a missing one is an error wrapping fs.ErrNotExist.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the names of the objects under prefix (a directory-like prefix ending in '/'),
	// sorted. Objects a Put has not finished are not listed.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes the object name durably; a missing one is not an error.
	Delete(ctx context.Context, name string) error
	// Lock takes the repository's lock, shared (backup, restore, check) or exclusive (forget,
	// prune), waiting for it until ctx ends. A dead holder's lock goes with it.
	Lock(ctx context.Context, exclusive bool) (unlock func(), err error)
}

// tmpPrefix starts the name of a file a Put is writing; such a file left by a dead process is
// garbage that prune deletes.
const tmpPrefix = ".tmp-"

// Dir is a Storage in a local directory: an object is a file, written to a temporary file in
// its directory, fsynced, renamed into place, and its directory fsynced (and any directory
// Put made, in its parent).
type Dir struct {
	root string
	mu   sync.Mutex
	// durable holds the directories this process made sure of (made, or found, and fsynced in
	// their parent): one found might be one a killed process made and never fsynced in.
	durable map[string]bool
}

// NewDir is the Storage in directory root, which must exist.
func NewDir(root string) (*Dir, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", root)
	}
	return &Dir{root: root, durable: map[string]bool{}}, nil
}

func (d *Dir) path(name string) (string, error) {
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, tmpPrefix) {
			return "", fmt.Errorf("bad object name %q", name)
		}
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

// Put implements Storage.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader) (err error) {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := d.mkdirs(dir); err != nil {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return syncDir(dir)
}

// mkdirs makes dir and its missing parents below the root, each durable in its parent.
func (d *Dir) mkdirs(dir string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mkdirsLocked(dir)
}

func (d *Dir) mkdirsLocked(dir string) error {
	if dir == d.root || d.durable[dir] {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := d.mkdirsLocked(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	d.durable[dir] = true
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Get implements Storage.
func (d *Dir) Get(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// List implements Storage.
func (d *Dir) List(ctx context.Context, prefix string) ([]string, error) {
	base := d.root
	if prefix != "" {
		var err error
		if base, err = d.path(strings.TrimSuffix(prefix, "/")); err != nil {
			return nil, err
		}
	}
	var names []string
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == base {
			return fs.SkipAll
		}
		if err != nil || e.IsDir() {
			return err
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(d.root, p)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	return names, err
}

// Delete implements Storage.
func (d *Dir) Delete(_ context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return syncDir(filepath.Dir(p))
}

// leftovers lists the temporary files of Puts that never finished (their writer died).
func (d *Dir) leftovers() ([]string, error) {
	var out []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasPrefix(e.Name(), tmpPrefix) {
			out = append(out, p)
		}
		return err
	})
	return out, err
}

// removeLeftovers deletes what leftovers lists; only under the exclusive lock, when no Put
// can be running.
func (d *Dir) removeLeftovers() (int, error) {
	files, err := d.leftovers()
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	return len(files), err
}

// lockFile is the file Dir's lock is an flock(2) of: the kernel drops it with its holder.
const lockFile = "lock"

// Lock implements Storage.
func (d *Dir) Lock(ctx context.Context, exclusive bool) (func(), error) {
	f, err := os.OpenFile(filepath.Join(d.root, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", d.root, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s (held by another backup, restore or prune): %w", d.root, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
