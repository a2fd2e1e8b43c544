package front

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// The upstream goes away: cached images keep being served by tag and by
// digest, also by a front started anew while it is away; what is not cached
// fails within seconds with 503; when the upstream returns, pulling through
// resumes without a restart.
func TestOutage(t *testing.T) {
	e := newEnv(t)
	cached, _ := registrytest.Image(2, 100<<10, "amd64")
	e.push("lib/cached:1", cached)
	later, _ := registrytest.Image(2, 100<<10, "amd64")
	e.push("lib/later:1", later)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/cached:1"); err != nil {
		t.Fatal(err)
	}
	e.settle()
	dgst, _ := cached.Digest()

	pullCached := func(when string) {
		t.Helper()
		if _, err := e.pull(ctx, "lib/cached:1"); err != nil {
			t.Errorf("%s: cached image by tag: %v", when, err)
		}
		if _, err := e.pull(ctx, "lib/cached@"+dgst.String()); err != nil {
			t.Errorf("%s: cached image by digest: %v", when, err)
		}
	}
	refuseUncached := func(when string) {
		t.Helper()
		start := time.Now()
		resp, body, err := e.get(http.MethodGet, "/v2/lib/later/manifests/1", nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "UNAVAILABLE") ||
			!strings.Contains(string(body), "lib/later:1 is not cached") {
			t.Errorf("%s: uncached manifest: %v %v %s", when, err, resp, body)
		}
		layers, _ := later.Layers()
		ld, _ := layers[0].Digest()
		resp, _, err = e.get(http.MethodGet, "/v2/lib/later/blobs/"+ld.String(), nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: uncached blob: %v %v", when, err, resp)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: refusing took %s", when, took)
		}
	}

	// Down while the front runs.
	e.relay.Down()
	pullCached("upstream down")
	refuseUncached("upstream down")
	e.waitMode("offline")

	// A new front on the same storage while the upstream is still down.
	e.stop()
	e.start(0)
	if st := e.status(); st.Mode != "offline" || st.ProxyChild != childStopped {
		t.Fatalf("restarted during the outage: %+v", st)
	}
	pullCached("restarted during the outage")
	refuseUncached("restarted during the outage")
	if st := e.status(); st.Counters.OfflineRefusals < 2 {
		t.Errorf("offlineRefusals = %d", st.Counters.OfflineRefusals)
	}

	// The upstream returns: no restart needed.
	if err := e.relay.Up(); err != nil {
		t.Fatal(err)
	}
	e.waitMode("online")
	if _, err := e.pull(ctx, "lib/later:1"); err != nil {
		t.Fatalf("after the upstream returned: %v", err)
	}
	pullCached("upstream back")
}
