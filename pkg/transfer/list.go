// Package transfer moves images between registries with go-containerregistry:
// image lists, pushes into an intranet registry, cache warming and archives.
// Each blob crosses the upstream link once per run (see BlobCache).
package transfer

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Entry is one image of a list, with the line it came from.
type Entry struct {
	Line int
	Ref  name.Reference
}

// LineError is a list line that names no valid image.
type LineError struct {
	Line int
	Text string
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("line %d: %q is not an image reference: %v", e.Line, e.Text, e.Err)
}

// ParseList reads one image reference per line; `#` starts a comment. A line
// of the BlueKing chart-images format (`chart version image image …`) yields
// its images. Bad lines are returned as errors with their line numbers and the
// rest is kept; duplicates are dropped.
func ParseList(r io.Reader, opts ...name.Option) ([]Entry, []error) {
	var entries []Entry
	var errs []error
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) <= 1:
		case len(fields) >= 3 && !looksLikeReference(fields[0]):
			fields = fields[2:] // chart-images: chart name and version first
		default:
			// Guessing here could send a typo to Docker Hub: refuse the line.
			errs = append(errs, &LineError{Line: n, Text: strings.TrimSpace(line), Err: fmt.Errorf("want one reference per line, or the chart-images form `chart version image…`")})
			continue
		}
		for _, f := range fields {
			ref, err := name.ParseReference(f, opts...)
			if err != nil {
				errs = append(errs, &LineError{Line: n, Text: f, Err: err})
				continue
			}
			if seen[ref.Name()] {
				continue
			}
			seen[ref.Name()] = true
			entries = append(entries, Entry{Line: n, Ref: ref})
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read list: %w", err))
	}
	return entries, errs
}

// looksLikeReference tells an image from a chart name in a chart-images line:
// images carry a registry, a path, a tag or a digest; chart names none of these.
func looksLikeReference(s string) bool {
	return strings.ContainsAny(s, "/:@")
}
