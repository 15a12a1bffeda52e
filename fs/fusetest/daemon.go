package fusetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// StartTimeout is how long a daemon or program may take to answer after it started.
const StartTimeout = 60 * time.Second

// Daemon is a daemon's Run (plugin.(*Daemon).Run) running in this process.
type Daemon struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Go runs run in a goroutine with a context that Stop cancels.
func Go(run func(context.Context) error) *Daemon {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cancel: cancel, done: make(chan struct{})}
	go func() { d.err = run(ctx); close(d.done) }()
	return d
}

// StartDaemon runs run (a daemon's Run) in a goroutine, waits until sock accepts connections and
// stops it when the test ends: Run must then return nil within grace.
func StartDaemon(t testing.TB, sock string, grace time.Duration, run func(context.Context) error) *Daemon {
	t.Helper()
	d := Go(run)
	t.Cleanup(func() { d.Stop(t, grace) })
	WaitSocket(t, sock, d.done)
	return d
}

// Done is closed once Run has returned.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is what Run returned, once Done is closed.
func (d *Daemon) Err() error { return d.err }

// Stop cancels Run's context and fails the test unless Run returns nil within grace. Stopping
// twice is fine.
func (d *Daemon) Stop(t testing.TB, grace time.Duration) {
	t.Helper()
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case <-d.done:
		if d.err != nil {
			t.Errorf("daemon Run returned %v, want nil", d.err)
		}
	case <-time.After(grace):
		t.Fatalf("daemon did not stop within %v", grace)
	}
}

// WaitSocket waits until the Unix socket sock accepts connections, failing the test if done
// (nil for none) closes first or StartTimeout passes.
func WaitSocket(t testing.TB, sock string, done <-chan struct{}) {
	t.Helper()
	err := poll(done, func() error {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("socket %s: %v", sock, err)
	}
}

// WaitReady waits until the daemon on sock reports its store open, failing the test if done
// (nil for none) closes first or StartTimeout passes.
func WaitReady(t testing.TB, sock string, done <-chan struct{}) {
	t.Helper()
	if err := poll(done, ready(sock)); err != nil {
		t.Fatalf("daemon on %s: %v", sock, err)
	}
}

func ready(sock string) func() error {
	c := client.New(sock)
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.Status(ctx)
		if err == nil && !st.Ready {
			err = errors.New("store not open yet")
		}
		return err
	}
}

// poll calls ok every 20 ms until it returns nil, done closes or StartTimeout passes.
func poll(done <-chan struct{}, ok func() error) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return errors.New("exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %v", StartTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// UnixHTTP is an HTTP client whose every request goes to the Unix socket sock.
func UnixHTTP(sock string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			MaxIdleConnsPerHost: 64,
		},
		Timeout: 2 * time.Minute,
	}
}

// StatusAnswer asks the daemon on sock for its status, as a helper process running as another
// user does, and says how that went: "ok", the control API's error code, "EACCES" when
// connect(2) was refused or "error", then (on failure) a line with the error.
func StatusAnswer(sock string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.New(sock).Status(ctx)
	var e *api.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &e):
		return e.Code + "\n" + e.Message
	case strings.Contains(err.Error(), "permission denied"): // connect(2) on the socket
		return "EACCES\n" + err.Error()
	default:
		return "error\n" + err.Error()
	}
}
