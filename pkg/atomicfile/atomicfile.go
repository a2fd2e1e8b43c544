// Package atomicfile replaces files so that readers see the old or the new
// content, never a part, and a crash leaves no half-written file in place: a
// temp file beside the target (same file system, never $TMPDIR, so nothing
// outlives an interrupt elsewhere), fsync, rename. It wraps
// github.com/google/renameio, fixing the mode whatever the umask or the
// replaced file had: the configs carry secrets and must stay 0600.
package atomicfile

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// File is a pending replacement of a path: write to it, then Commit; Cleanup
// (deferred) removes it unless committed.
type File struct {
	*renameio.PendingFile
	path string
}

// Create starts the replacement of path with a new file of mode perm.
func Create(path string, perm fs.FileMode) (*File, error) {
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithStaticPermissions(perm))
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &File{PendingFile: f, path: path}, nil
}

// Commit syncs the file and renames it over the path.
func (f *File) Commit() error {
	if err := f.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

// WriteFile replaces path with data, mode perm.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Cleanup() //nolint:errcheck // a no-op after Commit
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}
