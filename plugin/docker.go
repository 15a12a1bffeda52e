package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/fusevol/fusevol/backend"
)

// dockerContentType is what go-plugins-helpers answers with; dockerd does not check it.
const dockerContentType = "application/vnd.docker.plugins.v1.1+json"

// registerDocker adds Docker's volume plugin protocol. Every endpoint answers any HTTP method
// (dockerd always POSTs); errors are HTTP 500 {"Err": "..."}, malformed requests 400.
func (d *Daemon) registerDocker(mux *http.ServeMux) {
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		writeDocker(w, http.StatusOK, map[string][]string{"Implements": {"VolumeDriver"}})
	})
	mux.HandleFunc("/VolumeDriver.Capabilities", func(w http.ResponseWriter, r *http.Request) {
		writeDocker(w, http.StatusOK, volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}})
	})
	mux.Handle("/VolumeDriver.Create", dockerCall(d.dockerCreate))
	mux.Handle("/VolumeDriver.Remove", dockerCall(d.dockerRemove))
	mux.Handle("/VolumeDriver.Get", dockerCall(d.dockerGet))
	mux.Handle("/VolumeDriver.List", dockerCall(d.dockerList))
	mux.Handle("/VolumeDriver.Path", dockerCall(d.dockerPath))
	mux.Handle("/VolumeDriver.Mount", dockerCall(d.dockerMount))
	mux.Handle("/VolumeDriver.Unmount", dockerCall(d.dockerUnmount))
}

// dockerCall decodes a request of type Req, runs fn and writes its answer. fn never returns a
// nil answer with a nil error: dockerd would read `null` as "no such volume" or an empty path.
func dockerCall[Req any](fn func(ctx context.Context, req *Req) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := new(Req)
		if err := decodeBody(w, r, req); err != nil {
			writeDockerError(w, bodyStatus(err), bodyStatus(err), err.Error())
			return
		}
		out, err := fn(r.Context(), req)
		if err != nil {
			_, class := apiError(err)
			writeDockerError(w, http.StatusInternalServerError, class, err.Error())
			return
		}
		writeDocker(w, http.StatusOK, out)
	})
}

func writeDocker(w http.ResponseWriter, status int, v any) {
	writeJSON(w, status, dockerContentType, v)
}

// writeDockerError answers msg with status; class is the status the error has by its kind
// (apiError), which sets how it is logged.
func writeDockerError(w http.ResponseWriter, status, class int, msg string) {
	noteError(w, msg, class)
	writeDocker(w, status, volume.ErrorResponse{Err: msg})
}

func (d *Daemon) dockerCreate(ctx context.Context, req *volume.CreateRequest) (any, error) {
	if _, err := d.createVolume(ctx, req.Name, req.Options, true); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Daemon) dockerRemove(ctx context.Context, req *volume.RemoveRequest) (any, error) {
	err := d.removeVolume(ctx, req.Name, false)
	if errors.Is(err, backend.ErrNotFound) {
		// Already gone (removed with volctl): dockerd only wants it not to exist.
		d.log.Info("remove of a volume that does not exist", "volume", req.Name)
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Daemon) dockerGet(ctx context.Context, req *volume.GetRequest) (any, error) {
	st, err := d.checkedStore(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	info, err := st.GetVolume(ctx, req.Name)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.Name, err)
	}
	return volume.GetResponse{Volume: d.dockerVolume(info)}, nil
}

func (d *Daemon) dockerList(ctx context.Context, _ *struct{}) (any, error) {
	st, err := d.storeFor(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := st.ListVolumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := volume.ListResponse{Volumes: make([]*volume.Volume, 0, len(infos))}
	for _, info := range infos {
		out.Volumes = append(out.Volumes, d.dockerVolume(info))
	}
	return out, nil
}

func (d *Daemon) dockerPath(ctx context.Context, req *volume.PathRequest) (any, error) {
	st, err := d.checkedStore(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if _, err := st.GetVolume(ctx, req.Name); err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.Name, err)
	}
	return volume.PathResponse{Mountpoint: d.mounts.dir(req.Name)}, nil
}

// dockerMount adds a reference for req.ID, mounting on the first one. The same ID may arrive
// more than once (docker cp on a running container, a container restarted after dockerd
// restarted) and every arrival counts.
func (d *Daemon) dockerMount(ctx context.Context, req *volume.MountRequest) (any, error) {
	st, err := d.checkedStore(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	dir, err := d.mounts.addRef(ctx, st, req.Name, req.ID)
	if err != nil {
		return nil, err
	}
	return volume.MountResponse{Mountpoint: dir}, nil
}

// dockerUnmount drops one reference of req.ID; an unknown ID is a no-op (dockerd may send it
// after a failed Mount, or for a mount made before this daemon started).
func (d *Daemon) dockerUnmount(ctx context.Context, req *volume.UnmountRequest) (any, error) {
	if _, err := d.checkedStore(ctx, req.Name); err != nil {
		return nil, err
	}
	if err := d.mounts.dropRef(ctx, req.Name, req.ID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// dockerVolume is a volume as dockerd sees it. The mount point is where the volume is (or would
// be) mounted; Status carries what `docker volume inspect` shows.
func (d *Daemon) dockerVolume(info backend.VolumeInfo) *volume.Volume {
	m := d.mounts.report(info.Name)
	refs := 0
	for _, n := range m.refs {
		refs += n
	}
	return &volume.Volume{
		Name:       info.Name,
		Mountpoint: d.mounts.dir(info.Name),
		CreatedAt:  info.CreatedAt.UTC().Format(time.RFC3339),
		Status: map[string]any{
			"id":      info.ID,
			"mounted": m.mounted,
			"refs":    refs,
			"options": apiOptions(info.Options),
		},
	}
}

// checkedStore validates a volume name and waits for the store.
func (d *Daemon) checkedStore(ctx context.Context, name string) (*backend.Store, error) {
	if err := backend.ValidateName(name); err != nil {
		return nil, fmt.Errorf("volume name %q: %w", name, err)
	}
	return d.storeFor(ctx)
}
