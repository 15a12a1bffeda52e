package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/backend/repository"
)

// The repository commands: volctl send --to DIR, volctl restore, volctl backup ls|forget|prune|check.
// The repository is this process's (backend/repository), on a directory of the machine volctl
// runs on; the daemon only sends and receives streams.

func repoFlag() *ucli.StringFlag {
	return &ucli.StringFlag{Name: "repo", Aliases: []string{"r"}, Required: true, Usage: "the backup repository: a `DIR`ectory"}
}

// openRepo opens the repository in dir; create makes one in an empty or missing directory.
func openRepo(ctx context.Context, dir string, create bool) (*repository.Repository, *repository.Dir, error) {
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
	}
	d, err := repository.NewDir(dir)
	if err != nil {
		return nil, nil, err
	}
	r, err := repository.Open(ctx, d, create, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	return r, d, nil
}

// errBackupStopped ends the daemon's stream when the backup gave up first.
var errBackupStopped = errors.New("backup stopped")

// sendToRepo is volctl send --to DIR: the daemon's stream goes into the repository.
func sendToRepo(c *ucli.Context, vol, snap, from, dir string) error {
	what := fmt.Sprintf("send %s@%s to %s", vol, snap, dir)
	r, _, err := openRepo(c.Context, dir, true)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		_, err := daemonClient(c).Send(c.Context, vol, snap, from, pw)
		pw.CloseWithError(err) // nil: EOF
		sent <- err
	}()
	p := newProgress(c.App.ErrWriter, "sent", 0)
	st, err := r.Backup(c.Context, p.reader(pr))
	p.stop()
	pr.CloseWithError(errBackupStopped)
	serr := <-sent
	if serr != nil && !errors.Is(serr, errBackupStopped) {
		return failure(what, serr) // the daemon's reason comes first: the backup only saw a cut stream
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "backed up %s@%s to %s: %s, %s (%s); %d written (%s), %d there already (verified); stream %s\n",
		vol, snap, dir, count(st.Inodes, "inode"), count(st.Chunks, "chunk"), humanBytes(st.Bytes), st.Added,
		humanBytes(st.AddedBytes), st.Verified, humanBytes(st.StreamBytes))
	return err
}

func restoreCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "restore",
		Usage:     "make a volume from a backup in a repository",
		ArgsUsage: "VOLUME@SNAPSHOT NEWVOLUME",
		Description: "Reads the backup of VOLUME@SNAPSHOT from --repo and makes NEWVOLUME (which must not exist)\n" +
			"with the snapshot, through the daemon's receive. Every chunk is checked against its hash:\n" +
			"a damaged or missing one fails the restore and nothing is made.",
		Flags:  []ucli.Flag{repoFlag(), formatFlag()},
		Action: restoreAction,
	}
}

func restoreAction(c *ucli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf(c, "restore needs VOLUME@SNAPSHOT and NEWVOLUME, got %d arguments", c.NArg())
	}
	vol, snap, ok := strings.Cut(c.Args().First(), "@")
	if !ok || vol == "" || snap == "" {
		return usageErrorf(c, "restore needs VOLUME@SNAPSHOT, got %q", c.Args().First())
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	newVol, dir := c.Args().Get(1), c.String("repo")
	what := fmt.Sprintf("restore %s@%s", vol, snap)
	r, _, err := openRepo(c.Context, dir, false)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := backend.ValidateName(newVol); err != nil {
		return usageErrorf(c, "NEWVOLUME %q: %v", newVol, err)
	}
	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() {
		_, err := r.Restore(c.Context, vol, snap, pw)
		pw.CloseWithError(err)
		restored <- err
	}()
	p := newProgress(c.App.ErrWriter, "restored", 0)
	res, err := daemonClient(c).Receive(c.Context, newVol, false, p.reader(pr))
	p.stop()
	pr.CloseWithError(errBackupStopped)
	if rerr := <-restored; rerr != nil && !errors.Is(rerr, errBackupStopped) {
		return fmt.Errorf("%w (repository %s; nothing was made)", rerr, dir) // the receive only saw a cut stream
	}
	if err != nil {
		return failure(what, err)
	}
	if asJSON {
		return writeJSON(c.App.Writer, res)
	}
	_, err = fmt.Fprintf(c.App.Writer, "restored %s@%s as %s@%s: %s, %s; %d chunk bodies written (%s), %d skipped (already in store)\n",
		vol, snap, res.Volume, res.Snapshot, count(res.Inodes, "inode"), count(res.Chunks, "chunk"), res.Bodies,
		humanBytes(res.BodyBytes), res.Skipped)
	return err
}

func backupCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "backup",
		Usage: "list, forget, prune and check the backups in a repository (volctl send --to DIR makes them)",
		Subcommands: []*ucli.Command{
			{
				Name: "ls", Usage: "list the backups", ArgsUsage: "[VOLUME]",
				Flags:  []ucli.Flag{repoFlag(), formatFlag()},
				Action: backupList,
			},
			{
				Name: "forget", Usage: "delete the backups the keep rules do not keep (per volume)", ArgsUsage: "[VOLUME]",
				Description: "The rules are restic's: --keep N keeps the newest N; --keep-daily N the newest backup\n" +
					"of each of the N most recent days that have one; hourly, weekly (ISO weeks) and monthly\n" +
					"likewise, by the snapshot's time, in UTC. A backup kept by any rule stays. The chunks stay\n" +
					"until a prune (--prune runs one).",
				Flags: append([]ucli.Flag{repoFlag(), &ucli.BoolFlag{Name: "prune", Usage: "prune after forgetting"},
					formatFlag()}, backupKeepFlags()...),
				Action: backupForget,
			},
			{
				Name: "prune", Usage: "delete the chunks no backup uses", ArgsUsage: " ",
				Flags:  []ucli.Flag{repoFlag(), formatFlag()},
				Action: backupPrune,
			},
			{
				Name: "check", Usage: "read every backup and chunk; exit 0 only when every backup restores", ArgsUsage: " ",
				Flags:  []ucli.Flag{repoFlag(), formatFlag()},
				Action: backupCheck,
			},
		},
	}
}

// backupKeepFlags are forget's keep rules, named as snapshot schedule's (--keep is restic's --keep-last).
func backupKeepFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.IntFlag{Name: "keep", Aliases: []string{"keep-last"}, Usage: "keep the newest N backups of each volume"},
		&ucli.IntFlag{Name: "keep-hourly", Usage: "keep the newest backup of each of the last N hours that have one"},
		&ucli.IntFlag{Name: "keep-daily", Usage: "... of each of the last N days (UTC)"},
		&ucli.IntFlag{Name: "keep-weekly", Usage: "... of each of the last N weeks (ISO weeks, Monday to Sunday)"},
		&ucli.IntFlag{Name: "keep-monthly", Usage: "... of each of the last N months"},
	}
}

// backupJSON is a backup in --format json.
type backupJSON struct {
	Volume     string    `json:"volume"`
	Snapshot   string    `json:"snapshot"`
	SnapshotID string    `json:"snapshot_id"`
	Created    time.Time `json:"created"`
	BackedUp   time.Time `json:"backed_up"`
	Inodes     int64     `json:"inodes"`
	Chunks     int64     `json:"chunks"`
	Bytes      int64     `json:"bytes"`
	Added      int64     `json:"added"`
	AddedBytes int64     `json:"added_bytes"`
}

func toJSON(bs []repository.Backup) []backupJSON {
	out := []backupJSON{}
	for _, b := range bs {
		out = append(out, backupJSON(b))
	}
	return out
}

