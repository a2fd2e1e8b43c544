//go:build e2e

package docker

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/cache"
)

// warm of images a front cache does not hold while its upstream is down
// makes one attempt per image and ends within 5 s per run, with the front's
// message and a summary naming the outage; the image it holds is warmed.
func TestWarmFailsFastDuringOutage(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/failfast", 3, 0, 0, 1, 256<<10)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	list := filepath.Join(t.TempDir(), "images.txt")
	var lines []string
	for _, ref := range set.refs {
		lines = append(lines, relay.Addr+"/"+ref)
	}
	if err := os.WriteFile(list, []byte(lines[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDocker(t, "bkcache", "warm", "-f", list, "--cache", c.name)

	relay.Down()
	// A request that fails turns the front offline.
	if resp, err := http.Get("http://" + c.addr() + "/v2/" + strings.Split(set.refs[1], ":")[0] + "/manifests/v1"); err == nil {
		resp.Body.Close()
	}
	deadline := time.Now().Add(60 * time.Second)
	for c.frontStatus(t).Mode != cache.ModeOffline {
		if time.Now().After(deadline) {
			t.Fatalf("the front did not turn offline within 60 s: %+v", c.frontStatus(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		start := time.Now()
		r := runDocker(t, "", "bkcache", "warm", "-f", list, "--cache", c.name)
		took := time.Since(start)
		t.Logf("run %d: %s\n%s", run, took, r)
		if r.code == 0 {
			t.Fatalf("run %d: warm of uncached images succeeded during the outage", run)
		}
		if took > 5*time.Second {
			t.Errorf("run %d: warm took %s during the outage, want at most 5 s", run, took)
		}
		if !strings.Contains(r.stderr, "2 images could not be warmed: cache "+c.name+": upstream "+relay.URL+" unreachable since ") {
			t.Errorf("run %d: the summary does not name the outage:\n%s", run, r.stderr)
		}
		// Named as the cache serves them, with the front's message.
		for _, ref := range set.refs[1:] {
			repo := strings.Split(ref, ":")[0]
			if !strings.Contains(r.stderr, "FAILED  "+c.addr()+"/"+ref+": ") ||
				!strings.Contains(r.stderr, "the cache says: upstream "+relay.URL+" unreachable since ") ||
				!strings.Contains(r.stderr, repo+":v1 is not cached") {
				t.Errorf("run %d: %s not reported failed with the front's message:\n%s", run, ref, r.stderr)
			}
		}
		if !strings.Contains(r.stderr, "warmed  "+c.addr()+"/"+set.refs[0]) {
			t.Errorf("run %d: the cached image was not reported warmed:\n%s", run, r.stderr)
		}
	}
}
