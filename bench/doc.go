// Package bench is fusevol's side-by-side benchmark harness: it runs the same workloads on
// several targets (a native directory, go-fuse's loopback filesystem over a native directory, a
// fresh fusevol volume served by a daemon it starts, and any already-mounted directory) and reports
// each figure with its ratio to native and to loopback, as a table, a JSON file and an SVG chart,
// followed by the goals of the project checked against the same run. The command is
// bench/cmd/fusevol-bench (`make bench`, `make bench-smoke`); BenchmarkWorkloads runs the same
// workloads as Go benchmarks on an in-process fusevol mount, for pprof.
//
// Besides its own Go workloads, the harness runs what a database in a volume does, with the
// real programs: fio's 4 KiB write+fsync loop (one writer, then four in one volume and four in
// four volumes), SQLite commits in WAL and rollback-journal mode (python3's sqlite3 module), and
// PostgreSQL 15's pgbench on a cluster it initialises on the target (as user postgres, on a port
// and socket of its own; the system's clusters are never used). A missing program skips its
// workload with a warning (fio falls back to an equivalent Go loop), except under CI=true, where
// it is an error. The database workloads take minutes, so they run Config.DBReps repetitions.
//
// Invariants: every target sees byte-identical data (the generators are seeded), written data is
// incompressible and never repeats a 4 KiB block unless a workload asks for duplicates (so
// deduplication cannot flatter a result), each figure is the median of the repetitions, and a
// workload that fails is recorded as an error for that target rather than as a number.
package bench
