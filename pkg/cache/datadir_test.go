package cache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storageLike makes dir look like a cache's data directory.
func storageLike(t *testing.T, dir string) {
	t.Helper()
	blob := filepath.Join(dir, "docker/registry/v2/blobs/sha256/ab/abcd/data")
	os.MkdirAll(filepath.Dir(blob), 0o755)
	os.WriteFile(blob, []byte("layer"), 0o644)
	os.WriteFile(filepath.Join(dir, schedulerState), []byte("{}"), 0o644)
	os.MkdirAll(filepath.Join(dir, frontScratch, "incoming"), 0o755)
}

func TestCheckDataDir(t *testing.T) {
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	os.Mkdir(empty, 0o755)
	cache := filepath.Join(root, "cache")
	storageLike(t, cache)
	homeLike := filepath.Join(root, "home")
	os.MkdirAll(filepath.Join(homeLike, "docker/registry"), 0o755)
	os.WriteFile(filepath.Join(homeLike, "notes.txt"), []byte("mine"), 0o644)
	dockerOther := filepath.Join(root, "docker-other")
	os.MkdirAll(filepath.Join(dockerOther, "docker/config.json"), 0o755)

	for _, tc := range []struct {
		dir     string
		force   bool
		wantErr string
	}{
		{dir: filepath.Join(root, "new")},
		{dir: empty},
		{dir: cache},
		{dir: "/", wantErr: "system directory"},
		{dir: "/", force: true, wantErr: "system directory"},
		{dir: "/var/lib", force: true, wantErr: "system directory"},
		{dir: "/etc/", wantErr: "system directory"},
		{dir: "/proc/1", wantErr: "inside /proc"},
		{dir: "relative", wantErr: "absolute path"},
		{dir: homeLike, wantErr: "holds notes.txt"},
		{dir: homeLike, force: true},
		{dir: dockerOther, wantErr: "holds docker"},
	} {
		err := CheckDataDir(tc.dir, tc.force)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("CheckDataDir(%q, force=%v) = %v, want %q", tc.dir, tc.force, err, tc.wantErr)
		}
	}
}

func TestPurgeDataDirDeletesOnlyTheCachesOwn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	storageLike(t, dir)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	removed, left, err := purgeDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || filepath.Base(left[0]) != "notes.txt" {
		t.Errorf("left %v, want only notes.txt", left)
	}
	if len(removed) != 3 {
		t.Errorf("removed %v, want docker/, %s and %s", removed, schedulerState, frontScratch)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "notes.txt")); err != nil || string(data) != "mine" {
		t.Errorf("the user's file was touched: %q %v", data, err)
	}

	os.Remove(filepath.Join(dir, "notes.txt"))
	storageLike(t, dir)
	if _, left, err := purgeDataDir(dir); err != nil || len(left) != 0 {
		t.Fatalf("purge of a pure cache dir: left %v, %v", left, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("an emptied data dir was kept: %v", err)
	}
}
