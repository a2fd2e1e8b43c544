package printer

import (
	"bytes"
	"strings"
	"testing"
)

func TestStructured(t *testing.T) {
	v := map[string]any{"name": "bkhub", "port": 5500}
	tests := []struct {
		format, want, wantErr string
		handled               bool
	}{
		{"json", "{\n  \"name\": \"bkhub\",\n  \"port\": 5500\n}\n", "", true},
		{"yaml", "name: bkhub\nport: 5500\n", "", true},
		{"", "", "", false},
		{"table", "", "", false},
		{"xml", "", "unknown output format \"xml\"", true},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		handled, err := Structured(&buf, tc.format, v)
		if handled != tc.handled || buf.String() != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("-o %q: handled %v, %q, %v", tc.format, handled, buf.String(), err)
		}
	}
}

func TestVersion(t *testing.T) {
	for format, want := range map[string]string{
		"":     "kubectl-bkcache dev\n",
		"json": "{\n  \"plugin\": \"kubectl-bkcache\",\n  \"version\": \"dev\"\n}\n",
		"yaml": "plugin: kubectl-bkcache\nversion: dev\n",
	} {
		var b bytes.Buffer
		if err := Version(&b, format, "kubectl-bkcache"); err != nil || b.String() != want {
			t.Errorf("-o %q: %v\n%q, want %q", format, err, b.String(), want)
		}
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{-1: "?", 0: "0B", 999: "999B", 1000: "1kB", 1536: "1.536kB", 208 << 20: "218.1MB", 3_000_000_000: "3GB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
