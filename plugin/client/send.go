package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	pathpkg "path"

	"github.com/fusevol/fusevol/plugin/api"
)

// Send copies the stream of volume@snapshot (incremental from volume@from unless from is "")
// into w and returns what the daemon says it sent. A stream the daemon could not finish is an
// error even when bytes were copied (the copy then lacks its trailer: receivers refuse it).
func (c *Client) Send(ctx context.Context, volume, snapshot, from string, w io.Writer) (api.SendStats, error) {
	q := url.Values{}
	if from != "" {
		q.Set("from", from)
	}
	resp, err := c.stream(ctx, http.MethodGet, snapPath(volume, snapshot)+"/send", q, nil)
	if err != nil {
		return api.SendStats{}, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return api.SendStats{}, fmt.Errorf("send %s@%s: %w", volume, snapshot, err)
	}
	if msg := resp.Trailer.Get(api.TrailerError); msg != "" {
		return api.SendStats{}, &api.Error{Code: api.CodeInternal, Message: msg, Status: resp.StatusCode}
	}
	var st api.SendStats
	if err := json.Unmarshal([]byte(resp.Trailer.Get(api.TrailerSendStats)), &st); err != nil {
		return st, fmt.Errorf("send %s@%s: the stream ended without the daemon's summary (daemon gone?): %w", volume, snapshot, err)
	}
	return st, nil
}

// Receive sends the stream read from r to the daemon, which builds volume from it (or, from
// an incremental stream, a new snapshot of volume), and returns what it built. force lets an
// incremental stream drop what volume changed since the stream's base.
func (c *Client) Receive(ctx context.Context, volume string, force bool, r io.Reader) (api.ReceiveResult, error) {
	var out api.ReceiveResult
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	resp, err := c.stream(ctx, http.MethodPost, "/volumes/"+url.PathEscape(volume)+"/receive", q, r)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out, fmt.Errorf("read response from %s: %w", c.socket, err)
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return out, fmt.Errorf("decode response from %s: %w", c.socket, err)
	}
	return out, nil
}

// stream sends a request whose body (if any) is a stream and returns a 2xx response for the
// caller to read; any other status is the daemon's error.
func (c *Client) stream(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	if p := api.Prefix + path; pathpkg.Clean(p) != p {
		return nil, &api.Error{Code: api.CodeInvalid, Message: fmt.Sprintf("invalid name in request path %q", path)}
	}
	u := "http://fusevol" + api.Prefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.socket, unwrapURLError(err))
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, decodeError(resp.StatusCode, data)
	}
	return resp, nil
}
