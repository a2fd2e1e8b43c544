//go:build e2e

package docker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests run a cache for "months" in minutes: prune by kept lists while
// clients pull, by age and size across a restart, a budget, a full disk, and
// down --purge, all through the real docker CLI, the real registry:2 and
// go-containerregistry clients.

// pullAll pulls every image of set through the cache (go-containerregistry).
func pullAll(t *testing.T, addr string, set imageSet) error {
	t.Helper()
	for i, ref := range set.refs {
		if err := ggcrPull(context.Background(), addr, ref, set.digests[i]); err != nil {
			return err
		}
	}
	return nil
}

// waitIdle waits until the front has stored every blob it fetched.
func (c *testCache) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for c.frontStatus(t).InFlight > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the front still stores blobs after 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storedBlobBytes sums registry:2's blob data files in a data dir.
func storedBlobBytes(t *testing.T, dataDir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(filepath.Join(dataDir, "docker/registry/v2/blobs"), func(p string, info os.FileInfo, err error) error { //nolint:errcheck
		if err == nil && info.Mode().IsRegular() && info.Name() == "data" {
			n += info.Size()
		}
		return nil
	})
	return n
}

// gcDryRun runs registry:2's own garbage-collect --dry-run on the data dir
// and returns how many blobs it finds eligible for deletion.
func gcDryRun(t *testing.T, dataDir string) (eligible int, out string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "gc.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "+dataDir+"\n"), 0o600)
	b, err := exec.Command("/usr/bin/docker-registry", "garbage-collect", "--dry-run", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("registry garbage-collect --dry-run: %v\n%s", err, b)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "blob eligible for deletion:") {
			eligible++
		}
	}
	return eligible, string(b)
}

func writeKeepList(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Three releases pulled through the cache; prune --keep release3.txt while
// 12 clients pull release 3: every pull succeeds, the store shrinks to
// release 3's size, release 3 pulls with the upstream down, release 1 does
// not, and registry:2's garbage collection finds nothing left to collect.
func TestPruneKeepsTheNextReleaseWhileNodesPull(t *testing.T) {
	dist, relay := frontUpstream(t)
	var rel [3]imageSet
	for i := range rel {
		rel[i] = pushSet(t, dist.Addr, fmt.Sprintf("blueking/r%d", i+1), 2, 1, 3<<20, 1, 1<<20)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	for _, s := range rel {
		if err := pullAll(t, c.addr(), s); err != nil {
			t.Fatal(err)
		}
	}
	c.waitIdle(t)
	before := storedBlobBytes(t, c.dataDir)
	up := strings.TrimPrefix(relay.URL, "http://")
	// chart-images form with the upstream's name, and one by the cache's address.
	keep := writeKeepList(t, "bk-app 1.0.0 "+up+"/"+rel[2].refs[0], c.addr()+"/"+rel[2].refs[1])

	dry := mustDocker(t, "bkcache", "prune", c.name, "--keep", keep, "--dry-run")
	if !strings.Contains(dry.stdout, "dry run") || storedBlobBytes(t, c.dataDir) != before {
		t.Fatalf("dry run changed the store or said nothing:\n%s", dry)
	}
	if r := runDocker(t, "", "bkcache", "prune", c.name, "--keep", keep); r.code == 0 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("prune without a terminal and without --yes did not refuse:\n%s", r)
	}

	ctx, stop := context.WithCancel(context.Background())
	var pulls, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := pullAll(t, c.addr(), rel[2]); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				pulls.Add(1)
			}
		}()
	}
	for pulls.Load() < 12 { // every client is pulling
		time.Sleep(10 * time.Millisecond)
	}
	r := mustDocker(t, "bkcache", "prune", c.name, "--keep", keep, "--yes")
	stop()
	wg.Wait()
	after := storedBlobBytes(t, c.dataDir)
	t.Logf("prune while 12 clients pulled release 3 (%d pulls, %d failed): store %d -> %d bytes; release 3 is %d bytes\n%s",
		pulls.Load(), failures.Load(), before, after, rel[2].bytes, r.stdout)
	if failures.Load() > 0 {
		t.Errorf("%d of %d pulls during the prune failed: %v", failures.Load(), pulls.Load(), firstErr.Load())
	}
	if float64(after) > 1.15*float64(rel[2].bytes) {
		t.Errorf("store after prune %d bytes > 1.15 x release 3 (%d)", after, rel[2].bytes)
	}
	if !strings.Contains(r.stdout, "Total reclaimed space:") {
		t.Errorf("prune did not report the space freed:\n%s", r)
	}
	if n, out := gcDryRun(t, c.dataDir); n != 0 {
		t.Errorf("garbage-collect --dry-run after prune finds %d blobs to collect:\n%s", n, out)
	}

	relay.Down()
	if err := pullAll(t, c.addr(), rel[2]); err != nil {
		t.Errorf("release 3 does not pull with the upstream down after prune: %v", err)
	}
	if err := ggcrPull(context.Background(), c.addr(), rel[0].refs[0], rel[0].digests[0]); err == nil {
		t.Errorf("release 1 still pulls with the upstream down after prune")
	}
}

