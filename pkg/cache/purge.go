package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bkcache/bkcache/pkg/atomicfile"
)

// DataDirRecord is the file beside a cache's config that says where its
// data directory is on the host, so that `down --purge` finds it after a
// plain `down` has removed the container (the other place it is recorded).
func (s Spec) DataDirRecord() string { return filepath.Join(s.ConfigDir, s.Name+".data-dir") }

// recordDataDir writes the data directory's record (0644: a path, no secret).
func recordDataDir(spec Spec, dataDir string) error {
	if dataDir == "" {
		return nil
	}
	if err := atomicfile.WriteFile(spec.DataDirRecord(), []byte(dataDir+"\n"), 0o644); err != nil {
		return fmt.Errorf("record the data directory of cache %s: %w", spec.Name, err)
	}
	return nil
}

// recordedDataDir reads the record; "" when there is none (or it is not one).
func recordedDataDir(spec Spec) string {
	data, err := os.ReadFile(spec.DataDirRecord())
	if err != nil || len(data) > 4096 {
		return ""
	}
	dir := strings.TrimSpace(string(data))
	if !filepath.IsAbs(dir) || strings.ContainsAny(dir, "\n\x00") {
		return ""
	}
	return filepath.Clean(dir)
}

// isRecord says whether p is a data directory record (ours to delete).
func isRecord(p string) bool {
	info, err := os.Lstat(p)
	if err != nil || !info.Mode().IsRegular() || info.Size() > 4096 {
		return false
	}
	data, err := os.ReadFile(p)
	dir := strings.TrimSpace(string(data))
	return err == nil && filepath.IsAbs(dir) && !strings.Contains(dir, "\n")
}

// isMountPoint says whether dir is the root of a mounted file system (its
// device differs from its parent's): a dedicated disk is emptied, not removed.
func isMountPoint(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(filepath.Clean(dir)), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// removeEmptyDataDir removes the emptied data directory, or keeps it when it
// is a mount point (or busy as one), saying so.
func removeEmptyDataDir(dir string) (removed bool, note string, err error) {
	if isMountPoint(dir) {
		return false, dir + " (a mount point: emptied of the cache's files and kept)", nil
	}
	err = os.Remove(dir)
	switch {
	case err == nil || errors.Is(err, fs.ErrNotExist):
		return true, "", nil
	case errors.Is(err, syscall.EBUSY):
		return false, dir + " (in use as a mount point: emptied of the cache's files and kept)", nil
	}
	return false, "", fmt.Errorf("purge %s: %w", dir, err)
}
