package front

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// A black-hole upstream (accepts, never answers, also on connections
// already open) is an outage like a refused one, with the front's own
// deadlines: a cached image pulls in ≤ 20 s, an uncached one fails in ≤ 45 s,
// status says the upstream is not answering; when the link is back an
// uncached image pulls through within 40 s, with no operator action.
func TestBlackHoleUpstream(t *testing.T) {
	e := newEnv(t, withRealProbes())
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

	e.relay.BlackHole(true)
	start := time.Now()
	if _, err := e.pull(ctx, "lib/cached:1"); err != nil {
		t.Fatalf("cached image in a black hole: %v", err)
	}
	took := time.Since(start)
	t.Logf("cached image in a black hole: %s", took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("cached image in a black hole took %s, want ≤ 20 s", took)
	}
	start = time.Now()
	pctx, pcancel := context.WithTimeout(ctx, 90*time.Second)
	_, err := e.pull(pctx, "lib/later:1")
	pcancel()
	if err == nil {
		t.Fatal("an uncached image pulled from a black hole")
	}
	took = time.Since(start)
	t.Logf("uncached image in a black hole failed after %s", took.Round(100*time.Millisecond))
	if took > 45*time.Second {
		t.Errorf("uncached image in a black hole failed after %s, want ≤ 45 s: %v", took, err)
	}
	waitFor(t, func() bool { return e.status().Mode == "offline" })
	st := e.status()
	if st.Reason != "not answering" || st.Counters.Outages != 1 {
		t.Errorf("status in a black hole: %+v", st)
	}
	_, body, _ := e.get(http.MethodGet, "/v2/lib/later/manifests/1", nil)
	if !strings.Contains(string(body), "not answering since") {
		t.Errorf("503 while offline: %s", body)
	}

	e.relay.BlackHole(false)
	back := time.Now()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := e.pull(pctx, "lib/later:1")
		pcancel()
		if err == nil {
			break
		}
		if time.Since(back) > 40*time.Second {
			t.Fatalf("link back for %s, an uncached image still does not pull: %v", time.Since(back), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("pulled through %s after the link came back", time.Since(back).Round(100*time.Millisecond))
	st = e.status()
	if st.Mode != "online" || st.Counters.OfflineSeconds < 1 {
		t.Errorf("status after the black hole: %+v", st)
	}
}

// An outage is seen and ended however it begins: by a manifest request, by
// a blob request, or before the front starts. Upstream back → a new image
// pulls within 30 s and status is online, with no restart.
func TestOutageBegunAnyWay(t *testing.T) {
	for _, how := range []string{"manifest", "blob", "start"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, withRealProbes())
			img, _ := registrytest.Image(1, 50<<10, "amd64")
			e.push("lib/first:1", img)
			next, _ := registrytest.Image(1, 50<<10, "amd64")
			e.push("lib/next:1", next)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e.relay.Down()
			switch how {
			case "manifest":
				resp, _, err := e.get(http.MethodGet, "/v2/lib/first/manifests/1", nil)
				if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("manifest while down: %v %v", err, resp)
				}
			case "blob":
				resp, _, err := e.get(http.MethodGet, blobURLPath("lib/first", blobDigests(t, img)[1]), nil)
				if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("blob while down: %v %v", err, resp)
				}
			case "start":
				e.stop()
				e.start(0)
			}
			waitFor(t, func() bool { return e.status().Mode == "offline" })
			if err := e.relay.Up(); err != nil {
				t.Fatal(err)
			}
			back := time.Now()
			for {
				_, err := e.pull(ctx, "lib/next:1")
				if err == nil {
					break
				}
				if time.Since(back) > 30*time.Second {
					t.Fatalf("upstream back for %s, a new image still does not pull: %v\n%+v", time.Since(back), err, e.status())
				}
				time.Sleep(500 * time.Millisecond)
			}
			t.Logf("pulled through %s after the link came back", time.Since(back).Round(100*time.Millisecond))
			if st := e.status(); st.Mode != "online" || st.Counters.Outages != 1 {
				t.Errorf("status after the outage: %+v", st)
			}
		})
	}
}

