package front

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a size in bytes: plain bytes ("1000000"), or a number with
// K, M, G or T, 1024-based whether written K, KiB or KB ("40MiB", "1.5T",
// "500G"). "0" means none.
func ParseSize(s string) (int64, error) {
	return sizeUnits.parse(s)
}

// ParseRate reads a rate in bytes per second: plain bytes ("500000"), or a
// number with K, M or G (1024-based; "20M", "1.5G", "512KiB" and "20MB" too).
// "0" means no cap.
func ParseRate(s string) (int64, error) {
	return rateUnits.parse(s)
}

// byteUnits is one kind of byte count a user types, and the words its
// errors use.
type byteUnits struct {
	what, per  string // "size", "rate"; " per second"
	cutset     string // the unit letters trimmed off the number
	mult       map[string]float64
	units      string // "K, M, G or T"
	example    string // "500G"
	examples   string // "500G or 40MiB"
	zero       string // what 0 means
	dropSuffix string // "/s": a suffix the unit may carry
}

var (
	sizeUnits = byteUnits{what: "size", cutset: "KkMmGgTtiIBb",
		mult:  map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40},
		units: "K, M, G or T", example: "500G", examples: "500G or 40MiB", zero: "none"}
	rateUnits = byteUnits{what: "rate", per: " per second", cutset: "KkMmGgiIBb/s",
		mult:  map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30},
		units: "K, M or G", example: "20M", examples: "20M or 500000", zero: "no cap", dropSuffix: "/s"}
)

func (u byteUnits) parse(s string) (int64, error) {
	v := strings.TrimSpace(s)
	if v == "" {
		return 0, fmt.Errorf("empty %s: give bytes%s, e.g. %s (0: %s)", u.what, u.per, u.examples, u.zero)
	}
	num := strings.TrimRight(v, u.cutset)
	unit := v[len(num):]
	if u.dropSuffix != "" {
		unit = strings.TrimSuffix(strings.TrimSuffix(unit, u.dropSuffix), strings.ToUpper(u.dropSuffix))
	}
	unit = strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(unit), "B"), "I")
	mult, ok := u.mult[unit]
	if !ok {
		return 0, fmt.Errorf("%s %q: unknown unit; use %s (1024-based), e.g. %s", u.what, s, u.units, u.example)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("%s %q: not a number of bytes%s; use e.g. %s (0: %s)", u.what, s, u.per, u.examples, u.zero)
	}
	b := f * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("%s %q is too large", u.what, s)
	}
	if b > 0 && b < 1 {
		return 0, fmt.Errorf("%s %q is below 1 byte%s", u.what, s, u.per)
	}
	return int64(b), nil
}
