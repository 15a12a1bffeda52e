package fdkeeper

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func startKeeper(t *testing.T, idle time.Duration) (string, chan error) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "keeper.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- New(slog.New(slog.NewTextHandler(io.Discard, nil))).Serve(ln, idle) }()
	return sock, done
}

func dial(t *testing.T, sock string) *Client {
	t.Helper()
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeepAcrossClients: what one client put, a later client lists with a descriptor of the
// same open file (bytes written through it arrive at the pipe's other end), until deleted.
func TestKeepAcrossClients(t *testing.T) {
	sock, _ := startKeeper(t, time.Minute)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := dial(t, sock)
	if err := c.Put("a", map[string]int{"n": 1}, w); err != nil {
		t.Fatal(err)
	}
	w.Close() // the keeper's duplicate keeps the pipe's write end open
	c.Close()

	c = dial(t, sock)
	defer c.Close()
	es, err := c.List()
	if err != nil || len(es) != 1 || es[0].Key != "a" || string(es[0].Data) != `{"n":1}` {
		t.Fatalf("list = %+v, %v", es, err)
	}
	if _, err := es[0].FD.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	es[0].FD.Close()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(r, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read through the kept descriptor: %q %v", buf, err)
	}
	if err := c.Del("a"); err != nil {
		t.Fatal(err)
	}
	if es, err := c.List(); err != nil || len(es) != 0 {
		t.Fatalf("after del: %+v, %v", es, err)
	}
	// Every duplicate of the write end is closed now: the reader sees the end of the pipe.
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("pipe still open after del: %d %v", n, err)
	}
}

// TestDropsEndedAndExits: an entry whose descriptor reports an error (here a pipe's read end
// whose writer closed: POLLHUP, as /dev/fuse reports POLLERR once unmounted) is dropped, and the
// keeper, holding nothing and with no client, exits.
func TestDropsEndedAndExits(t *testing.T) {
	sock, done := startKeeper(t, 500*time.Millisecond)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, sock)
	if err := c.Put("gone", nil, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	c.Close()
	select {
	case err := <-done:
		t.Fatalf("keeper exited while holding an open entry: %v", err)
	case <-time.After(time.Second):
	}
	w.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("keeper did not drop the ended entry and exit")
	}
}

// TestBadRequests: a put without a descriptor and an unknown op are refused with an error,
// and the connection goes on serving.
func TestBadRequests(t *testing.T) {
	sock, _ := startKeeper(t, time.Minute)
	c := dial(t, sock)
	defer c.Close()
	if err := c.call(message{Op: "put", Key: "k"}, nil); err == nil {
		t.Error("put without a descriptor accepted")
	}
	if err := c.call(message{Op: "frob"}, nil); err == nil {
		t.Error("unknown op accepted")
	}
	if es, err := c.List(); err != nil || len(es) != 0 {
		t.Fatalf("list after bad requests: %+v, %v", es, err)
	}
}
