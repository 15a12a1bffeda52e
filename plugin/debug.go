package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof" // its init also registers on http.DefaultServeMux, which nothing here serves
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// debugAddr is where the profiling server listens (Config.DebugAddr, checked by parseDebugAddr):
// a loopback TCP address, its IP already resolved so that listening cannot resolve it elsewhere,
// or a unix socket path.
type debugAddr struct {
	network string // "tcp" or "unix"; "" = no debug server
	address string
}

// lookupIPAddr resolves a host name (net.DefaultResolver.LookupIPAddr; tests pass their own).
type lookupIPAddr func(ctx context.Context, host string) ([]net.IPAddr, error)

const debugAddrUsage = "want 127.0.0.1:PORT, [::1]:PORT, localhost:PORT or an absolute unix socket path"

// parseDebugAddr accepts a unix socket path (anything with a '/') or HOST:PORT where HOST is a
// loopback IP or a name all of whose addresses are loopback: the profiler shows the daemon's
// stacks and command line and lets its caller load the CPU, so it must not be reachable from
// another machine.
func parseDebugAddr(ctx context.Context, addr string, lookup lookupIPAddr) (debugAddr, error) {
	if addr == "" {
		return debugAddr{}, nil
	}
	if strings.Contains(addr, "/") {
		abs, err := filepath.Abs(addr)
		if err != nil {
			return debugAddr{}, fmt.Errorf("debug address %q: %w", addr, err)
		}
		return debugAddr{network: "unix", address: abs}, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return debugAddr{}, fmt.Errorf("debug address %q: %v: %s", addr, err, debugAddrUsage)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return debugAddr{}, fmt.Errorf("debug address %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if host == "" {
		return debugAddr{}, fmt.Errorf("debug address %q: no host would listen on every interface: %s", addr, debugAddrUsage)
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		found, err := lookup(ctx, host)
		if err != nil {
			return debugAddr{}, fmt.Errorf("debug address %q: resolve %s: %w", addr, host, err)
		}
		ips = ips[:0]
		for _, a := range found {
			ips = append(ips, a.IP)
		}
		if len(ips) == 0 {
			return debugAddr{}, fmt.Errorf("debug address %q: %s has no address", addr, host)
		}
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return debugAddr{}, fmt.Errorf("debug address %q: %s is not a loopback address (the profiler is served on 127.0.0.0/8, ::1 or a unix socket only)", addr, ip)
		}
	}
	return debugAddr{network: "tcp", address: net.JoinHostPort(ips[0].String(), port)}, nil
}

// debugServer serves net/http/pprof on its own mux.
type debugServer struct {
	srv  *http.Server
	ln   net.Listener
	addr debugAddr
}

// listenDebug starts the profiling server (nil when none is configured). A unix socket gets the
// rules of a private socket: its directory must belong to the daemon's user and be writable by
// nobody else (so the path cannot be swapped between listen and chmod), the socket is 0600, and
// every connection's peer must be the daemon's own user (which also covers the moment before
// chmod).
func listenDebug(a debugAddr, log *slog.Logger) (*debugServer, error) {
	if a.network == "" {
		return nil, nil
	}
	var ln net.Listener
	var err error
	if a.network == "unix" {
		ln, err = listenDebugSocket(a.address)
	} else if ln, err = net.Listen("tcp", a.address); err != nil {
		err = fmt.Errorf("debug address: %w", err)
	}
	if err != nil {
		return nil, err
	}
	s := &debugServer{ln: ln, addr: a}
	s.srv = &http.Server{
		Handler:           debugHandler(a.network == "unix", log),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       withPeer,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go s.srv.Serve(ln)
	log.Info("profiler listening", "addr", s.Addr(), "cpu_profile", s.profileURL())
	return s, nil
}

func listenDebugSocket(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create debug socket directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("debug socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("debug socket directory %s: must be owned by uid %d and writable by no one else (mode %v)", dir, os.Geteuid(), fi.Mode().Perm())
	}
	ln, err := listenSocket(path, -1)
	if err != nil {
		return nil, fmt.Errorf("debug socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("debug socket %s: chmod: %w", path, err)
	}
	return ln, nil
}

// debugHandler is net/http/pprof's handlers on a mux of their own; on a unix socket it serves the
// daemon's own user only.
func debugHandler(unix bool, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if !unix {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := peerOf(r.Context())
		if err == nil && int(p.uid) != os.Geteuid() {
			err = fmt.Errorf("uid %d is not the daemon's user", p.uid)
		}
		if err != nil {
			log.Warn("profiler request refused", "uid", p.uid, "pid", p.pid, "err", err)
			http.Error(w, "permission denied: "+err.Error(), http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Addr is the address listened on (the port chosen, for port 0) or the socket path.
func (s *debugServer) Addr() string {
	if s.addr.network == "unix" {
		return s.addr.address
	}
	return s.ln.Addr().String()
}

// profileURL is a 30-second CPU profile's URL (on a unix socket, for curl --unix-socket).
func (s *debugServer) profileURL() string {
	host := s.Addr()
	if s.addr.network == "unix" {
		host = "localhost"
	}
	return "http://" + host + "/debug/pprof/profile?seconds=30"
}

// close stops the server, cutting off profiles still running, and removes its socket.
func (s *debugServer) close() {
	if s == nil {
		return
	}
	s.srv.Close()
	if s.addr.network == "unix" {
		os.Remove(s.addr.address)
	}
}
