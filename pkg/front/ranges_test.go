package front

import (
	"testing"
)

func TestRanges(t *testing.T) {
	const size = 1000
	for _, tt := range []struct {
		h                    string
		kind                 rangeKind
		start, end           int64
		partial, satisfiable bool
	}{
		{"", rangeNone, 0, size, false, true},
		{"bytes=0-0", rangeSingle, 0, 1, true, true},
		{"bytes=10-19", rangeSingle, 10, 20, true, true},
		{"bytes=990-2000", rangeSingle, 990, size, true, true},
		{"bytes=10-", rangeSingle, 10, size, true, true},
		{"bytes=-100", rangeSingle, 900, size, true, true},
		{"bytes=-5000", rangeSingle, 0, size, true, true},
		{"bytes=-0", rangeSingle, 0, 0, false, false},
		{"bytes=1000-", rangeSingle, 0, 0, false, false},
		{"bytes=0-70000", rangeSingle, 0, size, true, true},
		{"bytes=0-1,5-6", rangeMulti, 0, size, false, true},
		{"bytes=9-1", rangeNone, 0, size, false, true},
		{"items=0-1", rangeNone, 0, size, false, true},
		{"bytes=x-1", rangeNone, 0, size, false, true},
		{"bytes=0-1,x", rangeNone, 0, size, false, true},
	} {
		r := parseRange(tt.h)
		start, end, partial, ok := r.resolve(size)
		if r.kind != tt.kind || ok != tt.satisfiable || (ok && (start != tt.start || end != tt.end || partial != tt.partial)) {
			t.Errorf("%q: kind %d -> [%d,%d) partial %v ok %v", tt.h, r.kind, start, end, partial, ok)
		}
	}
}
