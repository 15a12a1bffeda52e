package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
)

// registerControl adds the control API (plugin/api). Only root and members of the socket's group
// may use it (checkPeer).
func (d *Daemon) registerControl(mux *http.ServeMux) {
	routes := map[string]func(ctx context.Context, r *http.Request) (any, error){
		api.RouteStatus:          d.ctlStatus,
		api.RouteVolumeList:      d.ctlVolumeList,
		api.RouteVolumeCreate:    d.ctlVolumeCreate,
		api.RouteVolumeInspect:   d.ctlVolumeInspect,
		api.RouteVolumeRemove:    d.ctlVolumeRemove,
		api.RouteVolumeSet:       d.ctlVolumeSet,
		api.RouteSnapshotList:    d.ctlSnapshotList,
		api.RouteSnapshotCreate:  d.ctlSnapshotCreate,
		api.RouteSnapshotRemove:  d.ctlSnapshotRemove,
		api.RouteSnapshotRestore: d.ctlSnapshotRestore,
		api.RouteSnapshotDiff:    d.ctlSnapshotDiff,
		api.RouteScheduleGet:     d.ctlScheduleGet,
		api.RouteScheduleSet:     d.ctlScheduleSet,
		api.RouteScheduleRemove:  d.ctlScheduleRemove,
		api.RouteDF:              d.ctlDF,
		api.RouteGC:              d.ctlGC,
		api.RouteFsck:            d.ctlFsck,
		api.RouteMountList:       d.ctlMountList,
		api.RouteMount:           d.ctlMount,
		api.RouteUnmount:         d.ctlUnmount,
	}
	for pattern, fn := range routes {
		mux.Handle(pattern, d.controlCall(fn))
	}
}

// noContent is returned by handlers whose success has no body.
type noContent struct{}

func (d *Daemon) controlCall(fn func(ctx context.Context, r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, err := fn(r.Context(), r)
		if err != nil {
			e, status := apiError(err)
			writeAPIError(w, e, status)
			return
		}
		if _, ok := out.(noContent); ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, "application/json", out)
	})
}

func writeAPIError(w http.ResponseWriter, e *api.Error, status int) {
	noteError(w, e.Message, status)
	writeJSON(w, status, "application/json", e)
}

// apiError maps an error to the control API's code and HTTP status: the daemon's own errors
// here, the store's as backend classifies them (backend.Classify), anything else internal.
func apiError(err error) (*api.Error, int) {
	var e *api.Error
	if errors.As(err, &e) {
		return e, statusOf(e.Code)
	}
	switch {
	case errors.Is(err, errBodyTooLarge):
		return &api.Error{Code: api.CodeTooLarge, Message: err.Error()}, statusOf(api.CodeTooLarge)
	case errors.Is(err, errMalformed):
		return &api.Error{Code: api.CodeInvalid, Message: err.Error()}, statusOf(api.CodeInvalid)
	case errors.Is(err, errUnavailable):
		return &api.Error{Code: api.CodeUnavailable, Message: err.Error()}, statusOf(api.CodeUnavailable)
	}
	c, _ := backend.Classify(err)
	return &api.Error{Code: c.Code, Message: err.Error()}, c.Status
}

