package front

import (
	"net/http"
	"strconv"
	"strings"
)

// rangeKind is what a Range header asks for.
type rangeKind int

const (
	rangeNone   rangeKind = iota // no header, or one to ignore (RFC 9110: an invalid Range is ignored)
	rangeSingle                  // one range
	rangeMulti                   // several: the whole blob is sent, as 200
)

// byteRange is one Range header's request.
type byteRange struct {
	kind rangeKind
	// first and last as written in bytes=first-last; last is -1 for bytes=first-.
	first, last int64
	// suffix is N of bytes=-N (then first is -1).
	suffix int64
}

// parseRange reads a Range header.
func parseRange(h string) byteRange {
	h = strings.TrimSpace(h)
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return byteRange{}
	}
	if strings.Contains(spec, ",") {
		for _, part := range strings.Split(spec, ",") {
			if _, ok := parseOne(strings.TrimSpace(part)); !ok {
				return byteRange{}
			}
		}
		return byteRange{kind: rangeMulti}
	}
	r, ok := parseOne(strings.TrimSpace(spec))
	if !ok {
		return byteRange{}
	}
	return r
}

func parseOne(s string) (byteRange, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return byteRange{}, false
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return byteRange{}, false
		}
		return byteRange{kind: rangeSingle, first: -1, last: -1, suffix: n}, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return byteRange{}, false
	}
	last := int64(-1)
	if b != "" {
		last, err = strconv.ParseInt(b, 10, 64)
		if err != nil || last < first {
			return byteRange{}, false
		}
	}
	return byteRange{kind: rangeSingle, first: first, last: last}, true
}

// resolve places the range on a blob of size bytes: the half-open span
// [start, end) to send and whether it is partial (206). ok is false when the
// range cannot be satisfied (416).
func (r byteRange) resolve(size int64) (start, end int64, partial, ok bool) {
	if r.kind != rangeSingle {
		return 0, size, false, true
	}
	if r.first < 0 {
		if r.suffix == 0 {
			return 0, 0, false, false
		}
		return max(size-r.suffix, 0), size, true, true
	}
	if r.first >= size {
		return 0, 0, false, false
	}
	end = size
	if r.last >= 0 && r.last+1 < size {
		end = r.last + 1
	}
	return r.first, end, true, true
}

// writeRangeNotSatisfiable answers 416 with the blob's size.
func writeRangeNotSatisfiable(w http.ResponseWriter, size int64) {
	w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
	writeError(w, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "the range asked for is not within the blob's "+strconv.FormatInt(size, 10)+" bytes", nil)
}
