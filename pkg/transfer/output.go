package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bkcache/bkcache/pkg/userfile"
)

// StdoutPath is the output path that means "write to standard output".
const StdoutPath = "-"

// CheckOutputPath says whether an archive can be written at path, before any
// work is done, and returns the path to replace: path itself, or the regular
// file a symlink at path points to (so the link survives). Only a regular file,
// or nothing, is ever replaced: directories, devices, FIFOs, sockets and links to
// them are refused, naming the path; the directory must exist and be writable.
func CheckOutputPath(path string) (string, error) {
	if path == "" {
		return "", errors.New("no archive path: pass -o ARCHIVE (or -o - for standard output)")
	}
	target := path
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("output %s: %w", path, err)
	case info.Mode()&fs.ModeSymlink != 0:
		resolved, err := filepath.EvalSymlinks(path)
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("output %s is a symlink to a missing file; give the file's own path", path)
		}
		if err != nil {
			return "", fmt.Errorf("output %s: %w", path, err)
		}
		if info, err = os.Stat(resolved); err != nil {
			return "", fmt.Errorf("output %s: %w", path, err)
		}
		if !info.Mode().IsRegular() {
			return "", fmt.Errorf("output %s links to %s, which is %s, not a regular file; refusing to replace it (write to standard output with -o -)", path, resolved, userfile.Describe(info.Mode()))
		}
		target = resolved
	case !info.Mode().IsRegular():
		return "", fmt.Errorf("output %s is %s, not a regular file; refusing to replace it (give a file path such as %s, or -o - for standard output)", path, userfile.Describe(info.Mode()), suggestFile(path, info))
	}
	dir := filepath.Dir(target)
	dinfo, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("output %s: directory %s does not exist; create it first (mkdir -p %s)", path, dir, dir)
	}
	if !dinfo.IsDir() {
		return "", fmt.Errorf("output %s: %s is not a directory", path, dir)
	}
	probe, err := os.CreateTemp(dir, "."+filepath.Base(target)+".probe-*")
	if err != nil {
		return "", fmt.Errorf("output %s: cannot write in %s (%w); pick a writable directory", path, dir, errors.Unwrap(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return target, nil
}

// checkReplaceable is the last look before the rename: what is at path now
// must still be a regular file or nothing.
func checkReplaceable(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("output %s became %s while the archive was written; refusing to replace it (the archive was not kept)", path, userfile.Describe(info.Mode()))
	}
	return nil
}

func suggestFile(path string, info fs.FileInfo) string {
	if info.IsDir() {
		return filepath.Join(path, "images.tar")
	}
	return "images.tar"
}
