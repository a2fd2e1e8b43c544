//go:build e2e

package docker

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/cache"
)

// Links that fail silently, tried through the real docker CLI against the
// real registry:2 code behind a relay that turns into a black hole.

// A black-hole upstream (accepts connections, never answers, also on those
// already open): docker pull of a cached image takes ≤ 20 s, of an uncached
// one fails in ≤ 45 s, status says the upstream is not answering; with the
// link back an uncached image pulls through within 40 s, no operator action.
func TestFrontBlackHoleUpstream(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/hole", 2, 1, 256<<10, 1, 128<<10)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	cached, uncached := c.addr()+"/"+set.refs[0], c.addr()+"/"+set.refs[1]
	t.Cleanup(func() { dockerRmi(t, cached, uncached) })
	mustDocker(t, "pull", "-q", cached)
	dockerRmi(t, cached)

	relay.BlackHole(true)
	start := time.Now()
	if r := runDocker(t, "", "pull", "-q", cached); r.code != 0 {
		t.Fatalf("docker pull of a cached image from a black hole:\n%s", r)
	}
	took := time.Since(start)
	t.Logf("cached image in a black hole: %s", took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("docker pull of a cached image from a black hole took %s, want ≤ 20 s", took)
	}
	start = time.Now()
	if r := runDocker(t, "", "pull", "-q", uncached); r.code == 0 {
		t.Errorf("docker pull of an uncached image from a black hole succeeded")
	}
	took = time.Since(start)
	t.Logf("uncached image in a black hole failed after %s", took.Round(100*time.Millisecond))
	if took > 45*time.Second {
		t.Errorf("docker pull of an uncached image from a black hole failed after %s, want ≤ 45 s", took)
	}
	st := c.status(t)
	if st.Mode != cache.ModeOffline || !strings.HasPrefix(st.ModeText, "upstream not answering since ") ||
		st.Front == nil || st.Front.Counters.Outages != 1 {
		t.Errorf("status in a black hole: mode %q, %q, %+v", st.Mode, st.ModeText, st.Front)
	}

	relay.BlackHole(false)
	back := time.Now()
	for {
		r := runDocker(t, "", "pull", "-q", uncached)
		if r.code == 0 {
			break
		}
		if time.Since(back) > 40*time.Second {
			t.Fatalf("link back for %s, docker pull of an uncached image still fails:\n%s", time.Since(back), r)
		}
		time.Sleep(time.Second)
	}
	t.Logf("pulled through %s after the link came back", time.Since(back).Round(100*time.Millisecond))
	if st := c.status(t); st.Mode != cache.ModeOnline {
		t.Errorf("status after the black hole: mode %q", st.Mode)
	}
}

// A host-network cache on a port above 55535 (no room for PORT+10000) and no
// --metrics-port: status shows the front's counters and verify passes, both
// reading the front on the cache's own port.
func TestFrontHighPortStatusAndVerify(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/high", 1, 0, 0, 1, 64<<10)
	c := newTestCache(t)
	c.port = freeHighPort(t)
	args := withoutFlag(c.upArgs(relay.URL), "--metrics-port")
	mustDocker(t, args...)
	ref := c.addr() + "/" + set.refs[0]
	t.Cleanup(func() { dockerRmi(t, ref) })
	mustDocker(t, "pull", "-q", ref)

	st := c.status(t)
	if st.Front == nil || st.Front.Counters.BlobRequests == 0 || st.Mode != cache.ModeOnline {
		t.Errorf("status of a cache on port %d without a metrics port: %+v (problems %v)", c.port, st.Front, st.Problems)
	}
	r := mustDocker(t, "bkcache", "verify", "--cache", c.name, "-o", "json", strings.TrimPrefix(relay.URL, "http://")+"/"+set.refs[0])
	var res []cache.VerifyResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 1 || !res[0].WarmFromCache {
		t.Errorf("verify on port %d: %v\n%s", c.port, err, r)
	}
}

// freeHighPort finds a free loopback port above 55535.
func freeHighPort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 55536 + rand.IntN(65535-55536)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port above 55535")
	return 0
}
