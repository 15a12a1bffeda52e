package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The database workloads: SQLite commits in both journal modes, through python3's sqlite3 module
// (the standard library's binding of the system's libsqlite3), and PostgreSQL's pgbench, with a
// cluster of its own initialised in a directory on the target. Each needs programs the harness
// does not ship; without them the workload is skipped with a warning, except under CI=true.

// sqliteScript makes a database in argv[1] with the journal mode argv[2] and synchronous=FULL,
// commits argv[3] one-row transactions (100 seeded random bytes each, seed argv[4]), checks the
// row count and prints the time the commits took as JSON.
const sqliteScript = `
import json, random, sqlite3, sys, time
path, mode, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
con = sqlite3.connect(path, isolation_level=None)
got = con.execute("PRAGMA journal_mode=" + mode).fetchone()[0]
if got.lower() != mode.lower():
    sys.exit("journal_mode=%s not accepted: the database is in mode %s" % (mode, got))
con.execute("PRAGMA synchronous=FULL")
con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
rng = random.Random(seed)
rows = [rng.randbytes(100) for _ in range(n)]
start = time.perf_counter()
for v in rows:
    con.execute("BEGIN")
    con.execute("INSERT INTO t (v) VALUES (?)", (v,))
    con.execute("COMMIT")
elapsed = time.perf_counter() - start
count = con.execute("SELECT count(*) FROM t").fetchone()[0]
con.close()
if count != n:
    sys.exit("%d rows after %d commits" % (count, n))
print(json.dumps({"seconds": elapsed, "sqlite": sqlite3.sqlite_version}))
`

// runSQLite times the commits in WAL mode, then in rollback-journal mode, each in a new database.
func runSQLite(ctx context.Context, e *env, dir string, rep int, rec recorder) error {
	py, err := exec.LookPath("python3")
	if err == nil {
		_, err = runTool(exec.CommandContext(ctx, py, "-c", "import sqlite3"))
	}
	if err != nil {
		return unavailable("SQLite workload", fmt.Sprintf("python3 with its sqlite3 module is not installed (%v)", err))
	}
	for i, m := range []struct{ metric, mode string }{{MSQLiteWAL, "WAL"}, {MSQLiteRollback, "DELETE"}} {
		path := filepath.Join(dir, "sqlite-"+strings.ToLower(m.mode)+".db")
		rate, err := sqliteCommits(ctx, py, path, m.mode, e.cfg.SQLiteCommits, 900+10*rep+i)
		if err != nil {
			return fmt.Errorf("SQLite journal_mode=%s: %w", m.mode, err)
		}
		rec(m.metric, rate)
	}
	return nil
}

func sqliteCommits(ctx context.Context, py, path, mode string, n, seed int) (float64, error) {
	defer func() {
		for _, s := range []string{"", "-wal", "-shm", "-journal"} {
			os.Remove(path + s)
		}
	}()
	out, err := runTool(exec.CommandContext(ctx, py, "-c", sqliteScript, path, mode, strconv.Itoa(n), strconv.Itoa(seed)))
	if err != nil {
		return 0, err
	}
	var res struct{ Seconds float64 }
	if err := json.Unmarshal(out, &res); err != nil || res.Seconds <= 0 {
		return 0, fmt.Errorf("python3 printed %q (%v)", out, err)
	}
	return float64(n) / res.Seconds, nil
}

// PostgreSQL 15 as Debian packages it; the server programs are not on PATH.
const (
	pgBinDir = "/usr/lib/postgresql/15/bin"
	pgbench  = "/usr/bin/pgbench"
)

// postgres is the PostgreSQL installation and the user its server runs as.
type postgres struct {
	uid, gid uint32
}

// findPostgres checks that PostgreSQL can run here: its programs, the postgres user, and root
// (to run the server as that user). It never touches the system's own clusters.
func findPostgres() (*postgres, error) {
	const what = "pgbench workload"
	for _, p := range []string{pgBinDir + "/initdb", pgBinDir + "/pg_ctl", pgBinDir + "/postgres", pgbench} {
		if _, err := os.Stat(p); err != nil {
			return nil, unavailable(what, fmt.Sprintf("PostgreSQL 15 is not installed (%v; apt-get install postgresql)", err))
		}
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, unavailable(what, fmt.Sprintf("no postgres user (%v)", err))
	}
	if os.Geteuid() != 0 {
		return nil, unavailable(what, "not root, so the server cannot be run as user postgres")
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user: uid %q, gid %q", u.Uid, u.Gid)
	}
	return &postgres{uid: uint32(uid), gid: uint32(gid)}, nil
}

