package docker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker/cli/cli/command"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/pkg/transfer"
	"github.com/bkcache/bkcache/pkg/userfile"
)

// readList reads an image list from a file or "-" (stdin) and reports bad
// lines with their numbers on stderr; it fails only when nothing is left.
func readList(dockerCli command.Cli, file string) ([]transfer.Entry, []error, error) {
	if file == "" {
		return nil, nil, errors.New("no image list: pass -f FILE (one reference per line) or -f - for stdin")
	}
	var r io.Reader = dockerCli.In()
	if file != "-" {
		// A regular file only: a named pipe would block, /dev/zero never end.
		data, err := userfile.Read(file)
		if err != nil {
			return nil, nil, fmt.Errorf("read image list: %w", err)
		}
		r = bytes.NewReader(data)
	}
	entries, bad := transfer.ParseList(r)
	for _, err := range bad {
		fmt.Fprintf(dockerCli.Err(), "%s: %v\n", file, err)
	}
	if len(entries) == 0 {
		return nil, bad, fmt.Errorf("image list %s names no image", file)
	}
	return entries, bad, nil
}

// parsePlatforms reads "linux/amd64,linux/arm64"; "all" means every platform.
func parsePlatforms(s string) ([]v1.Platform, error) {
	if s == "" || s == "all" {
		return nil, nil
	}
	var out []v1.Platform
	for _, p := range strings.Split(s, ",") {
		pl, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("invalid --platform %q: %w (e.g. linux/amd64,linux/arm64 or all)", p, err)
		}
		out = append(out, *pl)
	}
	return out, nil
}

func printFailures(w io.Writer, failed []transfer.ImageResult) {
	if len(failed) == 0 {
		return
	}
	fmt.Fprintln(w, "\nFAILED")
	for _, f := range failed {
		line := ""
		if f.Line > 0 {
			line = fmt.Sprintf("line %d: ", f.Line)
		}
		fmt.Fprintf(w, "  %s%s\n      %s\n", line, f.Source, f.Error)
	}
}
