package repository

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/fusevol/fusevol/backend/sendstream"
)

// ErrDamaged is wrapped by every error about a repository object whose bytes are not what was
// written: a chunk whose content does not match its name, a backup file that does not check out.
var ErrDamaged = errors.New("repository object damaged")

// Hash is a chunk's BLAKE3-256 hash, its address.
type Hash = [sendstream.HashSize]byte

// Chunk codecs: the first byte of a chunk object.
const (
	codecPlain byte = 0
	codecZstd  byte = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func chunkName(h Hash) string {
	x := hex.EncodeToString(h[:])
	return "chunks/" + x[:2] + "/" + x
}

// codec compresses chunks; one per Repository (zstd's encoder and decoder are safe for
// concurrent use and costly to make).
type codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func newCodec() (*codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(4))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(4), zstd.WithDecoderMaxMemory(sendstream.MaxBody+1))
	if err != nil {
		return nil, err
	}
	return &codec{enc: enc, dec: dec}, nil
}

// encodeChunk is a chunk object: a codec byte, then the plain bytes or, when smaller, their
// zstd frame.
func (c *codec) encodeChunk(data []byte) []byte {
	z := c.enc.EncodeAll(data, []byte{codecZstd})
	if len(z) < len(data)+1-len(data)/32 {
		return z
	}
	return append([]byte{codecPlain}, data...)
}

// decodeChunk returns the plain bytes of chunk object b, checked against h: any other bytes
// are ErrDamaged, never data.
func (c *codec) decodeChunk(h Hash, b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: chunk %x: empty", ErrDamaged, h[:8])
	}
	var data []byte
	switch b[0] {
	case codecPlain:
		data = b[1:]
	case codecZstd:
		var err error
		if data, err = c.dec.DecodeAll(b[1:], make([]byte, 0, 1<<16)); err != nil {
			return nil, fmt.Errorf("%w: chunk %x: %v", ErrDamaged, h[:8], err)
		}
	default:
		return nil, fmt.Errorf("%w: chunk %x: unknown codec %d", ErrDamaged, h[:8], b[0])
	}
	if len(data) == 0 || len(data) > sendstream.MaxBody || blake3.Sum256(data) != h {
		return nil, fmt.Errorf("%w: chunk %x: content does not match its hash", ErrDamaged, h[:8])
	}
	return data, nil
}

// Backup describes one backup: the snapshot it holds and what it cost.
type Backup struct {
	Volume     string    `json:"volume"`
	Snapshot   string    `json:"snapshot"`
	SnapshotID string    `json:"snapshot_id"` // the snapshot's identity (incremental streams name their base by it)
	Created    time.Time `json:"created"`     // when the snapshot was taken
	BackedUp   time.Time `json:"backed_up"`   // when the backup was complete
	Inodes     int64     `json:"inodes"`
	Chunks     int64     `json:"chunks"` // distinct chunks the snapshot uses
	Bytes      int64     `json:"bytes"`  // plain bytes of those chunks
	Added      int64     `json:"added"`  // chunks this backup wrote (the others were in the repository)
	AddedBytes int64     `json:"added_bytes"`
}

// Backup file ("backups/VOLUME/SNAPSHOT"):
//
//	magic "FVBACKUP" version:u32 metaLen:u32 meta[metaLen] (JSON: Backup) crc:u32 manifest
//
// crc is the CRC-32C of everything before it; the manifest is a full sendstream without Body
// records (the chunks are objects of their own), checked by its own records' CRCs and trailer.
const (
	backupMagic   = "FVBACKUP"
	backupVersion = 1
	maxMeta       = 64 << 10
)

func backupName(volume, snapshot string) string { return "backups/" + volume + "/" + snapshot }

func encodeBackupPrefix(b Backup) ([]byte, error) {
	meta, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	p := binary.BigEndian.AppendUint32([]byte(backupMagic), backupVersion)
	p = binary.BigEndian.AppendUint32(p, uint32(len(meta)))
	p = append(p, meta...)
	return binary.BigEndian.AppendUint32(p, crc32.Checksum(p, castagnoli)), nil
}

// readBackupPrefix reads a backup file's description from r, leaving r at the manifest.
func readBackupPrefix(r io.Reader) (Backup, error) {
	var b Backup
	head := make([]byte, len(backupMagic)+8)
	if _, err := io.ReadFull(r, head); err != nil {
		return b, fmt.Errorf("%w: backup file: %v", ErrDamaged, noEOF(err))
	}
	if string(head[:len(backupMagic)]) != backupMagic {
		return b, fmt.Errorf("%w: not a backup file", ErrDamaged)
	}
	if v := binary.BigEndian.Uint32(head[len(backupMagic):]); v != backupVersion {
		return b, fmt.Errorf("%w: backup file version %d (this volctl reads %d)", ErrDamaged, v, backupVersion)
	}
	n := binary.BigEndian.Uint32(head[len(backupMagic)+4:])
	if n > maxMeta {
		return b, fmt.Errorf("%w: backup file: description of %d bytes", ErrDamaged, n)
	}
	rest := make([]byte, n+4)
	if _, err := io.ReadFull(r, rest); err != nil {
		return b, fmt.Errorf("%w: backup file: %v", ErrDamaged, noEOF(err))
	}
	all := append(head, rest[:n]...)
	if crc32.Checksum(all, castagnoli) != binary.BigEndian.Uint32(rest[n:]) {
		return b, fmt.Errorf("%w: backup file: description checksum mismatch", ErrDamaged)
	}
	if err := json.Unmarshal(rest[:n], &b); err != nil {
		return b, fmt.Errorf("%w: backup file: %v", ErrDamaged, err)
	}
	return b, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Repository config ("config"): JSON, written once when the repository is made.
type config struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	ID      string `json:"id"`
}

const (
	configName    = "config"
	configFormat  = "fusevol-repository"
	configVersion = 1
)

func parseChunkName(n string) (Hash, bool) {
	var h Hash
	x, ok := strings.CutPrefix(n, "chunks/")
	if !ok || len(x) != 3+2*len(h) || x[2] != '/' || x[:2] != x[3:5] {
		return h, false
	}
	if _, err := hex.Decode(h[:], []byte(x[3:])); err != nil || hex.EncodeToString(h[:]) != x[3:] {
		return h, false
	}
	return h, true
}
