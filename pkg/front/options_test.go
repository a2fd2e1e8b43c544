package front

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""},
		{"500000", 500000, ""},
		{"20M", 20 << 20, ""},
		{"20m", 20 << 20, ""},
		{"512K", 512 << 10, ""},
		{"512KiB", 512 << 10, ""},
		{"20MB", 20 << 20, ""},
		{"1.5G", 3 << 29, ""},
		{"2M/s", 2 << 20, ""},
		{"", 0, "empty rate"},
		{"-1", 0, `"-1"`},
		{"20X", 0, `"20X"`},
		{"fast", 0, `"fast"`},
		{"M", 0, `"M"`},
		{"0.5", 0, "below 1 byte"},
		{"20T", 0, `"20T"`},
	} {
		got, err := ParseRate(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseRate(%q) = %d, %v; want an error containing %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := ParseFlags([]string{"--listen", ":5500", "--metrics-listen", "127.0.0.1:5501", "--upstream-rate", "20M"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Listen != ":5500" || o.MetricsListen != "127.0.0.1:5501" || o.UpstreamRate != 20<<20 ||
		o.RegistryConfig != DefaultRegistryConfig || o.RunDir != DefaultRunDir || o.RegistryBin != DefaultRegistryBin {
		t.Errorf("%+v", o)
	}
	for _, bad := range [][]string{{"--upstream-rate", "lots"}, {"--nope"}, {"extra"}, {"--listen", ""}} {
		if _, err := ParseFlags(bad); err == nil {
			t.Errorf("ParseFlags(%q) accepted", bad)
		}
	}
}
