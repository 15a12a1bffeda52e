package cli

import (
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    map[string]string
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{"size=1GiB"}, map[string]string{"size": "1GiB"}, ""},
		{[]string{"from=v@s", "mode=0700"}, map[string]string{"from": "v@s", "mode": "0700"}, ""},
		{[]string{"label=a=b"}, map[string]string{"label": "a=b"}, ""},
		{[]string{"empty="}, map[string]string{"empty": ""}, ""},
		{[]string{"size"}, nil, `option "size": want KEY=VALUE`},
		{[]string{"=1"}, nil, `option "=1": want KEY=VALUE`},
		{[]string{"a=1", "a=2"}, nil, `option "a" given twice`},
	} {
		got, err := parseOptions(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("parseOptions(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("parseOptions(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("parseOptions(%q)[%q] = %q, want %q", tc.in, k, got[k], v)
			}
		}
	}
}

// FuzzParseOptions: every accepted option is kept exactly; everything else is an error.
func FuzzParseOptions(f *testing.F) {
	f.Add("size=1GiB", "compression=zstd")
	f.Add("a=b=c", "a=d")
	f.Add("=", "")
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := parseOptions([]string{a, b})
		if err != nil {
			return
		}
		ka, va, _ := strings.Cut(a, "=")
		kb, vb, _ := strings.Cut(b, "=")
		if ka == kb || ka == "" || kb == "" || got[ka] != va || got[kb] != vb || len(got) != 2 {
			t.Fatalf("parseOptions(%q, %q) = %v", a, b, got)
		}
	})
}
