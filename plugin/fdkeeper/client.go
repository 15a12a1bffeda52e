package fdkeeper

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
)

// Client talks to a keeper. Safe for concurrent use: requests are serialized.
type Client struct {
	mu sync.Mutex
	c  *net.UnixConn
}

// Entry is one kept descriptor and its data.
type Entry struct {
	Key  string
	Data []byte
	FD   *os.File
}

// Dial connects to the keeper at path.
func Dial(path string) (*Client, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("fd keeper: %w", err)
	}
	return &Client{c: c}, nil
}

// Close disconnects; the keeper keeps what it holds.
func (cl *Client) Close() error { return cl.c.Close() }

// Put keeps a duplicate of fd under key with data, replacing what key held.
func (cl *Client) Put(key string, data any, fd *os.File) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return cl.call(message{Op: "put", Key: key, Data: b}, fd)
}

// Del drops what key held.
func (cl *Client) Del(key string) error { return cl.call(message{Op: "del", Key: key}, nil) }

func (cl *Client) call(m message, fd *os.File) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := send(cl.c, m, fd); err != nil {
		return fmt.Errorf("fd keeper %s: %w", m.Op, err)
	}
	r, rfd, err := recv(cl.c)
	if rfd != nil {
		rfd.Close()
	}
	if err != nil {
		return fmt.Errorf("fd keeper %s: %w", m.Op, err)
	}
	if r.Op == "error" {
		return fmt.Errorf("fd keeper %s: %s", m.Op, r.Err)
	}
	return nil
}

// List returns every kept entry, each with a descriptor of its own for the caller to close.
func (cl *Client) List() ([]Entry, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := send(cl.c, message{Op: "list"}, nil); err != nil {
		return nil, fmt.Errorf("fd keeper list: %w", err)
	}
	var out []Entry
	for {
		r, fd, err := recv(cl.c)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("fd keeper list: %w", err)
		}
		switch r.Op {
		case "end":
			return out, nil
		case "entry":
			if fd == nil {
				closeAll(out)
				return nil, errors.New("fd keeper list: an entry without its descriptor")
			}
			out = append(out, Entry{Key: r.Key, Data: r.Data, FD: fd})
		default:
			closeAll(out)
			return nil, fmt.Errorf("fd keeper list: %s", r.Err)
		}
	}
}

func closeAll(es []Entry) {
	for _, e := range es {
		e.FD.Close()
	}
}
