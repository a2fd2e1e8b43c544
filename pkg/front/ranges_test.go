package front

import (
	"testing"
)

func TestRanges(t *testing.T) {
	const size = 1000
	for _, tt := range []struct {
		h                    string
		kind                 rangeKind
		probe                bool
		start, end           int64
		partial, satisfiable bool
	}{
		{"", rangeNone, false, 0, size, false, true},
		{"bytes=0-0", rangeSingle, true, 0, 1, true, true},
		{"bytes=10-19", rangeSingle, true, 10, 20, true, true},
		{"bytes=990-2000", rangeSingle, true, 990, size, true, true},
		{"bytes=10-", rangeSingle, false, 10, size, true, true},
		{"bytes=-100", rangeSingle, true, 900, size, true, true},
		{"bytes=-5000", rangeSingle, true, 0, size, true, true},
		{"bytes=-0", rangeSingle, true, 0, 0, false, false},
		{"bytes=1000-", rangeSingle, false, 0, 0, false, false},
		{"bytes=0-70000", rangeSingle, false, 0, size, true, true},
		{"bytes=0-1,5-6", rangeMulti, false, 0, size, false, true},
		{"bytes=9-1", rangeNone, false, 0, size, false, true},
		{"items=0-1", rangeNone, false, 0, size, false, true},
		{"bytes=x-1", rangeNone, false, 0, size, false, true},
		{"bytes=0-1,x", rangeNone, false, 0, size, false, true},
	} {
		r := parseRange(tt.h)
		start, end, partial, ok := r.resolve(size)
		if r.kind != tt.kind || r.probeSized() != tt.probe || ok != tt.satisfiable || (ok && (start != tt.start || end != tt.end || partial != tt.partial)) {
			t.Errorf("%q: kind %d probe %v -> [%d,%d) partial %v ok %v", tt.h, r.kind, r.probeSized(), start, end, partial, ok)
		}
	}
}
