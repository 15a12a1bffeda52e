package plugin

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recordLog keeps every log record, for tests that check what the daemon logs.
type recordLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *recordLog) WithGroup(string) slog.Handler            { return l }

func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// request returns the level and attributes of the last "request" line logged for path.
func (l *recordLog) request(t *testing.T, path string) (slog.Level, map[string]string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.records) - 1; i >= 0; i-- {
		r := l.records[i]
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		if r.Message == "request" && attrs["path"] == path {
			return r.Level, attrs
		}
	}
	t.Fatalf("no request line logged for %s", path)
	return 0, nil
}

// TestRequestLogs: an answer with a server-side error (5xx) is a warning that gives the error's
// text, on both protocols; Docker's routine Get of a volume that does not exist yet (it asks
// before every Create) is logged at debug level, with its error too.
func TestRequestLogs(t *testing.T) {
	log := &recordLog{}
	td := startDaemon(t, "", func(c *Config) { c.Logger = slog.New(log) })
	td.fails(t, "VolumeDriver.Get", `{"Name":"notyet"}`, "not found")
	if lvl, attrs := log.request(t, "/VolumeDriver.Get"); lvl != slog.LevelDebug || !strings.Contains(attrs["err"], "not found") {
		t.Errorf("Get of a missing volume logged at %v with %v; want DEBUG with the error", lvl, attrs)
	}

	// A daemon that is shutting down answers every request with an error of its own.
	d, err := NewDaemon(Config{Root: t.TempDir(), Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	close(d.stop)
	h := d.handler()
	for _, path := range []string{"/VolumeDriver.Get", "/fusevol/v1/volumes"} {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"Name":"v"}`))
		if path == "/fusevol/v1/volumes" {
			req.Method = http.MethodGet
		}
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, peer{known: true}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 500 {
			t.Fatalf("%s: status %d, want 5xx", path, rec.Code)
		}
		lvl, attrs := log.request(t, path)
		if lvl != slog.LevelWarn || !strings.Contains(attrs["err"], "shutting down") {
			t.Errorf("%s answered %d, logged at %v with %v; want WARN with the error's text", path, rec.Code, lvl, attrs)
		}
	}
}
