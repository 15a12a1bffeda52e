package fs

import (
	"slices"
)

// byteRange is [lo, hi) of a file.
type byteRange = interval[uint64]

// lostData is what a file lost: data a write was acknowledged for that no commit could store.
// Every later fsync and close of the file reports err until the ranges are written again,
// truncated away or the file is deleted (a local filesystem reports a failed write-back once per
// open file; reporting it until the data is rewritten tells every open the same truth).
type lostData struct {
	err    error
	ranges []byteRange // sorted, disjoint, not touching
}

// maxLostRanges bounds the ranges kept per file; past it the closest two merge (the bytes
// between them then count as lost too).
const maxLostRanges = 64

func (l *lostData) any() bool { return len(l.ranges) > 0 }

// add records [lo, hi) as lost because of err.
func (l *lostData) add(lo, hi uint64, err error) {
	if lo >= hi {
		return
	}
	if !l.any() {
		l.err = err
	}
	l.ranges = addInterval(l.ranges, lo, hi)
	l.bound()
}

// bound merges the closest ranges while there are more than maxLostRanges.
func (l *lostData) bound() {
	for len(l.ranges) > maxLostRanges {
		rs, k := l.ranges, 0
		for i := 1; i+1 < len(rs); i++ {
			if rs[i+1].lo-rs[i].hi < rs[k+1].lo-rs[k].hi {
				k = i
			}
		}
		rs[k].hi = rs[k+1].hi
		l.ranges = slices.Delete(rs, k+1, k+2)
	}
}

// remove forgets [lo, hi): written again.
func (l *lostData) remove(lo, hi uint64) {
	if !l.any() || lo >= hi {
		return
	}
	out := l.ranges[:0:0]
	for _, r := range l.ranges {
		if r.hi <= lo || r.lo >= hi {
			out = append(out, r)
			continue
		}
		if r.lo < lo {
			out = append(out, byteRange{r.lo, lo})
		}
		if r.hi > hi {
			out = append(out, byteRange{hi, r.hi})
		}
	}
	l.ranges = out
	l.bound()
	if !l.any() {
		l.err = nil
	}
}

// truncate forgets what lies at or past size.
func (l *lostData) truncate(size uint64) { l.remove(size, 1<<64-1) }