// command runs a PostgreSQL program as user postgres, in dir.
func (pg *postgres) command(ctx context.Context, dir, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: pg.uid, Gid: pg.gid}}
	return cmd
}

// chown gives a directory to user postgres and checks that the filesystem kept the owner.
func (pg *postgres) chown(dir string) error {
	if err := os.Chown(dir, int(pg.uid), int(pg.gid)); err != nil {
		return fmt.Errorf("chown %s to postgres: %w", dir, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	if st.Uid != pg.uid || st.Gid != pg.gid {
		return fmt.Errorf("chown %s to postgres (%d:%d): owner is %d:%d", dir, pg.uid, pg.gid, st.Uid, st.Gid)
	}
	return nil
}

var pgbenchTPS = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)

// runPgbench initialises a cluster in a directory on the target (owned by postgres), starts its
// server on a free port of 127.0.0.1 with a private socket directory, loads pgbench's tables
// (-i -s PgScale) and runs the default read-write transaction mix with 4 clients on 2 threads for
// PgDuration. The server log and socket live outside the target.
func runPgbench(ctx context.Context, e *env, dir string, rep int, rec recorder) (err error) {
	pg, err := findPostgres()
	if err != nil {
		return err
	}
	base := filepath.Join(dir, "pgbench")
	if err := os.Mkdir(base, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(base)
	run, err := os.MkdirTemp("", "fusevol-bench-pg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(run)
	for _, d := range []string{run, base} { // run first: it is the commands' working directory
		if err := pg.chown(d); err != nil {
			return err
		}
		if _, err := runTool(pg.command(ctx, run, "/bin/sh", "-c", `test -w "$0" && test -x "$0"`, d)); err != nil {
			return fmt.Errorf("user postgres cannot use %s (its parent directories must be searchable by others): %w", d, err)
		}
	}
	data, logFile := filepath.Join(base, "data"), filepath.Join(run, "server.log")
	withLog := func(err error) error {
		if b, rerr := os.ReadFile(logFile); rerr == nil && len(b) > 0 {
			return fmt.Errorf("%w; server log: %s", err, tail(string(b), 1500))
		}
		return err
	}
	if _, err := runTool(pg.command(ctx, run, pgBinDir+"/initdb", "-D", data, "-U", "postgres",
		"--auth=trust", "--locale=C", "--encoding=UTF8", "--no-sync")); err != nil {
		return fmt.Errorf("initdb on the target: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf("\n# fusevol-bench\nlisten_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n", port, run)
	if err := appendFile(filepath.Join(data, "postgresql.conf"), conf); err != nil {
		return err
	}
	if _, err := runTool(pg.command(ctx, run, pgBinDir+"/pg_ctl", "-D", data, "-l", logFile, "-w", "-t", "120", "start")); err != nil {
		pg.stop(ctx, run, data)
		return withLog(fmt.Errorf("start PostgreSQL: %w", err))
	}
	defer func() {
		if serr := pg.stop(ctx, run, data); serr != nil && err == nil {
			err = withLog(serr)
		}
	}()
	conn := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres"}
	init := append([]string{"-i", "-s", strconv.Itoa(e.cfg.PgScale), "-q"}, conn...)
	if _, err := runTool(pg.command(ctx, run, pgbench, append(init, "postgres")...)); err != nil {
		return withLog(fmt.Errorf("pgbench -i: %w", err))
	}
	secs := int(e.cfg.PgDuration / time.Second)
	bench := append([]string{"-n", "-c", "4", "-j", "2", "-T", strconv.Itoa(secs)}, conn...)
	out, err := runTool(pg.command(ctx, run, pgbench, append(bench, "postgres")...))
	if err != nil {
		return withLog(fmt.Errorf("pgbench: %w", err))
	}
	m := pgbenchTPS.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("pgbench printed no TPS figure: %s", tail(string(out), 1000))
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return err
	}
	rec(MPgbenchTPS, tps)
	return nil
}

// stop shuts the server down (fast, then immediate if that fails).
func (pg *postgres) stop(ctx context.Context, run, data string) error {
	ctx = context.WithoutCancel(ctx)
	if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err != nil {
		return nil // not running
	}
	_, err := runTool(pg.command(ctx, run, pgBinDir+"/pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "stop"))
	if err != nil {
		_, ierr := runTool(pg.command(ctx, run, pgBinDir+"/pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"))
		if ierr != nil {
			return fmt.Errorf("stop PostgreSQL: %w; immediate: %v", err, ierr)
		}
		return fmt.Errorf("stop PostgreSQL (fast): %w", err)
	}
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that nothing listens on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
