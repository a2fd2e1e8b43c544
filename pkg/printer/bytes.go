package printer

import "github.com/docker/go-units"

// Bytes says a size the way docker does (go-units' HumanSize, decimal units:
// 1 MB = 1000000 bytes), so summaries match docker's own progress bars and
// ours; "?" for an unknown (negative) size.
func Bytes(n int64) string {
	if n < 0 {
		return "?"
	}
	return units.HumanSize(float64(n))
}
