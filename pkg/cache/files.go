package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bkcache/bkcache/pkg/userfile"
)

// ensureDir creates dir (and parents) and says which flag moves it when that fails.
func ensureDir(dir, flag string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		hint := "check the path"
		if errors.Is(err, fs.ErrPermission) {
			hint = "run as root (sudo) or choose a writable directory"
		}
		return fmt.Errorf("cannot create directory %s: %w; %s with %s", dir, err, hint, flag)
	}
	probe, err := os.CreateTemp(dir, ".bkcache-probe-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w; run as root (sudo) or choose another with %s", dir, err, flag)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// readable checks a file the container will mount exists, is a regular file
// (opening a named pipe would block) and can be read.
func readable(path, flag string) error {
	if err := userfile.Check(path); err != nil {
		return fmt.Errorf("cannot use %s given by %s: %w", path, flag, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("cannot read %s given by %s: %w", path, flag, err)
	}
	return f.Close()
}

// dirSize sums the sizes of the regular files below dir.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}
