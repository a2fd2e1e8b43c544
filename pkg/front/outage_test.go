package front

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// ?ns= naming another registry is refused with a registry error naming
// both; the proxied registry's own name is served.
func TestNamespaceCheck(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("library/busybox:1", img)
	resp, body, err := e.get(http.MethodGet, "/v2/library/busybox/manifests/1?ns=docker.io", nil)
	if err != nil {
		t.Fatal(err)
	}
	var rerr struct {
		Errors []registryError `json:"errors"`
	}
	json.Unmarshal(body, &rerr)
	if resp.StatusCode != 404 || len(rerr.Errors) != 1 || rerr.Errors[0].Code != "NAME_UNKNOWN" ||
		!strings.Contains(rerr.Errors[0].Message, "docker.io") || !strings.Contains(rerr.Errors[0].Message, e.relay.Addr) {
		t.Fatalf("ns=docker.io: %d %s", resp.StatusCode, body)
	}
	for _, ns := range []string{e.relay.Addr, strings.ToUpper(e.relay.Addr)} {
		resp, _, err = e.get(http.MethodGet, "/v2/library/busybox/manifests/1?ns="+ns, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("ns=%s: %v %v", ns, err, resp)
		}
	}
	d := blobDigests(t, img)[1]
	resp, _, _ = e.get(http.MethodGet, "/v2/library/busybox/blobs/"+d+"?ns=registry-1.docker.io", nil)
	if resp.StatusCode != 404 {
		t.Errorf("blob with ns=registry-1.docker.io: %d", resp.StatusCode)
	}
	if st := e.status(); st.Counters.NsRejected != 2 {
		t.Errorf("nsRejected = %d, want 2", st.Counters.NsRejected)
	}
}

func TestSameRegistry(t *testing.T) {
	for _, tt := range []struct {
		ns, host, scheme string
		same             bool
	}{
		{"docker.io", "registry-1.docker.io", "https", true},
		{"index.docker.io", "docker.io", "https", true},
		{"docker.io", "hub.bktencent.com", "https", false},
		{"hub.bktencent.com", "hub.bktencent.com:443", "https", true},
		{"hub.bktencent.com:5000", "hub.bktencent.com", "https", false},
		{"127.0.0.1:5000", "127.0.0.1:5000", "http", true},
		{"127.0.0.1:5001", "127.0.0.1:5000", "http", false},
		{"HUB.bktencent.com", "hub.bktencent.com", "https", true},
	} {
		if got := sameRegistry(tt.ns, tt.host, tt.scheme); got != tt.same {
			t.Errorf("sameRegistry(%q, %q) = %v", tt.ns, tt.host, got)
		}
	}
}

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

// A registry child that dies is restarted; pulls go on meanwhile.
func TestChildRestarted(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 10<<10, "amd64")
	e.push("lib/r:1", img)
	var proxyPID int
	for _, pid := range childPIDs(t, e.srv.opts.RunDir) {
		if cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); strings.Contains(string(cmdline), "proxy.yml") {
			proxyPID = pid
		}
	}
	if proxyPID == 0 {
		t.Fatal("no proxy child found")
	}
	if err := syscall.Kill(proxyPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/r:1"); err != nil {
		t.Fatalf("pull while the proxy child restarts: %v", err)
	}
	waitFor(t, func() bool { return e.status().ProxyChild == childRunning })
	if !strings.Contains(e.log.String(), "registry proxy child exited") {
		t.Error("the child's exit was not logged")
	}
}
