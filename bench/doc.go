// Package bench is fusevol's side-by-side benchmark harness: it runs the same workloads on
// several targets (a native directory, go-fuse's loopback filesystem over a native directory, a
// fresh fusevol volume served by a daemon it starts, and any already-mounted directory) and reports
// each figure with its ratio to native and to loopback, as a table, a JSON file and an SVG chart,
// followed by the goals of the project checked against the same run. The command is
// bench/cmd/fusevol-bench (`make bench`, `make bench-smoke`); BenchmarkWorkloads runs the same
// workloads as Go benchmarks on an in-process fusevol mount, for pprof.
//
// Invariants: every target sees byte-identical data (the generators are seeded), written data is
// incompressible and never repeats a 4 KiB block unless a workload asks for duplicates (so
// deduplication cannot flatter a result), each figure is the median of the repetitions, and a
// workload that fails is recorded as an error for that target rather than as a number.
package bench