// statusOf is the HTTP status of an error the daemon reports with a code of its own (an
// *api.Error); the store's errors carry theirs (backend.Class, which agrees: TestBackendClasses).
func statusOf(code string) int {
	switch code {
	case api.CodeInvalid:
		return http.StatusBadRequest
	case api.CodeForbidden:
		return http.StatusForbidden
	case api.CodeNotFound:
		return http.StatusNotFound
	case api.CodeExists, api.CodeInUse:
		return http.StatusConflict
	case api.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case api.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func invalid(format string, args ...any) error { return api.Errorf(api.CodeInvalid, format, args...) }

// body decodes the request body for a control handler.
func body[T any](r *http.Request) (*T, error) {
	v := new(T)
	if err := decodeBody(nil, r, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (d *Daemon) ctlStatus(ctx context.Context, r *http.Request) (any, error) {
	out := api.Status{
		Version: d.cfg.Version, API: api.Version, PID: os.Getpid(), StartedAt: d.started,
		Root: d.cfg.Root, Socket: d.cfg.Socket, MountRoot: d.cfg.MountRoot,
	}
	select {
	case <-d.ready:
		out.Ready = d.openErr == nil
	default:
	}
	if out.Ready {
		vols, err := d.store.ListVolumes(ctx)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		out.Volumes = len(vols)
	}
	out.Mounts = d.mounts.liveMounts()
	return out, nil
}

func (d *Daemon) ctlVolumeList(ctx context.Context, r *http.Request) (any, error) {
	st, err := d.storeFor(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := st.ListVolumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := make([]api.Volume, 0, len(infos))
	for _, info := range infos {
		out = append(out, d.apiVolume(info))
	}
	return out, nil
}

func (d *Daemon) ctlVolumeCreate(ctx context.Context, r *http.Request) (any, error) {
	req, err := body[api.CreateVolumeRequest](r)
	if err != nil {
		return nil, err
	}
	info, err := d.createVolume(ctx, req.Name, req.Options, false)
	if err != nil {
		return nil, err
	}
	return d.apiVolume(info), nil
}

func (d *Daemon) ctlVolumeInspect(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := st.GetVolume(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	out := d.apiVolume(info)
	u, err := st.Usage(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("volume %s: usage: %w", name, err)
	}
	out.Usage = &api.Usage{Bytes: u.Bytes, Files: u.Files}
	snaps, err := st.ListSnapshots(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("volume %s: snapshots: %w", name, err)
	}
	out.Snapshots = apiSnapshots(snaps)
	sc, err := st.GetSchedule(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("volume %s: schedule: %w", name, err)
	}
	if !sc.Policy.IsZero() {
		s := d.apiSchedule(sc)
		out.Schedule = &s
	}
	return out, nil
}

func (d *Daemon) ctlVolumeRemove(ctx context.Context, r *http.Request) (any, error) {
	var flags [2]bool
	for i, key := range []string{"force", "snapshots"} {
		v := r.URL.Query().Get(key)
		if v != "" && v != "true" && v != "false" {
			return nil, invalid("%s=%q: want true or false", key, v)
		}
		flags[i] = v == "true"
	}
	if err := d.removeVolumeWith(ctx, r.PathValue("name"), flags[0], flags[1]); err != nil {
		return nil, err
	}
	return noContent{}, nil
}

// ctlVolumeSet changes a volume's options, mounted or not. Under the volume's lock, its mount's
// buffered writes are committed first, so the usage a smaller quota is checked against holds
// what applications wrote; the mount reads the new options from the store on its next write
// and statfs (backend.View).
func (d *Daemon) ctlVolumeSet(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	req, err := body[api.SetVolumeRequest](r)
	if err != nil {
		return nil, err
	}
	if vol, snap, ok := strings.Cut(name, "@"); ok {
		return nil, invalid("%s@%s is a snapshot; snapshots are read-only and their options cannot be set", vol, snap)
	}
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	if err := d.mounts.flushLive(ctx, name, v); err != nil {
		return nil, err
	}
	info, err := st.SetVolumeOptions(ctx, name, req.Options)
	if err != nil {
		return nil, fmt.Errorf("set options: %w", err) // the store's error names the volume
	}
	d.log.Info("volume options set", "volume", name, "options", req.Options)
	return d.apiVolume(info), nil
}

// createVolume creates a volume. For Docker (existingOK) the name of an existing volume succeeds
// and its options are left alone, as dockerd expects; volctl gets "exists".
func (d *Daemon) createVolume(ctx context.Context, name string, opts map[string]string, existingOK bool) (backend.VolumeInfo, error) {
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return backend.VolumeInfo{}, err
	}
	vo, err := backend.ParseVolumeOptions(opts)
	if err != nil {
		return backend.VolumeInfo{}, fmt.Errorf("volume %s: %w", name, err)
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	info, err := st.CreateVolume(ctx, name, vo)
	if errors.Is(err, backend.ErrExists) && existingOK {
		return st.GetVolume(ctx, name)
	}
	if err != nil {
		return backend.VolumeInfo{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	d.log.Info("volume created", "volume", name, "from", vo.From)
	if !vo.Schedule.IsZero() {
		d.log.Info("snapshot schedule set", "volume", name, "schedule", vo.Schedule.String())
		d.pokeScheduler()
	}
	return info, nil
}

// removeVolume deletes a volume and keeps its snapshots (backend/removed.go): docker volume rm,
// compose down -v and volume prune must not take them. A mounted volume is refused unless force
// is set, in which case every mount of it (Docker's included) is dropped first.
func (d *Daemon) removeVolume(ctx context.Context, name string, force bool) error {
	return d.removeVolumeWith(ctx, name, force, false)
}

// removeVolumeWith is removeVolume that deletes the snapshots too when withSnapshots.
func (d *Daemon) removeVolumeWith(ctx context.Context, name string, force, withSnapshots bool) error {
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return err
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	// A mount without references is left over from an unmount that failed: retry it.
	if err := d.mounts.releaseLive(ctx, name, v); err != nil {
		return err
	}
	if v.inUse() {
		if !force {
			return errInUse(name, v)
		}
		if err := d.mounts.dropAll(ctx, name, v); err != nil {
			return err
		}
	}
	kept := ""
	if withSnapshots {
		err = st.DeleteVolume(ctx, name)
	} else {
		kept, err = st.DeleteVolumeKeepSnapshots(ctx, name)
	}
	if err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	d.metrics.forget(name)
	d.log.Info("volume removed", "volume", name, "force", force, "snapshots_kept_as", kept)
	return nil
}

func (d *Daemon) apiVolume(info backend.VolumeInfo) api.Volume {
	m := d.mounts.report(info.Name)
	out := api.Volume{
		Name: info.Name, ID: info.ID, CreatedAt: info.CreatedAt, Options: apiOptions(info.Options),
		Mounted: m.mounted, MountIDs: m.refs, Dirs: m.dirs,
	}
	if m.mounted {
		out.Mountpoint = d.mounts.dir(info.Name)
	}
	return out
}

func apiOptions(o backend.VolumeOptions) api.VolumeOptions {
	return api.VolumeOptions{Size: o.Size, ChunkSize: o.ChunkSize, Compression: o.Compression,
		UID: o.UID, GID: o.GID, Mode: o.Mode, From: o.From}
}

func apiSnapshots(snaps []backend.SnapshotInfo) []api.Snapshot {
	out := make([]api.Snapshot, 0, len(snaps))
	for _, s := range snaps {
		a := api.Snapshot{Volume: s.Volume, Name: s.Name, CreatedAt: s.CreatedAt, Auto: s.Auto}
		if !s.RemovedAt.IsZero() {
			a.RemovedAt = &s.RemovedAt
		}
		out = append(out, a)
	}
	return out
}

func (d *Daemon) ctlSnapshotList(ctx context.Context, r *http.Request) (any, error) {
	vol := r.URL.Query().Get("volume")
	var st *backend.Store
	var err error
	// A removed volume's record (NAME~ID8) holds its kept snapshots: listable by that name too.
	if vol == "" || backend.IsRemovedName(vol) {
		st, err = d.storeFor(ctx)
	} else {
		st, err = d.checkedStore(ctx, vol)
	}
	if err != nil {
		return nil, err
	}
	// ListSnapshots answers not found for a name with neither a volume nor kept snapshots.
	snaps, err := st.ListSnapshots(ctx, vol)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return apiSnapshots(snaps), nil
}

func (d *Daemon) ctlSnapshotCreate(ctx context.Context, r *http.Request) (any, error) {
	name := r.PathValue("name")
	req, err := body[api.CreateSnapshotRequest](r)
	if err != nil {
		return nil, err
	}
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := backend.ValidateName(req.Name); err != nil {
		return nil, fmt.Errorf("snapshot name %q: %w", req.Name, err)
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	if err := d.mounts.flushLive(ctx, name, v); err != nil {
		return nil, err
	}
	s, err := st.CreateSnapshot(ctx, name, req.Name)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s@%s: %w", name, req.Name, err)
	}
	d.log.Info("snapshot created", "volume", name, "snapshot", req.Name)
	return api.Snapshot{Volume: s.Volume, Name: s.Name, CreatedAt: s.CreatedAt}, nil
}

func (d *Daemon) ctlSnapshotRemove(ctx context.Context, r *http.Request) (any, error) {
	name, snap := r.PathValue("name"), r.PathValue("snapshot")
	// name may be a removed volume's record (NAME~ID8), which holds its kept snapshots.
	if err := backend.ValidateVolumeRef(name); err != nil {
		return nil, fmt.Errorf("volume name %q: %w", name, err)
	}
	st, err := d.storeFor(ctx)
	if err != nil {
		return nil, err
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	for dir, s := range v.snaps {
		if s.snapshot == snap {
			return nil, fmt.Errorf("snapshot %s@%s is mounted on %s: %w", name, snap, dir, backend.ErrInUse)
		}
	}
	if err := st.DeleteSnapshot(ctx, name, snap); err != nil {
		return nil, fmt.Errorf("remove snapshot %s@%s: %w", name, snap, err)
	}
	d.log.Info("snapshot removed", "volume", name, "snapshot", snap)
	return noContent{}, nil
}

func (d *Daemon) ctlSnapshotRestore(ctx context.Context, r *http.Request) (any, error) {
	name, snap := r.PathValue("name"), r.PathValue("snapshot")
	st, err := d.checkedStore(ctx, name)
	if err != nil {
		return nil, err
	}
	v := d.mounts.lock(name)
	defer d.mounts.unlock(name, v)
	if v.mnt != nil || v.liveRefs() > 0 {
		return nil, fmt.Errorf("cannot restore %s@%s: %w", name, snap, errInUse(name, v))
	}
	start := time.Now()
	if err := st.RestoreSnapshot(ctx, name, snap); err != nil {
		return nil, fmt.Errorf("restore %s@%s: %w", name, snap, err)
	}
	d.log.Info("snapshot restored", "volume", name, "snapshot", snap, "took", time.Since(start).Round(time.Millisecond))
	return noContent{}, nil
}

func (d *Daemon) ctlDF(ctx context.Context, r *http.Request) (any, error) {
	st, err := d.storeFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.mounts.flushAll(ctx); err != nil {
		return nil, err
	}
	s, err := st.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("store stats: %w", err)
	}
	return apiDF(s), nil
}

func apiDF(s backend.StoreStats) api.DF {
	out := api.DF{Volumes: make([]api.VolumeUsage, 0, len(s.Volumes)), LogicalBytes: s.LogicalBytes,
		UniqueBytes: s.UniqueBytes, PhysicalBytes: s.PhysicalBytes, Chunks: s.Chunks,
		DedupRatio: s.DedupRatio, DiskBytes: s.DiskBytes}
	for name, u := range s.Volumes {
		out.Volumes = append(out.Volumes, api.VolumeUsage{Name: name, Bytes: u.Bytes, Files: u.Files})
	}
	sortVolumeUsage(out.Volumes)
	return out
}

func (d *Daemon) ctlGC(ctx context.Context, r *http.Request) (any, error) {
	st, err := d.storeFor(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	before, err := st.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("store stats: %w", err)
	}
	if err := st.GC(ctx); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	after, err := st.Stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("store stats: %w", err)
	}
	d.log.Info("gc done", "disk_before", before.DiskBytes, "disk_after", after.DiskBytes)
	return api.GCResult{DiskBytesBefore: before.DiskBytes, DiskBytesAfter: after.DiskBytes,
		Seconds: time.Since(start).Seconds()}, nil
}

// ctlFsck checks the store after flushing every mount. Repair is refused while anything is
// mounted: a live mount may hold unlinked-but-open files that repair would reclaim.
func (d *Daemon) ctlFsck(ctx context.Context, r *http.Request) (any, error) {
	req, err := body[api.FsckRequest](r)
	if err != nil {
		return nil, err
	}
	st, err := d.storeFor(ctx)
	if err != nil {
		return nil, err
	}
	if req.Repair {
		if n := d.mounts.liveMounts(); n > 0 {
			return nil, fmt.Errorf("fsck --repair: %d volume(s) mounted; unmount them first: %w", n, backend.ErrInUse)
		}
	}
	if err := d.mounts.flushAll(ctx); err != nil {
		return nil, err
	}
	rep, err := st.Fsck(ctx, req.Repair)
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	d.log.Info("fsck done", "repair", req.Repair, "problems", len(rep.Problems), "repaired", len(rep.Repaired))
	return api.FsckReport{Clean: rep.Clean(), Problems: nonNil(rep.Problems),
		Repaired: nonNil(rep.Repaired), Damaged: nonNil(rep.Damaged)}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
