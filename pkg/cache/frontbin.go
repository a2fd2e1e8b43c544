package cache

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bkcache/bkcache/pkg/atomicfile"
)

// Where the front's binary sits in the container, and its run directory.
const (
	containerFrontPath = "/bkcache/docker-bkcache"
	containerRunDir    = "/run/bkcache"
)

// FrontPath is the copy of the plugin's binary the container runs as its front.
func (s Spec) FrontPath() string { return filepath.Join(s.ConfigDir, s.Name+".front") }

// frontBinary is the plugin's own executable, to be run as the cache's front.
type frontBinary struct {
	path string
	sum  string // sha256, hex
}

// readFront checks that path is a statically linked ELF executable (the cache
// image has its own libc, or none) and hashes it.
func readFront(path string) (frontBinary, error) {
	if err := checkStatic(path); err != nil {
		return frontBinary{}, err
	}
	sum, err := fileSum(path)
	if err != nil {
		return frontBinary{}, fmt.Errorf("read the plugin binary %s: %w", path, err)
	}
	return frontBinary{path: path, sum: sum}, nil
}

func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the plugin binary %s cannot run as the cache's front (%v); build it with \"make build\" (CGO_ENABLED=0), or pass --plain for registry:2 alone", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("the plugin binary %s is dynamically linked, so it cannot run inside the cache container as its front; rebuild it static with \"make build\" (CGO_ENABLED=0) and install it again, or pass --plain for registry:2 alone", path)
		}
	}
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// installFront copies the binary to dst (0755, atomically), unless dst
// already holds the same bytes.
func installFront(fb frontBinary, dst string) error {
	if sum, err := fileSum(dst); err == nil && sum == fb.sum {
		return nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", dst, err)
	}
	src, err := os.Open(fb.path)
	if err != nil {
		return fmt.Errorf("copy the plugin binary %s: %w", fb.path, err)
	}
	defer src.Close()
	tmp, err := atomicfile.Create(dst, 0o755)
	if err != nil {
		return err
	}
	defer tmp.Cleanup() //nolint:errcheck // a no-op after Commit
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), src); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != fb.sum {
		return fmt.Errorf("%s changed while it was copied; run the command again", fb.path)
	}
	return tmp.Commit()
}
