package plugin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fusevol/fusevol/fs/fusetest"
)

// fakeLookup resolves the names of the table below; anything else does not exist.
func fakeLookup(_ context.Context, host string) ([]net.IPAddr, error) {
	names := map[string][]string{
		"localhost":   {"127.0.0.1", "::1"},
		"lo6":         {"::1"},
		"db.example":  {"10.1.2.3"},
		"mixed":       {"127.0.0.1", "192.168.1.7"},
		"nothing.lan": {},
	}
	ips, ok := names[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []net.IPAddr
	for _, s := range ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

// The profiler's and the metrics' addresses are checked alike.
func TestParseLocalAddr(t *testing.T) {
	tests := []struct {
		addr    string
		network string
		want    string // the address listened on; for errors, part of the message
	}{
		{"", "", ""},
		{"127.0.0.1:6060", "tcp", "127.0.0.1:6060"},
		{"127.3.2.1:0", "tcp", "127.3.2.1:0"},
		{"[::1]:6060", "tcp", "[::1]:6060"},
		{"localhost:6060", "tcp", "127.0.0.1:6060"},
		{"lo6:6060", "tcp", "[::1]:6060"},
		{"/run/fusevol/debug.sock", "unix", "/run/fusevol/debug.sock"},
		{"0.0.0.0:6060", "", "0.0.0.0 is not a loopback address"},
		{"[::]:6060", "", ":: is not a loopback address"},
		{":6060", "", "listen on every interface"},
		{"10.0.0.1:6060", "", "10.0.0.1 is not a loopback address"},
		{"[fe80::1]:6060", "", "fe80::1 is not a loopback address"},
		{"db.example:6060", "", "10.1.2.3 is not a loopback address"},
		{"mixed:6060", "", "192.168.1.7 is not a loopback address"},
		{"nothing.lan:6060", "", "has no address"},
		{"unknown.invalid:6060", "", "resolve unknown.invalid"},
		{"127.0.0.1", "", "missing port"},
		{"127.0.0.1:http", "", `port "http" is not a number`},
		{"127.0.0.1:70000", "", "not a number from 0 to 65535"},
		{"debug.sock", "", "unix socket path"},
	}
	for _, what := range []string{"debug address", "metrics address"} {
		for _, tt := range tests {
			t.Run(what+"/"+tt.addr, func(t *testing.T) {
				got, err := parseLocalAddr(context.Background(), what, tt.addr, fakeLookup)
				if tt.network == "" && tt.want != "" {
					if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), what) {
						t.Fatalf("got %+v, %v; want an error of the %s containing %q", got, err, what, tt.want)
					}
					return
				}
				if err != nil || got.network != tt.network || got.address != tt.want {
					t.Fatalf("got %+v, %v; want %s %s", got, err, tt.network, tt.want)
				}
			})
		}
	}
}

// NewDaemon refuses a bad --debug-addr at startup, with the address in the message.
func TestNewDaemonRefusesDebugAddr(t *testing.T) {
	_, err := NewDaemon(Config{Root: t.TempDir(), DebugAddr: "0.0.0.0:6060"})
	if err == nil || !strings.Contains(err.Error(), `debug address "0.0.0.0:6060"`) {
		t.Fatalf("NewDaemon: %v; want the debug address refused", err)
	}
}

// goroutineDump fetches the profiler's goroutine list through c.
func goroutineDump(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	resp, err := c.Get(base + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("goroutine profile: status %d, %v: %s", resp.StatusCode, err, body)
	}
	return string(body)
}

// The profiler serves pprof on TCP loopback and on a unix socket, lists the daemon's own
// goroutines, serves nothing else, and is gone once the daemon stops.
func TestDebugServer(t *testing.T) {
	for _, tt := range []struct {
		name string
		addr func(root string) string
	}{
		{"tcp", func(string) string { return "127.0.0.1:0" }},
		{"unix", func(root string) string { return filepath.Join(root, "debug", "pprof.sock") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := fusetest.TempRoot(t, "fusevol-debug-")
			td := startDaemon(t, root, func(c *Config) { c.DebugAddr = tt.addr(root) })
			addr := td.DebugAddr()
			c, base := http.DefaultClient, "http://"+addr
			if tt.name == "unix" {
				c, base = fusetest.UnixHTTP(addr), "http://localhost"
				fi, err := os.Lstat(addr)
				if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
					t.Fatalf("debug socket %s: %v, %v; want a socket of mode 0600", addr, fi.Mode(), err)
				}
			}
			if dump := goroutineDump(t, c, base); !strings.Contains(dump, "plugin.(*Daemon).Run") {
				t.Errorf("goroutine profile lists no daemon goroutine:\n%s", dump)
			}
			resp, err := c.Get(base + "/fusevol/v1/status")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("the profiler answers %s outside /debug/pprof/", resp.Status)
			}
			td.stop(t)
			c.CloseIdleConnections()
			if _, err := c.Get(base + "/debug/pprof/"); err == nil {
				t.Error("the profiler still answers after the daemon stopped")
			}
			if tt.name == "unix" {
				if _, err := os.Lstat(addr); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("debug socket left behind: %v", err)
				}
			}
		})
	}
}

// A debug socket whose directory others could write in (so could swap the socket for something
// else) is refused when the daemon starts, before it listens on its main socket.
func TestDebugSocketDirectory(t *testing.T) {
	for _, tt := range []struct {
		name string
		prep func(dir string) error
		want string
	}{
		{"world-writable", func(d string) error { return os.Chmod(d, 0o777) }, "writable by no one else"},
		{"group-writable", func(d string) error { return os.Chmod(d, 0o770) }, "writable by no one else"},
		{"owned by another user", func(d string) error { return os.Chown(d, 65534, 65534) }, "must be owned by uid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "owned by another user" {
				fusetest.RequireRoot(t, "chown a directory to another user")
			}
			root := t.TempDir()
			dir := filepath.Join(root, "dbg")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := tt.prep(dir); err != nil {
				t.Fatal(err)
			}
			d, err := NewDaemon(Config{Root: root, Socket: filepath.Join(root, "d.sock"), DebugAddr: filepath.Join(dir, "pprof.sock")})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := d.Run(ctx); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v; want an error containing %q", err, tt.want)
			}
			if _, err := os.Lstat(filepath.Join(root, "d.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("main socket created although the daemon refused to start: %v", err)
			}
		})
	}
}

// On a unix socket the profiler serves only the daemon's own user, whatever the socket's mode.
func TestDebugHandlerPeer(t *testing.T) {
	h := debugHandler(true, slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		name string
		ctx  context.Context
		want int
	}{
		{"own user", context.WithValue(context.Background(), peerKey{}, peer{uid: uint32(os.Geteuid()), known: true}), http.StatusOK},
		{"other user", context.WithValue(context.Background(), peerKey{}, peer{uid: uint32(os.Geteuid()) + 1000, known: true}), http.StatusForbidden},
		{"unknown peer", context.Background(), http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r, _ := http.NewRequestWithContext(tt.ctx, http.MethodGet, "http://localhost/debug/pprof/", nil)
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
		})
	}
}
