// Package transfer moves images between registries with go-containerregistry:
// image lists, pushes into an intranet registry, cache warming and archives.
// Each blob crosses the upstream link once per run (see BlobCache).
package transfer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

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

// MaxLineBytes bounds one line of a list. A longer line is reported as one
// bad line and the lines after it are read on.
const MaxLineBytes = 1 << 20

// ParseList reads one image reference per line; `#` starts a comment. A line
// of the BlueKing chart-images format (`chart version image image …`, blanks
// or TABs between) yields its images. Bad lines are returned as errors with
// their line numbers and the rest is kept: a line too long, more than one
// reference on a line, control characters, `.` or `..` path components.
// A UTF-8 byte order mark and CRLF line ends are accepted; duplicates are
// dropped.
func ParseList(r io.Reader, opts ...name.Option) ([]Entry, []error) {
	var entries []Entry
	var errs []error
	seen := map[string]bool{}
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		raw, tooLong, err := readLine(br, MaxLineBytes)
		if err != nil && !errors.Is(err, io.EOF) {
			errs = append(errs, fmt.Errorf("read list: line %d: %w", n, err))
			break
		}
		if len(raw) == 0 && !tooLong && errors.Is(err, io.EOF) {
			break
		}
		if n == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\ufeff"))
		}
		lineErr := func(text string, e error) {
			errs = append(errs, &LineError{Line: n, Text: text, Err: e})
		}
		switch {
		case tooLong:
			lineErr(preview(raw), fmt.Errorf("line longer than %d bytes", MaxLineBytes))
		case !utf8.Valid(raw):
			lineErr(preview(raw), errors.New("not UTF-8 text"))
		case hasControl(raw):
			lineErr(preview(raw), errors.New("control or invisible formatting characters"))
		default:
			for _, ref := range parseLine(string(raw), n, lineErr, opts) {
				if seen[ref.Name()] {
					continue
				}
				seen[ref.Name()] = true
				entries = append(entries, Entry{Line: n, Ref: ref})
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	return entries, errs
}

func parseLine(line string, n int, lineErr func(string, error), opts []name.Option) []name.Reference {
	if i := strings.Index(line, "#"); i >= 0 {
		line = line[:i]
	}
	fields := strings.Fields(line)
	switch {
	case len(fields) <= 1:
	case len(fields) >= 3 && !looksLikeReference(fields[0]) && chartVersion.MatchString(fields[1]):
		fields = fields[2:] // chart-images: chart name and version first
	default:
		// Guessing here could send a typo to Docker Hub: refuse the line.
		lineErr(strings.TrimSpace(line), fmt.Errorf("%d words on one line: want one reference per line, or the chart-images form `chart version image…`", len(fields)))
		return nil
	}
	var out []name.Reference
	for _, f := range fields {
		if err := checkPath(f); err != nil {
			lineErr(f, err)
			continue
		}
		ref, err := name.ParseReference(f, opts...)
		if err != nil {
			lineErr(f, err)
			continue
		}
		out = append(out, ref)
	}
	return out
}

// readLine reads one line without its end (\n or \r\n). A line longer than
// max is consumed whole and returned cut, with tooLong set.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max+2 {
			tooLong = true
			if room := max - len(line); room > 0 {
				line = append(line, chunk[:min(room, len(chunk))]...)
			}
		} else {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if !tooLong {
			line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		}
		return line, tooLong, err
	}
}

// hasControl finds control characters (a TAB is a blank) and Unicode
// formatting characters (zero-width, bidi overrides, a BOM inside a line),
// which a terminal would act on or hide.
func hasControl(b []byte) bool {
	for _, r := range string(b) {
		if r == '\t' {
			continue
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return true
		}
	}
	return false
}

// checkPath refuses empty, `.` and `..` path components, which
// go-containerregistry accepts and a registry or a file path would resolve.
func checkPath(ref string) error {
	p := ref
	if i := strings.IndexByte(p, '@'); i >= 0 {
		p = p[:i]
	}
	if i := strings.LastIndexByte(p, ':'); i > strings.LastIndexByte(p, '/') {
		p = p[:i]
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("path component %q: references name registry/path/name without empty, . or .. parts", c)
		}
	}
	return nil
}

func preview(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "…"
	}
	return string(b)
}

// chartVersion: a chart's SemVer version in a chart-images line, or "-"
// (no chart).
var chartVersion = regexp.MustCompile(`^(-|v?[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.+-]*)?)$`)

// looksLikeReference tells an image from a chart name in a chart-images line:
// images carry a registry, a path, a tag or a digest; chart names none of these.
func looksLikeReference(s string) bool {
	return strings.ContainsAny(s, "/:@")
}
