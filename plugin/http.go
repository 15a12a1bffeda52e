package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/fusevol/fusevol/plugin/api"
)

// handler is everything served on the socket: Docker's protocol, the control API, and JSON
// errors for unknown paths and panics.
func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	d.registerDocker(mux)
	d.registerControl(mux)
	d.registerSendReceive(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		msg := fmt.Sprintf("unknown endpoint %s %s", r.Method, r.URL.Path)
		if isControl(r) {
			writeAPIError(w, api.Errorf(api.CodeNotFound, "%s", msg), http.StatusNotFound)
			return
		}
		writeDockerError(w, http.StatusNotFound, http.StatusNotFound, msg)
	})
	return d.recoverPanics(d.logRequests(d.checkPeer(mux)))
}

// checkPeer answers 403 to a caller the endpoint does not serve (see socket.go: the control API
// serves root and --group, everything else root only), whatever the socket's mode let connect.
func (d *Daemon) checkPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		check := rootOnly
		if isControl(r) {
			check = d.allowed
		}
		err := check(r.Context())
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		p, _ := peerOf(r.Context())
		d.log.Warn("request refused", "path", r.URL.Path, "uid", p.uid, "pid", p.pid, "err", err)
		msg := "permission denied: " + err.Error()
		if isControl(r) {
			writeAPIError(w, api.Errorf(api.CodeForbidden, "%s", msg), http.StatusForbidden)
			return
		}
		writeDockerError(w, http.StatusForbidden, http.StatusForbidden, msg)
	})
}

func isControl(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, api.Prefix+"/") }

// recoverPanics turns a handler panic into a 500 with a message; the daemon keeps serving.
func (d *Daemon) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil || p == http.ErrAbortHandler {
				if p != nil {
					panic(p)
				}
				return
			}
			d.log.Error("handler panic", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			msg := fmt.Sprintf("internal error in %s: %v", r.URL.Path, p)
			if isControl(r) {
				writeAPIError(w, api.Errorf(api.CodeInternal, "%s", msg), http.StatusInternalServerError)
				return
			}
			writeDocker(w, http.StatusInternalServerError, volume.ErrorResponse{Err: msg})
		}()
		next.ServeHTTP(w, r)
	})
}

// statusWriter records, for logRequests, the answer's status and, for an error answer, its text
// and class: the status the error has by its kind (apiError), which for Docker's protocol is not
// the status on the wire (dockerd gets 500 for every error).
type statusWriter struct {
	http.ResponseWriter
	status int
	err    string
	class  int
}

// noteError tells logRequests which error the answer carries and its class.
func noteError(w http.ResponseWriter, msg string, class int) {
	if sw, ok := w.(*statusWriter); ok {
		sw.err, sw.class = msg, class
	}
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (d *Daemon) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		// Errors of the daemon or the store are warnings; the client's (a bad name, a missing
		// volume: dockerd asks Get before every Create) are routine.
		class, lvl := sw.class, slog.LevelDebug
		if class == 0 {
			class = sw.status
		}
		if class >= 500 {
			lvl = slog.LevelWarn
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", sw.status,
			"took", time.Since(start).Round(time.Microsecond)}
		if sw.err != "" {
			attrs = append(attrs, "err", sw.err)
		}
		d.log.Log(r.Context(), lvl, "request", attrs...)
	})
}

// errBodyTooLarge and errMalformed classify request bodies that cannot be decoded.
var (
	errBodyTooLarge = errors.New("request body too large")
	errMalformed    = errors.New("malformed request")
)

// decodeBody reads a JSON body of at most api.MaxBodyBytes into v. An empty body leaves v zero
// (dockerd sends none to Plugin.Activate and may send none for List).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, api.MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: over %d bytes", errBodyTooLarge, api.MaxBodyBytes)
		}
		return fmt.Errorf("%w: read body: %v", errMalformed, err)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

func bodyStatus(err error) int {
	if errors.Is(err, errBodyTooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Readable by both protocols' clients: dockerd reads Err, plugin/client reads error.
		msg := "encode response: " + err.Error()
		status = http.StatusInternalServerError
		data, _ = json.Marshal(map[string]string{"Err": msg, "error": msg, "code": api.CodeInternal})
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}
