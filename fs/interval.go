package fs

import (
	"cmp"
	"slices"
)

// interval is a half-open range [lo, hi) of offsets.
type interval[T int | uint64] struct{ lo, hi T }

// addInterval returns rs (sorted, disjoint) with [lo, hi) added, merging the intervals it overlaps
// or touches. rs itself is not modified.
func addInterval[T int | uint64](rs []interval[T], lo, hi T) []interval[T] {
	out := rs[:0:0]
	for _, r := range rs {
		if r.hi < lo || r.lo > hi {
			out = append(out, r)
			continue
		}
		lo, hi = min(lo, r.lo), max(hi, r.hi)
	}
	out = append(out, interval[T]{lo, hi})
	slices.SortFunc(out, func(a, b interval[T]) int { return cmp.Compare(a.lo, b.lo) })
	return out
}
