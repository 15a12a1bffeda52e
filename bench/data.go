package bench

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
)

// blockSize is the unit the generators keep unique: every 4 KiB block they produce carries its
// own (stream, index) stamp, so no fixed-size chunking of 4 KiB or more can find duplicates.
const blockSize = 4096

// pools holds the read-only material the generators copy from: random bytes and text made of
// words, both seeded so that every target and every run sees the same bytes.
type pools struct {
	random []byte
	text   []byte
}

const poolSize = 8 << 20

func newPools() *pools {
	r := rand.New(rand.NewChaCha8([32]byte{'f', 'u', 's', 'e', 'v', 'o', 'l'}))
	p := &pools{random: make([]byte, poolSize), text: make([]byte, 0, poolSize+64)}
	for i := 0; i < poolSize; i += 8 {
		binary.LittleEndian.PutUint64(p.random[i:], r.Uint64())
	}
	words := strings.Fields(`func return if else for range err nil struct type package import
		var const int string byte error context ctx := = == != { } ( ) [ ] , . ; // the of and to in
		is that with for as on buffer write read file inode chunk volume snapshot mount fsync
		0 1 2 42 4096 true false len cap make append copy delete new panic defer go select case`)
	for len(p.text) < poolSize {
		p.text = append(p.text, words[r.IntN(len(words))]...)
		if r.IntN(8) == 0 {
			p.text = append(p.text, '\n', '\t')
		} else {
			p.text = append(p.text, ' ')
		}
	}
	p.text = p.text[:poolSize]
	return p
}

// source produces an endless, deterministic stream of unique 4 KiB blocks. Two sources built with
// the same pool and stream id produce the same bytes (the dedup workload relies on it).
type source struct {
	pool   []byte
	text   bool
	stream uint64
	next   uint64
}

func (p *pools) randomSource(stream uint64) *source {
	return &source{pool: p.random, stream: stream}
}

func (p *pools) textSource(stream uint64) *source {
	return &source{pool: p.text, text: true, stream: stream}
}

// fill overwrites buf (a multiple of blockSize long, or shorter than one block) with the next blocks.
func (s *source) fill(buf []byte) {
	for off := 0; off < len(buf); off += blockSize {
		end := min(off+blockSize, len(buf))
		blk := buf[off:end]
		h := mix(s.stream*0x9e3779b97f4a7c15 ^ s.next)
		src := int(h%uint64(len(s.pool)/blockSize)) * blockSize
		copy(blk, s.pool[src:src+len(blk)])
		s.stamp(blk)
		s.next++
	}
}

// stamp writes the block's identity over its first 16 bytes (as hex text for text streams, so
// they stay compressible and printable).
func (s *source) stamp(blk []byte) {
	var id [16]byte
	if s.text {
		const hex = "0123456789abcdef"
		v := s.stream<<40 ^ s.next
		for i := 15; i >= 0; i-- {
			id[i] = hex[v&15]
			v >>= 4
		}
	} else {
		binary.LittleEndian.PutUint64(id[:8], s.stream)
		binary.LittleEndian.PutUint64(id[8:], s.next)
	}
	copy(blk, id[:])
}

// mix is splitmix64's finaliser: a cheap bijective scrambler.
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
