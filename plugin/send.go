package plugin

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

// registerSendReceive adds the two streaming routes of the control API (plugin/api/send.go).
// They are not controlCall handlers: their bodies are streams, not JSON, and no body limit
// applies to a receive (the store's quota and disk guard bound it).
func (d *Daemon) registerSendReceive(mux *http.ServeMux) {
	mux.HandleFunc(api.RouteSend, d.ctlSend)
	mux.HandleFunc(api.RouteReceive, d.ctlReceive)
}

// countingWriter tells whether anything reached the client.
type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (d *Daemon) ctlSend(w http.ResponseWriter, r *http.Request) {
	name, snap, from := r.PathValue("name"), r.PathValue("snapshot"), r.URL.Query().Get("from")
	fail := func(err error) {
		e, status := apiError(err)
		writeAPIError(w, e, status)
	}
	st, err := d.checkedStore(r.Context(), name)
	if err != nil {
		fail(err)
		return
	}
	for _, s := range []string{snap, from} {
		if s == from && s == "" {
			continue // a full stream
		}
		if err := backend.ValidateName(s); err != nil {
			fail(invalid("snapshot name %q: %v", s, err))
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", api.TrailerError+", "+api.TrailerSendStats)
	cw := &countingWriter{w: w}
	start := time.Now()
	stats, err := st.Send(r.Context(), cw, name, snap, from)
	if err != nil {
		if cw.n == 0 {
			fail(err)
			return
		}
		w.Header().Set(api.TrailerError, strings.Join(strings.Fields(err.Error()), " "))
		noteError(w, err.Error(), http.StatusInternalServerError)
		d.log.Warn("send stopped", "volume", name, "snapshot", snap, "from", from, "bytes", cw.n, "err", err)
		return
	}
	b, _ := json.Marshal(api.SendStats{Inodes: stats.Inodes, Chunks: stats.Chunks, Bodies: stats.Bodies,
		BodyBytes: stats.BodyBytes, Bytes: stats.Bytes})
	w.Header().Set(api.TrailerSendStats, string(b))
	d.log.Info("snapshot sent", "volume", name, "snapshot", snap, "from", from, "bytes", stats.Bytes,
		"bodies", stats.Bodies, "took", time.Since(start).Round(time.Millisecond))
}

// ctlReceive builds a volume or snapshot from the request's stream under the volume's lock:
// an incremental receive replaces the live state, so a mounted volume is refused.
func (d *Daemon) ctlReceive(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	out, err := d.receive(r, name)
	if err != nil {
		e, status := apiError(err)
		writeAPIError(w, e, status)
		return
	}
	writeJSON(w, http.StatusOK, "application/json", out)
}

func (d *Daemon) receive(r *http.Request, name string) (api.ReceiveResult, error) {
	ctx := r.Context()
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return api.ReceiveResult{}, err
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	if v.mnt != nil || v.liveRefs() > 0 {
		return api.ReceiveResult{}, errInUse(name, v)
	}
	force := r.URL.Query().Get("force")
	if force != "" && force != "true" && force != "false" {
		return api.ReceiveResult{}, invalid("force=%q: want true or false", force)
	}
	start := time.Now()
	s, err := st.Receive(ctx, r.Body, name, backend.ReceiveOptions{Force: force == "true"})
	if err != nil {
		return api.ReceiveResult{}, err // the store's error names the volume and snapshot
	}
	d.log.Info("snapshot received", "volume", name, "snapshot", s.Snapshot, "incremental", s.Incremental,
		"bytes", s.Bytes, "bodies", s.Bodies, "skipped", s.Skipped, "took", time.Since(start).Round(time.Millisecond))
	return api.ReceiveResult{Volume: s.Volume, Snapshot: s.Snapshot, Incremental: s.Incremental, Inodes: s.Inodes,
		Chunks: s.Chunks, Bodies: s.Bodies, BodyBytes: s.BodyBytes, Skipped: s.Skipped, Bytes: s.Bytes}, nil
}