// A ranged read of a blob still downloading, whose upstream flips a byte,
// never completes: the response's last byte waits for the digest.
func TestRangedReadOfWrongBlobFails(t *testing.T) {
	e := newEnv(t)
	d, _ := oneBlob(t, e, "lib/flip", 2<<20)
	e.relay.Corrupt(d, true)
	e.relay.SetRate(1 << 20) // ~2 s: the range's bytes arrive long before the end
	for _, rg := range []string{"bytes=0-1500000", "bytes=100000-200000"} {
		resp, body, err := e.get(http.MethodGet, blobURLPath("lib/flip", d), http.Header{"Range": {rg}})
		if err == nil && resp.StatusCode/100 == 2 && int64(len(body)) == resp.ContentLength {
			t.Errorf("%s: a complete %d with %d bytes of a wrong blob", rg, resp.StatusCode, len(body))
		}
		e.settle()
	}
	if e.srv.store.hasData(d) {
		t.Error("a wrong blob was stored")
	}
}

// An upstream that lies about a blob's size: an endless body, or more bytes
// than the manifest declared. Nothing is stored and waiters never get more
// bytes than the size, and an error.
func TestLyingSizes(t *testing.T) {
	e := newEnv(t, withMaxBlobSize(4<<20))
	img, _ := registrytest.Image(2, 100<<10, "amd64")
	e.push("lib/liar:1", img)
	digests := blobDigests(t, img)
	layers, _ := img.Layers()
	declared, _ := layers[0].Size()

	// The manifest declares the layers' sizes: a download stops at them.
	resp, _, err := e.get(http.MethodGet, "/v2/lib/liar/manifests/1", http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("manifest: %v %v", err, resp)
	}
	for _, tc := range []struct {
		digest string
		lie    registrytest.BodyLie
		max    int64
	}{
		{digests[1], registrytest.BodyEndless, declared},
		{digests[2], registrytest.BodyOversize, declared},
	} {
		e.relay.LieAbout(tc.digest, tc.lie)
		resp, body, err := e.get(http.MethodGet, blobURLPath("lib/liar", tc.digest), nil)
		if err == nil && resp.StatusCode == 200 {
			t.Errorf("lie %d: a complete 200 with %d bytes", tc.lie, len(body))
		}
		if int64(len(body)) > tc.max {
			t.Errorf("lie %d: the client got %d bytes, more than the declared %d", tc.lie, len(body), tc.max)
		}
		e.settle()
		if e.srv.store.hasData(tc.digest) {
			t.Errorf("lie %d: stored", tc.lie)
		}
	}

	// A blob no manifest declared, sent endlessly without Content-Length: the cap.
	other, _ := registrytest.Image(1, 100<<10, "amd64")
	e.push("lib/undeclared:1", other)
	d := blobDigests(t, other)[1]
	e.relay.LieAbout(d, registrytest.BodyEndless)
	resp, body, err := e.get(http.MethodGet, blobURLPath("lib/undeclared", d), nil)
	if err == nil && resp.StatusCode == 200 {
		t.Errorf("endless undeclared blob: a complete 200 with %d bytes", len(body))
	}
	if int64(len(body)) > 4<<20 {
		t.Errorf("endless undeclared blob: the client got %d bytes, more than the cap", len(body))
	}
	e.settle()
	if e.srv.store.hasData(d) {
		t.Error("endless undeclared blob stored")
	}
	if !strings.Contains(e.log.String(), "more bytes") {
		t.Errorf("the log does not say why:\n%s", e.log.String())
	}
}

