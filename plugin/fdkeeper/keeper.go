// Package fdkeeper holds open file descriptors for a process that may die: the FUSE connections
// of the daemon's mounts, so that a restarted (or crashed and restarted) daemon finds them and
// serves them again (fs.Resume) while the mounts never go away.
//
// The keeper is a small process of its own (`volctl fd-keeper`), started by the daemon in a
// session of its own so that neither a signal to the daemon's process group nor the daemon's
// death ends it. It keeps, per key, one descriptor and a small blob (the mount's state), on
// a SOCK_SEQPACKET unix socket that only its own user may use (SO_PEERCRED).
//
// Invariants:
//   - The keeper never reads or writes the descriptors it holds, so it cannot answer or lose a
//     request; it only keeps the connection alive.
//   - An entry goes when its owner deletes it or when its descriptor reports an error (the
//     FUSE connection ended: unmounted or aborted), never otherwise.
//   - The keeper exits once it holds nothing and no client is connected.
package fdkeeper

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// message is one request or reply on the socket; a put and each listed entry carry their
// descriptor as SCM_RIGHTS.
type message struct {
	Op   string          `json:"op"` // put, del, list; replies: entry, end, error
	Key  string          `json:"key,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	Err  string          `json:"err,omitempty"`
}

// maxMessage bounds a message; a mount's state is a few hundred bytes.
const maxMessage = 1 << 20

type entry struct {
	data []byte
	fd   *os.File
}

// Keeper is the keeper's state; Serve runs it.
type Keeper struct {
	log     *slog.Logger
	mu      sync.Mutex
	entries map[string]entry
	clients int
}

// New returns an empty keeper.
func New(log *slog.Logger) *Keeper {
	return &Keeper{log: log, entries: map[string]entry{}}
}

// Listen makes the keeper's socket at path, replacing a stale one.
func Listen(path string) (*net.UnixListener, error) {
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("fd keeper: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("fd keeper: %w", err)
	}
	return ln, nil
}

// Serve answers clients on ln until it holds nothing and has had no client for idle.
func (k *Keeper) Serve(ln *net.UnixListener, idle time.Duration) error {
	defer ln.Close()
	go k.dropDead()
	for {
		_ = ln.SetDeadline(time.Now().Add(idle))
		c, err := ln.AcceptUnix()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if k.idle() {
				k.log.Info("fd keeper: nothing held and no client; exiting")
				return nil
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("fd keeper: %w", err)
		}
		if !sameUser(c) {
			k.log.Warn("fd keeper: connection from another user refused")
			c.Close()
			continue
		}
		k.mu.Lock()
		k.clients++
		k.mu.Unlock()
		go k.serveConn(c)
	}
}

func (k *Keeper) idle() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries) == 0 && k.clients == 0
}

func sameUser(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	return err == nil && cred != nil && int(cred.Uid) == os.Geteuid()
}

func (k *Keeper) serveConn(c *net.UnixConn) {
	defer func() {
		c.Close()
		k.mu.Lock()
		k.clients--
		k.mu.Unlock()
	}()
	for {
		m, fd, err := recv(c)
		if err != nil {
			return
		}
		if err := k.handle(c, m, fd); err != nil {
			k.log.Warn("fd keeper: request failed", "op", m.Op, "key", m.Key, "err", err)
			if send(c, message{Op: "error", Err: err.Error()}, nil) != nil {
				return
			}
		}
	}
}

func (k *Keeper) handle(c *net.UnixConn, m message, fd *os.File) error {
	switch m.Op {
	case "put":
		if fd == nil || m.Key == "" {
			return errors.New("put needs a key and a descriptor")
		}
		k.mu.Lock()
		if old, ok := k.entries[m.Key]; ok {
			old.fd.Close()
		}
		k.entries[m.Key] = entry{data: m.Data, fd: fd}
		k.mu.Unlock()
		return send(c, message{Op: "end"}, nil)
	case "del":
		k.mu.Lock()
		if old, ok := k.entries[m.Key]; ok {
			old.fd.Close()
			delete(k.entries, m.Key)
		}
		k.mu.Unlock()
		return send(c, message{Op: "end"}, nil)
	case "list":
		k.mu.Lock()
		defer k.mu.Unlock()
		for key, e := range k.entries {
			if err := send(c, message{Op: "entry", Key: key, Data: e.data}, e.fd); err != nil {
				return err
			}
		}
		return send(c, message{Op: "end"}, nil)
	}
	if fd != nil {
		fd.Close()
	}
	return fmt.Errorf("unknown op %q", m.Op)
}

// dropDead forgets entries whose descriptor reports an error: for /dev/fuse, a connection that
// ended (unmounted or aborted), whose descriptor would otherwise be kept for nothing.
func (k *Keeper) dropDead() {
	for range time.Tick(2 * time.Second) {
		k.mu.Lock()
		for key, e := range k.entries {
			pfd := []unix.PollFd{{Fd: int32(e.fd.Fd()), Events: unix.POLLIN}}
			if n, err := unix.Poll(pfd, 0); err == nil && n > 0 && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				k.log.Info("fd keeper: connection ended; entry dropped", "key", key)
				e.fd.Close()
				delete(k.entries, key)
			}
		}
		k.mu.Unlock()
	}
}

func send(c *net.UnixConn, m message, fd *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

func recv(c *net.UnixConn) (message, *os.File, error) {
	buf, oob := make([]byte, maxMessage), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, nil, err
	}
	if n == 0 {
		return message{}, nil, errors.New("connection closed")
	}
	var fd *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil && len(msgs) > 0 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil {
				for i, f := range fds {
					unix.CloseOnExec(f)
					if i == 0 {
						fd = os.NewFile(uintptr(f), "kept")
					} else {
						unix.Close(f)
					}
				}
			}
		}
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		if fd != nil {
			fd.Close()
		}
		return message{}, nil, fmt.Errorf("bad message: %w", err)
	}
	return m, fd, nil
}
