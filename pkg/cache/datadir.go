package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// What a cache's data directory may hold: registry:2's storage tree, the
// scheduler state its proxy keeps, and the front's own scratch space.
const (
	storageTop     = "docker" // docker/registry/v2/...
	schedulerState = "scheduler-state.json"
	frontScratch   = "bkcache" // the front's incoming downloads
)

// systemDirs may never be a cache's data directory: `down --purge` would
// delete them and the container would write into them.
var systemDirs = []string{
	"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
	"/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib",
	"/usr/local", "/usr/sbin", "/usr/share", "/var", "/var/cache", "/var/lib", "/var/log", "/var/run",
	"/var/tmp", "/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet", "/etc/docker",
	"/etc/containerd", "/etc/kubernetes",
}

// CheckDataDir refuses a data directory that is not safe to give to a cache:
// the root, a system directory or one inside /proc, /sys or /dev, or (unless
// force) a non-empty directory that holds something other than a registry's
// storage, such as a user's files.
func CheckDataDir(dir string, force bool) error {
	clean := filepath.Clean(dir)
	if !filepath.IsAbs(clean) {
		return fmt.Errorf("data directory %q must be an absolute path (--data-dir)", dir)
	}
	if clean == "/" || slices.Contains(systemDirs, clean) {
		return fmt.Errorf("data directory %s is a system directory; a cache needs its own, such as %s (--data-dir)", clean, DefaultDataDir(DefaultName))
	}
	for _, special := range []string{"/proc", "/sys", "/dev"} {
		if strings.HasPrefix(clean, special+"/") {
			return fmt.Errorf("data directory %s is inside %s; give a directory on a disk (--data-dir)", clean, special)
		}
	}
	foreign, err := foreignEntries(clean)
	if err != nil || len(foreign) == 0 || force {
		return err
	}
	return fmt.Errorf("data directory %s is not empty and is not a registry's storage (it holds %s); give a new or empty directory, or pass --force to use it anyway (down --purge will still delete only the cache's own files)",
		clean, listSome(foreign))
}

// foreignEntries lists what in dir is not a cache's own; nothing for a missing dir.
func foreignEntries(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read data directory %s: %w", dir, err)
	}
	var foreign []string
	for _, e := range entries {
		if !isCacheEntry(dir, e) {
			foreign = append(foreign, e.Name())
		}
	}
	return foreign, nil
}

func isCacheEntry(dir string, e fs.DirEntry) bool {
	switch e.Name() {
	case storageTop:
		// Only registry:2's tree: docker/registry/...
		sub, err := os.ReadDir(filepath.Join(dir, storageTop))
		if err != nil || e.Type()&fs.ModeSymlink != 0 {
			return false
		}
		for _, s := range sub {
			if s.Name() != "registry" || !s.IsDir() {
				return false
			}
		}
		return true
	case schedulerState:
		return e.Type().IsRegular()
	case frontScratch:
		return e.IsDir() && e.Type()&fs.ModeSymlink == 0
	}
	return strings.HasPrefix(e.Name(), ".bkcache-probe-") // ensureDir's, if it was interrupted
}

// purgeDataDir deletes what it recognises as the cache's own in dir and the
// dir itself when nothing else is left; it returns what it removed and what it
// left (other files are never touched).
func purgeDataDir(dir string) (removed, left []string, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read data directory %s: %w", dir, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !isCacheEntry(dir, e) {
			left = append(left, p)
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return removed, left, fmt.Errorf("purge %s: %w; run as root (sudo)", p, err)
		}
		removed = append(removed, p)
	}
	if len(left) == 0 {
		gone, note, err := removeEmptyDataDir(dir)
		if err != nil {
			return removed, left, err
		}
		if gone {
			removed = append(removed, dir)
		} else {
			left = append(left, note)
		}
	}
	return removed, left, nil
}

func listSome(names []string) string {
	const max = 5
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}