// Protocol odds on a stored blob: an unparseable Range is ignored (200 with
// the whole blob), several ranges give 200; a stored digest asked for under a
// name nobody pulled creates no repository.
func TestStoredBlobProtocolOdds(t *testing.T) {
	e := newEnv(t)
	d, blob := oneBlob(t, e, "lib/odds", 10<<10)
	if resp, _, err := e.get(http.MethodGet, blobURLPath("lib/odds", d), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first fetch: %v %v", err, resp)
	}
	e.settle()
	for _, rg := range []string{"bytes=5-3", "items=0-5", "bytes=0-1,,2-3", "bytes=0-1,2-3", "bytes=x-"} {
		resp, body, err := e.get(http.MethodGet, blobURLPath("lib/odds", d), http.Header{"Range": {rg}})
		if err != nil || resp.StatusCode != 200 || len(body) != len(blob) || resp.Header.Get("Content-Range") != "" {
			t.Errorf("Range %q: %v %v, %d bytes", rg, err, resp, len(body))
		}
	}
	// The test upstream serves any blob under any name (registry:2 would
	// answer 404 for a name that does not hold it): ask while it is away, so
	// only what the cache itself knows decides.
	e.relay.Down()
	e.get(http.MethodGet, "/v2/lib/nothing/manifests/1", nil) // the failure that turns it offline
	e.waitMode("offline")
	resp, _, err := e.get(http.MethodGet, blobURLPath("someone/else", d), nil)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("stored digest under an unknown name: %v %v", err, resp)
	}
	_, body, _ := e.get(http.MethodGet, "/v2/_catalog", nil)
	if strings.Contains(string(body), "someone/else") || !strings.Contains(string(body), "lib/odds") {
		t.Errorf("catalog: %s", body)
	}
	// A name the cache served a manifest of is linked.
	resp, _, err = e.get(http.MethodGet, blobURLPath("lib/odds", d), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("stored digest under its own name: %v %v", err, resp)
	}
}

// The front's status and metrics answer on the cache's own port too, under
// /bkcache/, guarded like pulls when htpasswd is on.
func TestStatusOnClientPort(t *testing.T) {
	e := newEnv(t)
	resp, body, err := e.get(http.MethodGet, "/bkcache/status", nil)
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), `"layout": "front"`) {
		t.Fatalf("/bkcache/status on the client port: %v %v %s", err, resp, body)
	}
	resp, body, err = e.get(http.MethodGet, "/bkcache/metrics", nil)
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "bkcache_front_outages_total") {
		t.Fatalf("/bkcache/metrics on the client port: %v %v %s", err, resp, body)
	}
}

// registry:2 2.8's proxy schedules every manifest it fetched for deletion
// 7 days later. A cached tag still pulls during an outage however long ago it
// was first fetched: its expiry, moved into the past and run by the proxy
// child, deletes nothing.
func TestTagsSurviveProxyExpiry(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 20<<10, "amd64")
	e.push("lib/old:1", img)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/old:1"); err != nil {
		t.Fatal(err)
	}
	e.settle()
	statePath := filepath.Join(e.root, "scheduler-state.json")
	readState := func() map[string]map[string]any {
		data, err := os.ReadFile(statePath)
		if err != nil {
			return nil
		}
		var m map[string]map[string]any
		json.Unmarshal(data, &m) //nolint:errcheck // empty while being written
		return m
	}
	waitFor(t, func() bool { return len(readState()) > 0 }) // the proxy child saves it every few seconds
	e.stop()

	// Eight days later: every entry expired.
	st := readState()
	for _, entry := range st {
		entry["ExpiryData"] = time.Now().Add(-24 * time.Hour).Format(time.RFC3339Nano)
	}
	data, _ := json.Marshal(st)
	if err := os.WriteFile(statePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start(0) // upstream up: the proxy child runs the expiries
	waitFor(t, func() bool { m := readState(); return m != nil && len(m) == 0 })
	e.stop()

	e.relay.Down()
	e.start(0)
	if _, err := e.pull(ctx, "lib/old:1"); err != nil {
		t.Fatalf("a cached tag after its expiry, upstream down: %v", err)
	}
}

// A black hole that begins mid-blob: the waiting client's response breaks
// (never completes) within the stall timeout and a probe, the front goes
// offline, nothing is stored.
func TestBlackHoleMidBlob(t *testing.T) {
	e := newEnv(t)
	d, _ := oneBlob(t, e, "lib/midway", 4<<20)
	e.relay.SetRate(256 << 10) // ~16 s for the blob
	resp, err := http.Get("http://" + e.host + blobURLPath("lib/midway", d))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", err, resp)
	}
	defer resp.Body.Close()
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	e.relay.BlackHole(true)
	start := time.Now()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Fatalf("the response completed (%d more bytes) through a black hole", n)
	}
	if took := time.Since(start); took > stallTimeout+offlineGrace+30*time.Second {
		t.Errorf("the response broke only after %s", took)
	}
	waitFor(t, func() bool { return e.status().Mode == "offline" })
	e.settle()
	if e.srv.store.hasData(d) {
		t.Error("stored")
	}
}
