package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Live restart: a mount's FUSE connection outlives the process serving it. The connection is
// the /dev/fuse descriptor (Mounted.Device): while any process holds it, the mount stays and
// the kernel queues its requests. A successor process given the descriptor and the mount's
// ResumeState serves it with Resume:
//   - go-fuse expects to answer the kernel's INIT itself, but the kernel sent it once, to the
//     first server. Resume gives go-fuse that INIT (kept in the ResumeState) on a socket, lets it
//     reply there, then puts the real descriptor in the socket's place before serving starts.
//     That is the only thing go-fuse is made to do differently, and it needs no change to it.
//   - Requests the old process had read but not answered are resent by the kernel on
//     FUSE_NOTIFY_RESEND (Linux 6.9+, announced as CAP_HAS_RESEND); without it they stay
//     unanswered, and the processes waiting on them hang until killed.
//   - Node ids are inode numbers and need no state. File and directory handles are numbered
//     with the serving process's epoch (handles.go) and adopted on first use. Snapshot slots
//     are in the ResumeState. Reference counts a predecessor kept are unknown: its orphans are
//     reclaimed when the kernel forgets them or at the unmount.
//   - A planned handover (Freeze) first holds every new request at the mount's gate, waits for
//     those being served and commits buffered writes, so the successor finds them stored.

// ResumeState is what a successor needs, besides the descriptor, to serve a mount.
type ResumeState struct {
	Init     []byte `json:"init"`      // the kernel's INIT request body (fuse_init_in)
	MaxWrite int    `json:"max_write"` // the largest write the kernel was told to send
	Epoch    uint16 `json:"epoch"`     // handle epoch of the process that serves it
	// Frozen: the process stopped serving after Freeze, with every buffered write stored. A
	// successor of one that did not (it crashed) cannot know what writes it lost.
	Frozen bool        `json:"frozen,omitempty"`
	Slots  []SlotState `json:"slots,omitempty"`
}

// SlotState names the snapshot of one slot of <mount>/.snapshots, slot 1 first.
type SlotState struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// gate holds a restartable mount's requests while it is handed over.
type gate struct{ mu sync.RWMutex }

func (g *gate) enter() { g.mu.RLock() }
func (g *gate) exit()  { g.mu.RUnlock() }

// close holds every request from now on and waits, up to ctx, for those being served.
func (g *gate) close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		g.mu.Lock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("requests still being served: %w", ctx.Err())
	}
}

// Device is the mount's /dev/fuse descriptor. Whoever holds a duplicate of it (sent over a
// unix socket, say) keeps the mount alive after this process ends; Resume serves it again.
func (m *Mounted) Device() *os.File { return m.dev }

// State is the mount's ResumeState now.
func (m *Mounted) State() ResumeState { return m.f.resumeState() }

// Freeze readies the mount for a successor: it holds every request from now on (the kernel
// resends them to the successor), waits up to ctx for those being served, and commits every
// buffered write. It does not unmount; the process is expected to exit without serving the
// mount again. It needs Options.Restartable.
func (m *Mounted) Freeze(ctx context.Context) error {
	if m.gate == nil {
		return errors.New("freeze: mount is not restartable")
	}
	gerr := m.gate.close(ctx)
	if err := m.f.wb.flushAll(ctx); err != nil {
		return fmt.Errorf("freeze %s: %w", m.dir, err)
	}
	if gerr != nil {
		return fmt.Errorf("freeze %s: %w", m.dir, gerr)
	}
	m.f.frozen.Store(true)
	m.f.persist()
	return nil
}

func (f *fsys) resumeState() ResumeState {
	in := f.init
	st := ResumeState{
		Init:     append([]byte(nil), initBody(&in)...),
		MaxWrite: f.maxWrite,
		Epoch:    f.epoch,
		Frozen:   f.frozen.Load(),
	}
	f.snapMu.RLock()
	for _, s := range f.slots {
		st.Slots = append(st.Slots, SlotState{Name: s.name, Created: s.created})
	}
	f.snapMu.RUnlock()
	return st
}

// persist hands the mount's state to Options.Persist. The state is read under persistMu, so
// each call hands on a state at least as new as the one before.
func (f *fsys) persist() {
	if f.persistFn == nil {
		return
	}
	f.persistMu.Lock()
	defer f.persistMu.Unlock()
	f.persistFn(f.resumeState(), f.dev)
}