// storesImage says whether the storage holds every blob of the set's images.
func storesImage(dataDir string, set imageSet) bool {
	for d := range set.blobs {
		if _, err := os.Stat(blobPath(dataDir, d)); err != nil {
			return false
		}
	}
	return true
}

// --unused-for and --max-size on last-served times recorded across a restart.
func TestPruneByAgeAndSizeAcrossARestart(t *testing.T) {
	dist, relay := frontUpstream(t)
	old := pushSet(t, dist.Addr, "blueking/old", 1, 0, 0, 2, 1<<20)
	recent := pushSet(t, dist.Addr, "blueking/recent", 1, 0, 0, 2, 1<<20)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	if err := pullAll(t, c.addr(), old); err != nil {
		t.Fatal(err)
	}
	c.waitIdle(t)
	// "old" ages by a gap larger than the slack given to "recent" below, so
	// the cut falls between the two however slowly this machine runs.
	const gap, slack = 8 * time.Second, 5 * time.Second
	mark := time.Now()
	for time.Since(mark) < gap {
		time.Sleep(100 * time.Millisecond)
	}
	mustDocker(t, "restart", "proxy-"+c.name) // the records go to disk at stop, come back at start
	waitHTTP(t, "http://"+c.addr()+"/v2/")
	if _, err := os.Stat(filepath.Join(c.dataDir, "bkcache", "served.json")); err != nil {
		t.Fatalf("no last-served record after a restart: %v", err)
	}
	servedRecent := time.Now()
	if err := pullAll(t, c.addr(), recent); err != nil {
		t.Fatal(err)
	}
	c.waitIdle(t)
	// recent was served less than unusedFor ago (by slack), old more than
	// unusedFor ago (by gap - slack).
	unusedFor := time.Since(servedRecent).Truncate(time.Second) + time.Second + slack
	mustDocker(t, "bkcache", "prune", c.name, "--unused-for", unusedFor.String(), "--yes")
	if !storesImage(c.dataDir, recent) {
		t.Errorf("the recently served image left with --unused-for %s", unusedFor)
	}
	if storesImage(c.dataDir, old) {
		t.Errorf("the image unused since before a restart stayed with --unused-for %s", unusedFor)
	}
	// old comes back and is now the most recently served: --max-size drops recent.
	if err := pullAll(t, c.addr(), old); err != nil {
		t.Fatal(err)
	}
	c.waitIdle(t)
	mustDocker(t, "bkcache", "prune", c.name, "--max-size", fmt.Sprint(old.bytes+64<<10), "-o", "json", "--yes")
	if got := storedBlobBytes(t, c.dataDir); got > old.bytes+64<<10 {
		t.Errorf("store %d bytes after --max-size %d", got, old.bytes+64<<10)
	}
	relay.Down()
	if err := pullAll(t, c.addr(), old); err != nil {
		t.Errorf("the most recently served image left with --max-size: %v", err)
	}
	if n, out := gcDryRun(t, c.dataDir); n != 0 {
		t.Errorf("garbage-collect --dry-run finds %d blobs:\n%s", n, out)
	}
}

