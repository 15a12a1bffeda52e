package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/backend/sendstream"
)

func sendCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "send",
		Usage:     "write a snapshot (or what changed since an older one) as a stream, for volctl receive",
		ArgsUsage: "VOLUME@SNAPSHOT",
		Description: "The stream goes to stdout (or -o FILE): volctl send db@daily | ssh host volctl receive db.\n" +
			"With --to DIR it is stored in a backup repository instead (volctl backup, volctl restore).\n" +
			"With --from OLDER it holds only what changed since VOLUME@OLDER, which the receiving\n" +
			"volume must hold (received before). The stream is checksummed and ends with a trailer:\n" +
			"a damaged or cut stream is refused by receive. Progress goes to stderr when it is a terminal.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "from", Usage: "send only what changed since this older snapshot (VOLUME@OLDER or OLDER)"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` instead of stdout"},
			&ucli.StringFlag{Name: "to", Usage: "store the snapshot in the backup repository in `DIR` (made if missing or empty)"},
		},
		Action:       sendAction,
		BashComplete: completeArgs(false, argSource),
	}
}

func receiveCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "receive",
		Aliases:   []string{"recv"},
		Usage:     "build a volume (or, from an incremental stream, its next snapshot) from a volctl send stream",
		ArgsUsage: "VOLUME",
		Description: "Reads the stream from stdin (or -i FILE). A full stream makes the new volume VOLUME\n" +
			"with the sent snapshot; an incremental one adds the snapshot to VOLUME, which must hold\n" +
			"the stream's base, be unchanged since (or --force: its changes are dropped) and not be\n" +
			"mounted, and rolls VOLUME's live state to it. Nothing is\n" +
			"left behind when the stream is damaged, cut or on the wrong base. Chunks the store holds\n" +
			"already are not written again.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` instead of stdin"},
			&ucli.BoolFlag{Name: "force", Aliases: []string{"F"}, Usage: "let an incremental stream drop what VOLUME changed since the stream's base"},
			formatFlag(),
		},
		Action:       receiveAction,
		BashComplete: completeArgs(false, argVolume),
	}
}

func sendAction(c *ucli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf(c, "send needs one VOLUME@SNAPSHOT, got %d arguments", c.NArg())
	}
	vol, snap, ok := strings.Cut(c.Args().First(), "@")
	if !ok || vol == "" || snap == "" {
		return usageErrorf(c, "send needs VOLUME@SNAPSHOT, got %q", c.Args().First())
	}
	from := c.String("from")
	if fv, fs, ok := strings.Cut(from, "@"); ok {
		if fv != vol {
			return usageErrorf(c, "--from %s: the base must be a snapshot of %s", from, vol)
		}
		from = fs
	}
	if dir := c.String("to"); dir != "" {
		if c.String("output") != "" {
			return usageErrorf(c, "--to and -o are two destinations: give one")
		}
		return sendToRepo(c, vol, snap, from, dir)
	}
	out := c.App.Writer
	path := c.String("output")
	if path == "" && isTerminal(out) {
		return usageErrorf(c, "refusing to write a binary stream to a terminal; pipe it or use -o FILE")
	}
	var file *os.File
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("send %s@%s: %w", vol, snap, err)
		}
		file, out = f, f
	}
	p := newProgress(c.App.ErrWriter, "sent", 0)
	st, err := daemonClient(c).Send(c.Context, vol, snap, from, p.writer(out))
	p.stop()
	if file != nil {
		if cerr := file.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path) // a stream without its trailer is of no use to anyone
		}
	}
	if err != nil {
		return failure(fmt.Sprintf("send %s@%s", vol, snap), err)
	}
	if isTerminal(c.App.ErrWriter) {
		fmt.Fprintf(c.App.ErrWriter, "sent %s@%s: %s, %s, %d chunk bodies (%s)\n", vol, snap, humanBytes(st.Bytes),
			count(st.Chunks, "chunk"), st.Bodies, humanBytes(st.BodyBytes))
	}
	return nil
}

func receiveAction(c *ucli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf(c, "receive needs one VOLUME, got %d arguments", c.NArg())
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	vol := c.Args().First()
	in := c.App.Reader
	if in == nil {
		in = os.Stdin
	}
	var total int64
	if path := c.String("input"); path != "" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("receive %s: %w", vol, err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			total = fi.Size()
		}
		in = f
	} else if f, ok := in.(*os.File); ok && isTerminal(f) {
		return usageErrorf(c, "receive reads a stream from stdin: pipe volctl send into it or use -i FILE")
	}
	p := newProgress(c.App.ErrWriter, "received", total)
	res, err := daemonClient(c).Receive(c.Context, vol, c.Bool("force"), p.reader(in))
	p.stop()
	if err != nil {
		return failure(fmt.Sprintf("receive %s", vol), err)
	}
	if asJSON {
		return writeJSON(c.App.Writer, res)
	}
	_, err = fmt.Fprintf(c.App.Writer, "received %s@%s: %s, %s; %d chunk bodies written (%s), %d skipped (already in store); stream %s\n",
		res.Volume, res.Snapshot, count(res.Inodes, "inode"), count(res.Chunks, "chunk"), res.Bodies,
		humanBytes(res.BodyBytes), res.Skipped, humanBytes(res.Bytes))
	return err
}

// progress shows "sent 12.0 MiB, 48 chunks  40.1 MiB/s  ETA 3s" on stderr while a stream
// passes, only when stderr is a terminal (a pipe's far end or a log gets nothing). total 0: no
// ETA (a stream's size is known only from its file).
type progress struct {
	w      io.Writer
	label  string
	total  int64
	n      atomic.Int64
	chunks *sendstream.Counter
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

func newProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, done: make(chan struct{}), chunks: sendstream.NewCounter()}
	if !isTerminal(w) {
		close(p.done)
		return p
	}
	p.wg.Add(1)
	go p.run()
	return p
}

func (p *progress) run() {
	defer p.wg.Done()
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			fmt.Fprint(p.w, "\r\033[K")
			return
		case <-tick.C:
		}
		line := p.line(p.n.Load(), p.chunks.Chunks(), time.Since(start))
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	}
}

// line is the progress line after n bytes and chunks in elapsed.
func (p *progress) line(n, chunks int64, elapsed time.Duration) string {
	rate := float64(n) / elapsed.Seconds()
	line := fmt.Sprintf("%s %s, %s  %s/s", p.label, humanBytes(n), count(chunks, "chunk"), humanBytes(int64(rate)))
	if p.total > 0 && rate > 0 && n < p.total {
		line += fmt.Sprintf("  ETA %s", time.Duration(float64(p.total-n)/rate*float64(time.Second)).Round(time.Second))
	}
	return line
}

func (p *progress) stop() {
	p.once.Do(func() {
		select {
		case <-p.done:
		default:
			close(p.done)
		}
		p.wg.Wait()
	})
}

func (p *progress) writer(w io.Writer) io.Writer { return countW{io.MultiWriter(w, p.chunks), &p.n} }
func (p *progress) reader(r io.Reader) io.Reader { return countR{io.TeeReader(r, p.chunks), &p.n} }

type countW struct {
	w io.Writer
	n *atomic.Int64
}

func (c countW) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

type countR struct {
	r io.Reader
	n *atomic.Int64
}

func (c countR) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}
