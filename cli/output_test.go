package cli

import (
	"testing"
	"time"
)

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"},
		{3 << 20, "3 MiB"}, {3<<30 + 1<<29, "3.5 GiB"}, {1 << 40, "1 TiB"}, {1 << 62, "4 EiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"}, {time.Second, "1 second ago"}, {59 * time.Second, "59 seconds ago"},
		{time.Minute, "1 minute ago"}, {90 * time.Minute, "1 hour ago"}, {47 * time.Hour, "47 hours ago"},
		{49 * time.Hour, "2 days ago"}, {-time.Hour, "just now"},
	} {
		if got := ago(now.Add(-tc.d), now); got != tc.want {
			t.Errorf("ago(now-%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if got := ago(time.Time{}, now); got != "-" {
		t.Errorf("ago(zero) = %q", got)
	}
	if got := timestamp(now.Add(-time.Minute), now); got != "2026-01-02T03:03:05Z (1 minute ago)" {
		t.Errorf("timestamp = %q", got)
	}
}
