package client

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fusevol/fusevol/plugin/api"
)

// serve answers on a unix socket with h and returns a client for it.
func serve(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return New(sock)
}

// A stream the daemon stops short is an error with the daemon's reason, though bytes came;
// one without the daemon's summary (the daemon died) is an error too.
func TestSendStoppedShort(t *testing.T) {
	for _, tt := range []struct {
		name, trailer, value, want string
	}{
		{"error trailer", api.TrailerError, "send v@s: chunk 3: data integrity error", "data integrity error"},
		{"no summary", "", "", "without the daemon's summary"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", api.TrailerError+", "+api.TrailerSendStats)
				w.Write([]byte("FVSTREAM partial"))
				if tt.trailer != "" {
					w.Header().Set(tt.trailer, tt.value)
				}
			})
			var out bytes.Buffer
			_, err := c.Send(context.Background(), "v", "s", "", &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if out.String() != "FVSTREAM partial" {
				t.Errorf("copied %q", out.String())
			}
		})
	}
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", api.TrailerSendStats)
		w.Write([]byte("whole"))
		w.Header().Set(api.TrailerSendStats, `{"bytes":5,"chunks":1}`)
	})
	st, err := c.Send(context.Background(), "v", "s", "", &bytes.Buffer{})
	if err != nil || st.Bytes != 5 || st.Chunks != 1 {
		t.Fatalf("complete stream: %+v, %v", st, err)
	}
	if _, err := c.Send(context.Background(), "v", "..", "", &bytes.Buffer{}); !api.HasCode(err, api.CodeInvalid) {
		t.Errorf("a name that would leave the route: %v", err)
	}
}
