package front

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// /metrics has the front's counters and the proxy child's own metrics;
// /debug/vars is the proxy child's.
func TestMetricsEndpoints(t *testing.T) {
	e := newEnv(t, withRate(20<<20))
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/m:1", img)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/m:1"); err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		resp, err := http.Get("http://" + e.srv.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	m := get("/metrics")
	for _, want := range []string{"bkcache_front_blob_requests_total 2", "bkcache_front_blob_fetches_total 2",
		"bkcache_front_upstream_bytes_total ", "bkcache_front_online 1", "registry_"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
	if v := get("/debug/vars"); !strings.Contains(v, "registry") {
		t.Errorf("/debug/vars: %.300s", v)
	}
	st := e.status()
	if st.Layout != "front" || st.UpstreamRate != 20<<20 || st.ProxyChild != childRunning || st.Upstream != e.relay.URL {
		t.Errorf("status %+v", st)
	}
}