func backupList(c *ucli.Context) error {
	if c.NArg() > 1 {
		return usageErrorf(c, "backup ls takes at most one VOLUME")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	dir := c.String("repo")
	r, _, err := openRepo(c.Context, dir, false)
	if err == nil {
		var list []repository.Backup
		if list, err = r.List(c.Context, c.Args().First()); err == nil {
			return printBackups(c, list, asJSON)
		}
	}
	return fmt.Errorf("list backups in %s: %w", dir, err)
}

func printBackups(c *ucli.Context, list []repository.Backup, asJSON bool) error {
	if asJSON {
		return writeJSON(c.App.Writer, toJSON(list))
	}
	now := time.Now()
	tw := table(c.App.Writer, "VOLUME", "SNAPSHOT", "SIZE", "ADDED", "CREATED")
	for _, b := range list {
		row(tw, b.Volume, b.Snapshot, humanBytes(b.Bytes), humanBytes(b.AddedBytes), ago(b.Created, now))
	}
	return tw.Flush()
}

func backupForget(c *ucli.Context) error {
	if c.NArg() > 1 {
		return usageErrorf(c, "backup forget takes at most one VOLUME")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	p := repository.Policy{Last: c.Int("keep"), Hourly: c.Int("keep-hourly"), Daily: c.Int("keep-daily"),
		Weekly: c.Int("keep-weekly"), Monthly: c.Int("keep-monthly")}
	if p == (repository.Policy{}) {
		return usageErrorf(c, "backup forget needs a keep rule: --keep, --keep-hourly, --keep-daily, --keep-weekly or --keep-monthly")
	}
	dir := c.String("repo")
	r, _, err := openRepo(c.Context, dir, false)
	if err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	gone, err := r.Forget(c.Context, c.Args().First(), p)
	if err != nil {
		return fmt.Errorf("forget in %s: %w", dir, err)
	}
	var pruned *repository.PruneStats
	if c.Bool("prune") {
		st, err := r.Prune(c.Context)
		if err != nil {
			return fmt.Errorf("prune %s: %w", dir, err)
		}
		pruned = &st
	}
	if asJSON {
		out := map[string]any{"forgotten": toJSON(gone)}
		if pruned != nil {
			out["pruned"] = pruneJSON(*pruned)
		}
		return writeJSON(c.App.Writer, out)
	}
	for _, b := range gone {
		fmt.Fprintf(c.App.Writer, "forgot %s@%s\n", b.Volume, b.Snapshot)
	}
	if pruned != nil {
		return printPrune(c.App.Writer, *pruned)
	}
	return nil
}

func pruneJSON(st repository.PruneStats) map[string]int64 {
	return map[string]int64{"chunks": st.Chunks, "bytes": st.Bytes, "leftovers": st.Leftovers, "kept": st.Kept}
}

func printPrune(w io.Writer, st repository.PruneStats) error {
	_, err := fmt.Fprintf(w, "pruned %s (%s), %d left over from interrupted writes; %s kept\n",
		count(st.Chunks, "chunk"), humanBytes(st.Bytes), st.Leftovers, count(st.Kept, "chunk"))
	return err
}

func backupPrune(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "backup prune takes no arguments")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	dir := c.String("repo")
	r, _, err := openRepo(c.Context, dir, false)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	st, err := r.Prune(c.Context)
	if err != nil {
		return fmt.Errorf("prune %s: %w", dir, err)
	}
	if asJSON {
		return writeJSON(c.App.Writer, pruneJSON(st))
	}
	return printPrune(c.App.Writer, st)
}

func backupCheck(c *ucli.Context) error {
	if c.NArg() != 0 {
		return usageErrorf(c, "backup check takes no arguments")
	}
	asJSON, err := wantJSON(c)
	if err != nil {
		return err
	}
	dir := c.String("repo")
	r, _, err := openRepo(c.Context, dir, false)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	stop := spinner(c.App.Writer, c.App.ErrWriter, "check")
	rep, err := r.Check(c.Context)
	stop()
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	w := c.App.Writer
	if asJSON {
		problems := rep.Problems
		if problems == nil {
			problems = []string{}
		}
		err = writeJSON(w, map[string]any{"clean": rep.Clean(), "backups": rep.Backups, "chunks": rep.Chunks,
			"unreferenced": rep.Unreferenced, "leftovers": rep.Leftovers, "problems": problems})
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "problem: %s\n", p)
		}
		state := "clean"
		if !rep.Clean() {
			state = fmt.Sprintf("NOT clean: %d problem(s)", len(rep.Problems))
		}
		_, err = fmt.Fprintf(w, "repository %s is %s: %s, %s read and checked; %d unreferenced (prune deletes them), %d left over from interrupted writes\n",
			dir, state, count(rep.Backups, "backup"), count(rep.Chunks, "chunk"), rep.Unreferenced, rep.Leftovers)
	}
	if err == nil && !rep.Clean() {
		return &exitError{code: 1}
	}
	return err
}
