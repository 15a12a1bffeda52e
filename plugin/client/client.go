// Package client is the Go client of the fusevol control API (plugin/api) over the daemon's unix
// socket: one method per operation. Failures the daemon reports come back as *api.Error (use
// errors.As to read its Code); a daemon that cannot be reached gives an error wrapping
// ErrUnreachable that names the socket.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	pathpkg "path"
	"strings"
	"time"

	"github.com/fusevol/fusevol/plugin/api"
)

// ErrUnreachable wraps every failure to connect to the daemon's socket.
var ErrUnreachable = errors.New("daemon not reachable")

// Client talks to one daemon. Safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// New returns a client for the daemon listening on socket. Nothing is dialled until a call.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Status returns the daemon's state; it is the cheapest way to check that a daemon is running.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var out api.Status
	err := c.do(ctx, http.MethodGet, "/status", nil, nil, &out)
	return out, err
}

// ListVolumes returns every volume, sorted by name.
func (c *Client) ListVolumes(ctx context.Context) ([]api.Volume, error) {
	var out []api.Volume
	err := c.do(ctx, http.MethodGet, "/volumes", nil, nil, &out)
	return out, err
}

// CreateVolume creates a volume; options as for `docker volume create -o`.
func (c *Client) CreateVolume(ctx context.Context, name string, options map[string]string) (api.Volume, error) {
	var out api.Volume
	err := c.do(ctx, http.MethodPost, "/volumes", nil, api.CreateVolumeRequest{Name: name, Options: options}, &out)
	return out, err
}

// InspectVolume returns a volume with its usage, snapshots and mount state.
func (c *Client) InspectVolume(ctx context.Context, name string) (api.Volume, error) {
	var out api.Volume
	err := c.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// SetVolumeOptions changes a volume's settable options (api.SetVolumeRequest) and returns the
// volume as it is then; a mounted volume sees the change at once.
func (c *Client) SetVolumeOptions(ctx context.Context, name string, options map[string]string) (api.Volume, error) {
	var out api.Volume
	err := c.do(ctx, http.MethodPatch, "/volumes/"+url.PathEscape(name), nil, api.SetVolumeRequest{Options: options}, &out)
	return out, err
}

// RemoveVolume deletes a volume; its snapshots are kept (as NAME~ID8@SNAP, listed with
// RemovedAt) until removed. A mounted volume is refused (api.CodeInUse) unless force is set, in
// which case its mounts are dropped first.
func (c *Client) RemoveVolume(ctx context.Context, name string, force bool) error {
	return c.removeVolume(ctx, name, force, false)
}

// RemoveVolumeAndSnapshots deletes a volume and its snapshots; force as for RemoveVolume.
func (c *Client) RemoveVolumeAndSnapshots(ctx context.Context, name string, force bool) error {
	return c.removeVolume(ctx, name, force, true)
}

func (c *Client) removeVolume(ctx context.Context, name string, force, snapshots bool) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	if snapshots {
		q.Set("snapshots", "true")
	}
	return c.do(ctx, http.MethodDelete, "/volumes/"+url.PathEscape(name), q, nil, nil)
}

// CreateSnapshot takes a read-only snapshot of a volume's live state.
func (c *Client) CreateSnapshot(ctx context.Context, volume, name string) (api.Snapshot, error) {
	var out api.Snapshot
	err := c.do(ctx, http.MethodPost, "/volumes/"+url.PathEscape(volume)+"/snapshots", nil,
		api.CreateSnapshotRequest{Name: name}, &out)
	return out, err
}

// ListSnapshots returns one volume's snapshots oldest first, or every snapshot when volume is "".
func (c *Client) ListSnapshots(ctx context.Context, volume string) ([]api.Snapshot, error) {
	q := url.Values{}
	if volume != "" {
		q.Set("volume", volume)
	}
	var out []api.Snapshot
	err := c.do(ctx, http.MethodGet, "/snapshots", q, nil, &out)
	return out, err
}

// RemoveSnapshot deletes a snapshot; clones made from it are unaffected.
func (c *Client) RemoveSnapshot(ctx context.Context, volume, name string) error {
	return c.do(ctx, http.MethodDelete, snapPath(volume, name), nil, nil, nil)
}

// RestoreSnapshot rolls a volume back to a snapshot; refused (api.CodeInUse) while mounted.
func (c *Client) RestoreSnapshot(ctx context.Context, volume, name string) error {
	return c.do(ctx, http.MethodPost, snapPath(volume, name)+"/restore", nil, nil, nil)
}

