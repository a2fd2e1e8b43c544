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
	v := strings.TrimSpace(s)
	if v == "" {
		return 0, fmt.Errorf("empty size: give bytes, e.g. 500G or 40MiB (0: none)")
	}
	num := strings.TrimRight(v, "KkMmGgTtiIBb")
	unit := strings.ToUpper(v[len(num):])
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	mult, ok := map[string]float64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit; use K, M, G or T (1024-based), e.g. 500G", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("size %q: not a number of bytes; use e.g. 500G or 40MiB (0: none)", s)
	}
	b := f * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if b > 0 && b < 1 {
		return 0, fmt.Errorf("size %q is below 1 byte", s)
	}
	return int64(b), nil
}