// up --max-size 40MiB, three ~18 MB images pulled in turn: the store never
// holds more than the budget plus one blob; the newest stays, the oldest goes.
func TestBudgetEvictsTheLeastRecentlyServed(t *testing.T) {
	dist, relay := frontUpstream(t)
	var sets [3]imageSet
	for i := range sets {
		sets[i] = pushSet(t, dist.Addr, fmt.Sprintf("blueking/big%d", i+1), 1, 0, 0, 1, 18<<20)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL, "--max-size", "40MiB")...)
	const budget, blob = 40 << 20, 18<<20 + 64<<10
	var peak atomic.Int64
	stopSampling, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if n := storedBlobBytes(t, c.dataDir); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	for _, s := range sets {
		if err := pullAll(t, c.addr(), s); err != nil {
			t.Fatal(err)
		}
		c.waitIdle(t)
	}
	deadline := time.Now().Add(30 * time.Second)
	for storedBlobBytes(t, c.dataDir) > budget && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	close(stopSampling)
	<-done
	p := peak.Load()
	t.Logf("budget 40MiB: peak %d bytes, now %d", p, storedBlobBytes(t, c.dataDir))
	if p > budget+blob {
		t.Errorf("the store reached %d bytes, over the budget %d by more than one blob", p, budget)
	}
	if n := storedBlobBytes(t, c.dataDir); n > budget {
		t.Errorf("the store holds %d bytes, over its budget %d", n, budget)
	}
	st := c.status(t)
	if st.Disk == nil || st.Disk.BudgetBytes != budget {
		t.Errorf("status does not show the budget: %+v", st.Disk)
	}
	relay.Down()
	if err := pullAll(t, c.addr(), sets[2]); err != nil {
		t.Errorf("the newest image was evicted: %v", err)
	}
	if err := pullAll(t, c.addr(), sets[0]); err == nil {
		t.Errorf("the oldest image was not evicted")
	}
	// A new budget is a config change like the others: the container is
	// recreated, the data stays.
	if err := relay.Up(); err != nil {
		t.Fatal(err)
	}
	mustDocker(t, c.upArgs(relay.URL, "--max-size", "30MiB")...)
	if st := c.status(t); st.Disk == nil || st.Disk.BudgetBytes != 30<<20 {
		t.Errorf("status after a new budget: %+v", st.Disk)
	}
	if !storesImage(c.dataDir, sets[2]) {
		t.Errorf("a new budget lost the newest image")
	}
}

// revisionPath is where registry:2 records that repo holds manifest digest.
func revisionPath(dataDir, repo, digest string) string {
	return filepath.Join(dataDir, "docker/registry/v2/repositories", repo, "_manifests/revisions/sha256", strings.TrimPrefix(digest, "sha256:"), "link")
}

// SIGINT while prune deletes: the cache stays consistent (registry:2's
// garbage collection reads it without error), every kept image pulls with
// the upstream down, and a second prune finishes the job.
func TestPruneInterruptedLeavesAConsistentCache(t *testing.T) {
	dist, relay := frontUpstream(t)
	var rel [3]imageSet
	for i := range rel {
		rel[i] = pushSet(t, dist.Addr, fmt.Sprintf("blueking/int%d", i+1), 6, 1, 512<<10, 1, 256<<10)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	for _, s := range rel {
		if err := pullAll(t, c.addr(), s); err != nil {
			t.Fatal(err)
		}
	}
	c.waitIdle(t)
	var lines []string
	for _, ref := range rel[2].refs {
		lines = append(lines, c.addr()+"/"+ref)
	}
	keep := writeKeepList(t, lines...)
	first := revisionPath(c.dataDir, strings.Split(rel[0].refs[0], ":")[0], rel[0].digests[0].String())
	r := interruptedWhen(t, t.TempDir(), "the first deletion", func() bool {
		_, err := os.Stat(first)
		return err != nil
	}, 0, true, "bkcache", "prune", c.name, "--keep", keep, "--yes")
	t.Logf("interrupted prune: %s", r)
	if r.code != 0 && r.code != 130 {
		t.Errorf("interrupted prune exit %d, want 130 (or 0 when it had finished)", r.code)
	}
	gcDryRun(t, c.dataDir) // fails the test when registry:2 cannot read the storage
	relay.Down()
	if err := pullAll(t, c.addr(), rel[2]); err != nil {
		t.Errorf("a kept image does not pull after an interrupted prune: %v", err)
	}
	mustDocker(t, "bkcache", "prune", c.name, "--keep", keep, "--yes")
	if n, out := gcDryRun(t, c.dataDir); n != 0 {
		t.Errorf("garbage-collect --dry-run after the second prune finds %d blobs:\n%s", n, out)
	}
	for _, s := range rel[:2] {
		for i, ref := range s.refs {
			if _, err := os.Stat(revisionPath(c.dataDir, strings.Split(ref, ":")[0], s.digests[i].String())); err == nil {
				t.Errorf("%s is still stored after the second prune", ref)
			}
		}
	}
	if err := pullAll(t, c.addr(), rel[2]); err != nil {
		t.Errorf("a kept image does not pull after the second prune: %v", err)
	}
}
