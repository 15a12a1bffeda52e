package backend

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Chunk sizes a volume may use, and the default (see README: chosen by benchmark).
const (
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 4 << 20
	DefaultChunkSize = 256 << 10
)

// Compression codecs for chunk bodies.
var compressionCodecs = []string{"none", "s2", "zstd"}

// VolumeOptions are a volume's creation options (docker volume create -o KEY=VALUE).
type VolumeOptions struct {
	Size        int64  `json:"size,omitempty"` // quota in bytes, 0 = none
	ChunkSize   int    `json:"chunk_size"`     // bytes, power of two in [64 KiB, 4 MiB]
	Compression string `json:"compression"`    // "none", "s2" or "zstd"
	UID         uint32 `json:"uid"`            // owner of the root directory
	GID         uint32 `json:"gid"`
	Mode        uint32 `json:"mode"`           // permission bits of the root directory, 1 to 07777
	From        string `json:"from,omitempty"` // "VOLUME@SNAPSHOT" for a clone
	// Schedule is given with the snapshot-* options; CreateVolume stores it under its own key
	// (schedule.go), not in the volume record, so it is never part of the stored options.
	Schedule SchedulePolicy `json:"-"`
}

// ValidateName checks a volume or snapshot name: 1–255 bytes of [A-Za-z0-9][A-Za-z0-9_.-]*.
// The error says what is wrong with it.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name is %d bytes, the limit is %d", ErrInvalid, len(name), MaxNameLen)
	case !isAlnum(name[0]):
		return fmt.Errorf("%w: name %q must start with a letter or digit", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return fmt.Errorf("%w: name %q contains %q; allowed are letters, digits, '_', '.' and '-'", ErrInvalid, name, string(rune(c)))
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// optionParsers maps each accepted option to its parser.
var optionParsers = map[string]func(*VolumeOptions, string) error{
	"size": func(o *VolumeOptions, v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("must be positive")
		}
		o.Size = n
		return nil
	},
	"chunk-size": func(o *VolumeOptions, v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
			return fmt.Errorf("must be a power of two from 64KiB to 4MiB")
		}
		o.ChunkSize = int(n)
		return nil
	},
	"compression": func(o *VolumeOptions, v string) error {
		for _, c := range compressionCodecs {
			if v == c {
				o.Compression = v
				return nil
			}
		}
		return fmt.Errorf("accepted values: %s", strings.Join(compressionCodecs, ", "))
	},
	"uid": func(o *VolumeOptions, v string) error { return parseUint32(v, 10, &o.UID) },
	"gid": func(o *VolumeOptions, v string) error { return parseUint32(v, 10, &o.GID) },
	"mode": func(o *VolumeOptions, v string) error {
		if err := parseUint32(v, 8, &o.Mode); err != nil {
			return fmt.Errorf("an octal permission such as 0755")
		}
		if o.Mode == 0 || o.Mode > 07777 {
			return fmt.Errorf("an octal permission such as 0755 (from 1 to 07777)")
		}
		return nil
	},
	"from": func(o *VolumeOptions, v string) error {
		vol, snap, ok := strings.Cut(v, "@")
		if !ok || ValidateVolumeRef(vol) != nil || ValidateName(snap) != nil {
			return fmt.Errorf("the form VOLUME@SNAPSHOT with valid names")
		}
		o.From = v
		return nil
	},
	"snapshot-every":        scheduleOption("snapshot-every"),
	"snapshot-keep":         scheduleOption("snapshot-keep"),
	"snapshot-keep-hourly":  scheduleOption("snapshot-keep-hourly"),
	"snapshot-keep-daily":   scheduleOption("snapshot-keep-daily"),
	"snapshot-keep-weekly":  scheduleOption("snapshot-keep-weekly"),
	"snapshot-keep-monthly": scheduleOption("snapshot-keep-monthly"),
}

func parseUint32(s string, base int, dst *uint32) error {
	n, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return fmt.Errorf("a non-negative integer below 2^32")
	}
	*dst = uint32(n)
	return nil
}

// DefaultMode is the permission bits of a volume's root directory when no mode is given.
const DefaultMode = 0o755

// withDefaults fills in o's zero fields that have a default (chunk size, compression, mode): the
// one place the defaults are decided, applied by both ParseVolumeOptions and CreateVolume.
func (o VolumeOptions) withDefaults() VolumeOptions {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Compression == "" {
		o.Compression = "none"
	}
	if o.Mode == 0 {
		o.Mode = DefaultMode
	}
	return o
}

// DefaultVolumeOptions are the options of a volume created without any.
func DefaultVolumeOptions() VolumeOptions { return VolumeOptions{}.withDefaults() }

// ParseVolumeOptions parses docker's -o KEY=VALUE map (nil is fine) into options with defaults
// filled in. An unknown key or a bad value is an error naming the option and the accepted values.
func ParseVolumeOptions(opts map[string]string) (VolumeOptions, error) {
	var o VolumeOptions
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parse, ok := optionParsers[k]
		if !ok {
			return o, fmt.Errorf("%w: unknown option %q; accepted options: %s", ErrInvalid, k, strings.Join(optionNames(), ", "))
		}
		if err := parse(&o, strings.TrimSpace(opts[k])); err != nil {
			return o, fmt.Errorf("%w: option %s=%q: %v", ErrInvalid, k, opts[k], err)
		}
	}
	if !o.Schedule.IsZero() {
		if err := o.Schedule.Validate(); err != nil {
			return o, fmt.Errorf("options %s: %w", strings.Join(scheduleOptionKeys, ", "), err)
		}
	}
	return o.withDefaults(), nil
}

func optionNames() []string {
	names := make([]string, 0, len(optionParsers))
	for k := range optionParsers {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"B", 1}, {"b", 1},
}

// ParseSize parses a byte count: a plain number or one with a unit (512MiB, 10GiB, 1G = 1 GiB, 1GB = 10^9).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("a byte count such as 512MiB, 10GiB, 1G or 1073741824")
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("too large")
	}
	return n * mult, nil
}
