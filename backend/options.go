package backend

// VolumeOptions are a volume's creation options (docker volume create -o KEY=VALUE).
type VolumeOptions struct {
	Size        int64  `json:"size,omitempty"` // quota in bytes, 0 = none
	ChunkSize   int    `json:"chunk_size"`     // bytes, power of two in [64 KiB, 4 MiB]
	Compression string `json:"compression"`    // "none", "s2" or "zstd"
	UID         uint32 `json:"uid"`            // owner of the root directory
	GID         uint32 `json:"gid"`
	Mode        uint32 `json:"mode"`           // permission bits of the root directory
	From        string `json:"from,omitempty"` // "VOLUME@SNAPSHOT" for a clone
}

// ValidateName checks a volume or snapshot name: 1–255 bytes of [A-Za-z0-9][A-Za-z0-9_.-]*.
// The error says what is wrong with it.
func ValidateName(name string) error { return ErrNotSupp }

// ParseVolumeOptions parses docker's -o KEY=VALUE map (nil is fine) into options with defaults
// filled in. An unknown key or a bad value is an error naming the option and the accepted values.
func ParseVolumeOptions(opts map[string]string) (VolumeOptions, error) {
	return VolumeOptions{}, ErrNotSupp
}
