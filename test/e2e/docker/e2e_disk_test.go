//go:build e2e

package docker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mountTmpfs mounts a tmpfs of size at dir; cleanup removes the cache's
// container first (it holds the mount), then unmounts.
func mountTmpfs(t *testing.T, c *testCache, size string) {
	t.Helper()
	if err := os.MkdirAll(c.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", c.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs at %s (these tests need root): %v: %s", c.dataDir, err, out)
	}
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", "proxy-"+c.name).Run()
		if out, err := exec.Command("umount", c.dataDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", c.dataDir, err, out)
			exec.Command("umount", "-l", c.dataDir).Run()
		}
	})
}

// A data dir on a 48 MiB tmpfs and a 64 MB layer: the cached image is still
// served, the big one is refused with a clear error, nothing partial stays,
// status says disk full; once the file system grows, storing resumes.
func TestFullDiskHarmsNothing(t *testing.T) {
	dist, relay := frontUpstream(t)
	small := pushSet(t, dist.Addr, "blueking/small", 1, 0, 0, 1, 1<<20)
	big := pushSet(t, dist.Addr, "blueking/big", 1, 0, 0, 1, 64<<20)
	c := newTestCache(t)
	mountTmpfs(t, c, "48m")
	mustDocker(t, c.upArgs(relay.URL)...)
	if err := pullAll(t, c.addr(), small); err != nil {
		t.Fatal(err)
	}
	c.waitIdle(t)
	err := pullAll(t, c.addr(), big)
	if err == nil || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("pull of a blob larger than the disk: %v, want a clear disk-full error", err)
	}
	t.Logf("client sees: %v", err)
	if err := pullAll(t, c.addr(), small); err != nil {
		t.Errorf("the cached image is not served on a full disk: %v", err)
	}
	st := c.status(t)
	if st.Disk == nil || st.Disk.State != "disk full" {
		t.Errorf("status does not say disk full: %+v", st.Disk)
	}
	table := mustDocker(t, "bkcache", "status", c.name)
	if !strings.Contains(table.stdout, "DISK FULL") || !strings.Contains(table.stderr, "disk full") {
		t.Errorf("status table does not say disk full:\n%s", table)
	}
	partial, _ := filepath.Glob(filepath.Join(c.dataDir, "bkcache", "incoming", "*"))
	uploads, _ := filepath.Glob(filepath.Join(c.dataDir, "docker/registry/v2/repositories/*/*/_uploads/*"))
	if len(partial)+len(uploads) > 0 {
		t.Errorf("partial files left: %v %v", partial, uploads)
	}
	if storesImage(c.dataDir, big) {
		t.Errorf("the big image is stored on a full disk")
	}

	if out, err := exec.Command("mount", "-o", "remount,size=256m", c.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v: %s", err, out)
	}
	if err := ggcrPull(context.Background(), c.addr(), big.refs[0], big.digests[0]); err != nil {
		t.Fatalf("storing did not resume once space was free: %v", err)
	}
	c.waitIdle(t)
	if !storesImage(c.dataDir, big) {
		t.Errorf("the big image was not stored once space was free")
	}
	if st := c.status(t); st.Disk == nil || st.Disk.State == "disk full" {
		t.Errorf("status still says disk full after space was freed: %+v", st.Disk)
	}
}

// down then down --purge --yes leaves no registry data, wherever the data
// dir is; a data dir that is a mount point is emptied and kept, exit 0.
func TestDownPurgeFindsTheDataDir(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/purge", 1, 0, 0, 1, 256<<10)

	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	if err := pullAll(t, c.addr(), set); err != nil {
		t.Fatal(err)
	}
	c.waitIdle(t)
	mustDocker(t, "bkcache", "down", c.name, "--config-dir", c.configDir)
	r := mustDocker(t, "bkcache", "down", c.name, "--purge", "--yes", "--config-dir", c.configDir)
	if _, err := os.Stat(c.dataDir); err == nil {
		t.Errorf("down --purge after down left the data dir %s:\n%s", c.dataDir, r)
	}
	if !strings.Contains(r.stdout, "deleted "+c.dataDir) {
		t.Errorf("down --purge does not list the data dir it deleted:\n%s", r)
	}

	m := newTestCache(t)
	mountTmpfs(t, m, "16m")
	mustDocker(t, m.upArgs(relay.URL)...)
	if err := pullAll(t, m.addr(), set); err != nil {
		t.Fatal(err)
	}
	m.waitIdle(t)
	r = runDocker(t, "", "bkcache", "down", m.name, "--purge", "--yes", "--config-dir", m.configDir)
	if r.code != 0 || !strings.Contains(r.stdout, "mount point") {
		t.Errorf("down --purge of a mount-point data dir:\n%s", r)
	}
	entries, err := os.ReadDir(m.dataDir)
	if err != nil || len(entries) != 0 {
		t.Errorf("mount point %s after purge: %v, %v", m.dataDir, entries, err)
	}
}

// A blob that cannot be stored (here: a file where registry:2 puts the
// blob's directory) still reaches its client; registry:2's upload session is
// cancelled, nothing stays under _uploads, status says "cannot store: … since
// …", bytes saved never go negative, and the next fetch stores it.
func TestFailedStoreCleansUp(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/nostore", 1, 0, 0, 1, 512<<10)
	layer := set.layers[0][1].Digest
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	obstacle := filepath.Dir(blobPath(c.dataDir, layer.String()))
	if err := os.MkdirAll(filepath.Dir(obstacle), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(obstacle, []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pullAll(t, c.addr(), set); err != nil {
		t.Fatalf("a blob that cannot be stored did not reach its client: %v", err)
	}
	c.waitIdle(t)
	st := c.status(t)
	if st.Disk == nil || st.Disk.StoreError == "" || st.Disk.StoreErrorSince == "" {
		t.Errorf("status does not say storing fails: %+v", st.Disk)
	}
	if st.Front == nil || st.Front.BytesSaved < 0 {
		t.Errorf("bytes saved: %+v", st.Front)
	}
	table := mustDocker(t, "bkcache", "status", c.name)
	if !strings.Contains(table.stderr, "cannot store: ") || !strings.Contains(table.stderr, " since ") {
		t.Errorf("status does not warn that storing fails:\n%s", table)
	}
	uploads, _ := filepath.Glob(filepath.Join(c.dataDir, "docker/registry/v2/repositories/*/*/_uploads/*"))
	partial, _ := filepath.Glob(filepath.Join(c.dataDir, "bkcache", "incoming", "*"))
	if len(uploads)+len(partial) > 0 {
		logs, _ := exec.Command("docker", "logs", "--tail", "40", "proxy-"+c.name).CombinedOutput()
		t.Errorf("a failed store left %v %v; the cache's log:\n%s", uploads, partial, logs)
	}
	if err := os.Remove(obstacle); err != nil {
		t.Fatal(err)
	}
	if err := pullAll(t, c.addr(), set); err != nil {
		t.Fatal(err)
	}
	c.waitIdle(t)
	if !storesImage(c.dataDir, set) {
		t.Errorf("the next fetch did not store the blob")
	}
	if st := c.status(t); st.Disk == nil || st.Disk.StoreError != "" {
		t.Errorf("status still says storing fails after a store worked: %+v", st.Disk)
	}
	relay.Down()
	if err := pullAll(t, c.addr(), set); err != nil {
		t.Errorf("the stored image does not pull with the upstream down: %v", err)
	}
}
