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

// localAddr is where the profiling or the metrics server listens (Config.DebugAddr and
// Config.MetricsAddr, checked by parseLocalAddr): a loopback TCP address, its IP already resolved
// so that listening cannot resolve it elsewhere, or a unix socket path.
type localAddr struct {
	network string // "tcp" or "unix"; "" = no server
	address string
}

// lookupIPAddr resolves a host name (net.DefaultResolver.LookupIPAddr; tests pass their own).
type lookupIPAddr func(ctx context.Context, host string) ([]net.IPAddr, error)

const localAddrUsage = "want 127.0.0.1:PORT, [::1]:PORT, localhost:PORT or an absolute unix socket path"

// parseLocalAddr accepts a unix socket path (anything with a '/') or HOST:PORT where HOST is a
// loopback IP or a name all of whose addresses are loopback: the profiler shows the daemon's
// stacks and command line and lets its caller load the CPU, and the metrics name every volume,
// so neither may be reachable from another machine. what names the setting in errors.
func parseLocalAddr(ctx context.Context, what, addr string, lookup lookupIPAddr) (localAddr, error) {
	if addr == "" {
		return localAddr{}, nil
	}
	if strings.Contains(addr, "/") {
		abs, err := filepath.Abs(addr)
		if err != nil {
			return localAddr{}, fmt.Errorf("%s %q: %w", what, addr, err)
		}
		return localAddr{network: "unix", address: abs}, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return localAddr{}, fmt.Errorf("%s %q: %v: %s", what, addr, err, localAddrUsage)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return localAddr{}, fmt.Errorf("%s %q: port %q is not a number from 0 to 65535", what, addr, port)
	}
	if host == "" {
		return localAddr{}, fmt.Errorf("%s %q: no host would listen on every interface: %s", what, addr, localAddrUsage)
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		found, err := lookup(ctx, host)
		if err != nil {
			return localAddr{}, fmt.Errorf("%s %q: resolve %s: %w", what, addr, host, err)
		}
		ips = ips[:0]
		for _, a := range found {
			ips = append(ips, a.IP)
		}
		if len(ips) == 0 {
			return localAddr{}, fmt.Errorf("%s %q: %s has no address", what, addr, host)
		}
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return localAddr{}, fmt.Errorf("%s %q: %s is not a loopback address (only 127.0.0.0/8, ::1 or a unix socket are served)", what, addr, ip)
		}
	}
	return localAddr{network: "tcp", address: net.JoinHostPort(ips[0].String(), port)}, nil
}

// localServer is the profiling or the metrics server: an HTTP server of its own on a localAddr.
type localServer struct {
	srv  *http.Server
	ln   net.Listener
	addr localAddr
}

// listenDebug starts the profiling server (nil when none is configured).
func listenDebug(a localAddr, log *slog.Logger) (*localServer, error) {
	if a.network == "" {
		return nil, nil
	}
	s, err := serveLocal(a, "debug", debugHandler(a.network == "unix", log), log)
	if err != nil {
		return nil, err
	}
	log.Info("profiler listening", "addr", s.Addr(), "cpu_profile", s.profileURL())
	return s, nil
}

// serveLocal serves h on a (listenLocal; what names the server in errors).
func serveLocal(a localAddr, what string, h http.Handler, log *slog.Logger) (*localServer, error) {
	ln, err := listenLocal(a, what)
	if err != nil {
		return nil, err
	}
	s := &localServer{ln: ln, addr: a}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       withPeer,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go s.srv.Serve(ln)
	return s, nil
}

// listenLocal listens on a (the profiler's or the metrics' address; what says which in errors).
// A unix socket gets the rules of a private socket: its directory must belong to the daemon's
// user and be writable by nobody else (so the path cannot be swapped between listen and chmod),
// the socket is 0600, and ownUserOnly checks every connection's peer (which also covers the
// moment before chmod).
func listenLocal(a localAddr, what string) (net.Listener, error) {
	if a.network != "unix" {
		ln, err := net.Listen("tcp", a.address)
		if err != nil {
			return nil, fmt.Errorf("%s address: %w", what, err)
		}
		return ln, nil
	}
	path := a.address
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s socket directory: %w", what, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s socket directory: %w", what, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s socket directory %s: must be owned by uid %d and writable by no one else (mode %v)", what, dir, os.Geteuid(), fi.Mode().Perm())
	}
	ln, err := listenSocket(path, -1)
	if err != nil {
		return nil, fmt.Errorf("%s socket: %w", what, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s socket %s: chmod: %w", what, path, err)
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
	return ownUserOnly(mux, "profiler", log)
}

// ownUserOnly serves h to the daemon's own user only (the peer of a unix socket connection,
// withPeer); what names the server in the log.
func ownUserOnly(h http.Handler, what string, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := peerOf(r.Context())
		if err == nil && int(p.uid) != os.Geteuid() {
			err = fmt.Errorf("uid %d is not the daemon's user", p.uid)
		}
		if err != nil {
			log.Warn(what+" request refused", "uid", p.uid, "pid", p.pid, "err", err)
			http.Error(w, "permission denied: "+err.Error(), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Addr is the address listened on (the port chosen, for port 0) or the socket path.
func (s *localServer) Addr() string {
	if s.addr.network == "unix" {
		return s.addr.address
	}
	return s.ln.Addr().String()
}

// profileURL is a 30-second CPU profile's URL (on a unix socket, for curl --unix-socket).
func (s *localServer) profileURL() string {
	host := s.Addr()
	if s.addr.network == "unix" {
		host = "localhost"
	}
	return "http://" + host + "/debug/pprof/profile?seconds=30"
}

// close stops the server, cutting off requests still running (profiles), and removes its socket.
func (s *localServer) close() {
	if s == nil {
		return
	}
	s.srv.Close()
	if s.addr.network == "unix" {
		os.Remove(s.addr.address)
	}
}