// Resume serves the connection dev of a view mounted at dir by an earlier process, which left
// st. It takes dev over (closing it on error). opts should be those of the first mount.
func Resume(ctx context.Context, dir string, dev *os.File, st ResumeState, view Volume, opts Options) (*Mounted, error) {
	opts = opts.withDefaults()
	var init fuse.InitIn
	if len(st.Init) != len(initBody(&init)) || st.MaxWrite <= 0 {
		dev.Close()
		return nil, fmt.Errorf("resume %s: bad state (init %d bytes, max write %d)", dir, len(st.Init), st.MaxWrite)
	}
	copy(initBody(&init), st.Init)
	opts.MaxWrite = st.MaxWrite
	m, err := serve(ctx, dir, dev, view, opts, func(f *fsys, mo *fuse.MountOptions) (*fuse.Server, error) {
		f.resumed, f.crashed, f.epoch = true, !st.Frozen, st.Epoch+1
		f.restoreSlots(st.Slots)
		return replayInit(rawFS(f, opts.Observe, f.gate), dev, st.Init, mo)
	})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("resume %s: %w", dir, err)
	}
	if init.Flags64()&fuse.CAP_HAS_RESEND == 0 {
		m.f.log.Warn("kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9+): requests the previous daemon had read stay unanswered",
			"dir", dir)
	} else if err := notifyResend(dev); err != nil {
		m.f.log.Warn("asking the kernel to resend requests failed", "dir", dir, "err", err)
	}
	return m, nil
}

// initBody is the part of in that follows the request header: the kernel's fuse_init_in.
func initBody(in *fuse.InitIn) []byte {
	hdr := unsafe.Sizeof(in.InHeader)
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(in), hdr)), unsafe.Sizeof(*in)-hdr)
}

// replayInit makes a go-fuse server for the connection dev, whose INIT (body init) an earlier
// server answered: go-fuse reads that INIT from one end of a socket pair and answers it there;
// then dev's duplicate replaces that end, under the same descriptor number, before any other
// request is read (go-fuse reads nothing between NewServer and Serve).
func replayInit(fs fuse.RawFileSystem, dev *os.File, init []byte, mo *fuse.MountOptions) (*fuse.Server, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sp[1])
	const inHeaderSize, opInit = int(unsafe.Sizeof(fuse.InHeader{})), 26 // FUSE_INIT
	msg := make([]byte, inHeaderSize, inHeaderSize+len(init))
	binary.LittleEndian.PutUint32(msg[0:], uint32(inHeaderSize+len(init)))
	binary.LittleEndian.PutUint32(msg[4:], opInit)
	binary.LittleEndian.PutUint64(msg[8:], 1) // unique
	msg = append(msg, init...)
	if _, err := unix.Write(sp[1], msg); err != nil {
		unix.Close(sp[0])
		return nil, err
	}
	srv, err := fuse.NewServer(fs, fmt.Sprintf("/dev/fd/%d", sp[0]), mo) // owns sp[0] from here
	if err != nil {
		return nil, err
	}
	if err := unix.Dup3(int(dev.Fd()), sp[0], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("take over the connection: %w", err)
	}
	return srv, nil
}

// notifyResend asks the kernel to queue again every request read from the connection but not
// answered (FUSE_NOTIFY_RESEND: a fuse_out_header with the notification code and no body).
func notifyResend(dev *os.File) error {
	const notifyResend = 7 // enum fuse_notify_code; go-fuse's NOTIFY_RESEND is its negation
	var hdr [16]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(hdr)))
	binary.LittleEndian.PutUint32(hdr[4:], notifyResend)
	for {
		_, err := unix.Write(int(dev.Fd()), hdr[:])
		if err != syscall.EINTR {
			return err
		}
	}
}

// restoreSlots opens the snapshots a predecessor had open under .snapshots, in their slots. A
// slot whose snapshot is gone or was made again stays empty (ESTALE), as it would have become.
func (f *fsys) restoreSlots(slots []SlotState) {
	if f.snaps == nil {
		return
	}
	infos, err := f.snaps.Snapshots(f.ctx)
	if err != nil {
		f.log.Warn("resume: snapshots not listed; their open slots answer ESTALE", "err", err)
	}
	created := map[string]time.Time{}
	for _, in := range infos {
		created[in.Name] = in.CreatedAt
	}
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	for i, s := range slots {
		slot := &snapSlot{slot: uint16(i + 1), name: s.Name, created: s.Created}
		if c, ok := created[s.Name]; ok && c.Equal(s.Created) {
			if v, err := f.snaps.Snapshot(f.ctx, s.Name); err == nil {
				slot.vol = v
				f.snapByName[s.Name] = slot
			}
		}
		f.slots = append(f.slots, slot)
	}
}