// DiffSnapshots lists the paths added, modified and removed going from snapshot from to snapshot
// to; to == "" means the volume's live state.
func (c *Client) DiffSnapshots(ctx context.Context, volume, from, to string) (api.Diff, error) {
	q := url.Values{"from": {from}}
	if to != "" {
		q.Set("to", to)
	}
	var out api.Diff
	err := c.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(volume)+"/diff", q, nil, &out)
	return out, err
}

// DF returns space accounting per volume and for the whole store.
func (c *Client) DF(ctx context.Context) (api.DF, error) {
	var out api.DF
	err := c.do(ctx, http.MethodGet, "/df", nil, nil, &out)
	return out, err
}

// GC reclaims unreferenced chunks and disk space now.
func (c *Client) GC(ctx context.Context) (api.GCResult, error) {
	var out api.GCResult
	err := c.do(ctx, http.MethodPost, "/gc", nil, nil, &out)
	return out, err
}

// Fsck checks the store, repairing what it can when repair is set.
func (c *Client) Fsck(ctx context.Context, repair bool) (api.FsckReport, error) {
	var out api.FsckReport
	err := c.do(ctx, http.MethodPost, "/fsck", nil, api.FsckRequest{Repair: repair}, &out)
	return out, err
}

// Mount mounts source ("VOLUME" or "VOLUME@SNAPSHOT") on dir, an absolute directory on the
// daemon's host. Snapshots mount read-only.
func (c *Client) Mount(ctx context.Context, source, dir string) (api.Mount, error) {
	return c.MountWith(ctx, api.MountRequest{Source: source, Dir: dir})
}

// MountWith is Mount with the request's other settings.
func (c *Client) MountWith(ctx context.Context, req api.MountRequest) (api.Mount, error) {
	var out api.Mount
	err := c.do(ctx, http.MethodPost, "/mounts", nil, req, &out)
	return out, err
}

// Mounts lists volctl's mounts.
func (c *Client) Mounts(ctx context.Context) ([]api.Mount, error) {
	var out []api.Mount
	err := c.do(ctx, http.MethodGet, "/mounts", nil, nil, &out)
	return out, err
}

// Unmount undoes Mount for dir.
func (c *Client) Unmount(ctx context.Context, dir string) error {
	return c.do(ctx, http.MethodPost, "/unmount", nil, api.UnmountRequest{Dir: dir}, nil)
}

// Schedule returns a volume's snapshot schedule (Every empty when it has none).
func (c *Client) Schedule(ctx context.Context, volume string) (api.Schedule, error) {
	var out api.Schedule
	err := c.do(ctx, http.MethodGet, schedPath(volume), nil, nil, &out)
	return out, err
}

// SetSchedule gives a volume a snapshot schedule, replacing any it had; automatic snapshots
// the new rules do not keep are pruned at once.
func (c *Client) SetSchedule(ctx context.Context, volume string, s api.Schedule) (api.Schedule, error) {
	var out api.Schedule
	err := c.do(ctx, http.MethodPost, schedPath(volume), nil, s, &out)
	return out, err
}

// RemoveSchedule turns a volume's schedule off; its automatic snapshots stay.
func (c *Client) RemoveSchedule(ctx context.Context, volume string) error {
	return c.do(ctx, http.MethodDelete, schedPath(volume), nil, nil, nil)
}

func schedPath(volume string) string { return "/volumes/" + url.PathEscape(volume) + "/schedule" }

func snapPath(volume, name string) string {
	return "/volumes/" + url.PathEscape(volume) + "/snapshots/" + url.PathEscape(name)
}

// do sends one request and decodes a 2xx body into out (when out is not nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// A name of "." or ".." would be cleaned out of the path and reach another route.
	if p := api.Prefix + path; pathpkg.Clean(p) != p {
		return &api.Error{Code: api.CodeInvalid, Message: fmt.Sprintf("invalid name in request path %q", path)}
	}
	u := "http://fusevol" + api.Prefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.socket, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response from %s: %w", c.socket, err)
	}
	if resp.StatusCode >= 300 {
		return decodeError(resp.StatusCode, data)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response from %s: %w", c.socket, err)
	}
	return nil
}

func decodeError(status int, data []byte) error {
	e := &api.Error{}
	if json.Unmarshal(data, e) != nil || e.Message == "" {
		msg := strings.TrimSpace(string(data))
		if msg == "" {
			msg = http.StatusText(status)
		}
		e = &api.Error{Code: api.CodeInternal, Message: msg}
	}
	e.Status = status
	return e
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
