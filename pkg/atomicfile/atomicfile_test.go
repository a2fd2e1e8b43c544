package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	old := syscall.Umask(0o077) // a strict umask must not narrow the mode asked for
	defer syscall.Umask(old)
	tests := []struct {
		name     string
		existing *fs.FileMode // mode of a file already at the path; nil: none
		perm     fs.FileMode
	}{
		{"new file", nil, 0o600},
		{"new executable", nil, 0o755},
		{"a world-readable file becomes 0600", ptr(0o644), 0o600},
		{"a 0600 file becomes 0644", ptr(0o600), 0o644},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "cache.yaml")
			if tc.existing != nil {
				if err := os.WriteFile(path, []byte("old"), *tc.existing); err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, *tc.existing)
			}
			if err := WriteFile(path, []byte("new"), tc.perm); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			info, _ := os.Stat(path)
			if string(got) != "new" || info.Mode().Perm() != tc.perm {
				t.Errorf("got %q mode %04o, want %q mode %04o", got, info.Mode().Perm(), "new", tc.perm)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("the directory holds %d entries after the write, want only the file", len(entries))
			}
		})
	}
}

func TestUncommittedLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "front")
	os.WriteFile(path, []byte("old"), 0o755)
	f, err := Create(path, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	f.Cleanup()
	got, _ := os.ReadFile(path)
	entries, _ := os.ReadDir(dir)
	if string(got) != "old" || len(entries) != 1 {
		t.Errorf("after an abandoned write: content %q, %d entries; want the old file alone", got, len(entries))
	}
}

func TestErrorsNameThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "cache.yaml")
	err := WriteFile(path, nil, 0o600)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("WriteFile into a missing directory: %v; want an error naming %s", err, path)
	}
}

func ptr(m fs.FileMode) *fs.FileMode { return &m }
