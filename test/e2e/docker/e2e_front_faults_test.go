//go:build e2e

package docker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/containerdtest"
	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/cache"
)

// The upstream connection breaks mid-blob and the upstream is gone for a
// moment: the front resumes with Range from where it stopped, the client gets
// the whole, right blob, and the upstream sends no byte twice.
func TestFrontResumesACutBlob(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/cut", 1, 0, 0, 1, 4<<20)
	layer := set.layers[0][1]
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	relay.SetRate(4 << 20)
	relay.CutAfter(layer.Digest.String(), 1<<20, 1)
	relay.ResetLog()
	before := c.frontStatus(t).Counters

	// Down for a moment once the cut happened; the front's retries bridge it.
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, q := range relay.Log() {
				if q.Cut {
					relay.Down()
					time.Sleep(1500 * time.Millisecond)
					relay.Up()
					return
				}
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ggcrPull(ctx, c.addr(), set.refs[0], set.digests[0]); err != nil {
		t.Fatalf("pull across a cut: %v\n%s", err, mustDocker(t, "logs", "--tail", "30", "proxy-"+c.name))
	}
	var cut, resumed *registrytest.RelayRequest
	for _, q := range relay.Log() {
		if q.Method != http.MethodGet || !strings.HasSuffix(q.Path, layer.Digest.String()) {
			continue
		}
		q := q
		if q.Cut {
			cut = &q
		} else if q.Range != "" && q.Status == http.StatusPartialContent {
			resumed = &q
		}
	}
	if cut == nil || resumed == nil || !strings.HasPrefix(resumed.Range, fmt.Sprintf("bytes=%d-", cut.Bytes)) {
		t.Fatalf("no resume with Range from the cut (cut %+v, resumed %+v):\n%+v", cut, resumed, relay.Log())
	}
	if got := relay.BlobBytes(layer.Digest.String()); got != layer.Size {
		t.Errorf("the upstream sent %d bytes of a %d-byte blob: the cut cost %d bytes more than the bytes in flight", got, layer.Size, got-layer.Size)
	}
	after := c.frontStatus(t).Counters
	if after.Resumes-before.Resumes < 1 || after.UpstreamBytes-before.UpstreamBytes != relay.BlobBytes("") {
		t.Errorf("the front counted %d resumes and %d upstream bytes; the relay sent %d blob bytes",
			after.Resumes-before.Resumes, after.UpstreamBytes-before.UpstreamBytes, relay.BlobBytes(""))
	}
}

// The upstream sends wrong bytes for a digest: nothing is stored, the client
// gets an error, and once the upstream is fixed the next pull is right.
func TestFrontRefusesWrongBytes(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/bad", 1, 0, 0, 1, 1<<20)
	layer := set.layers[0][1]
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	relay.Corrupt(layer.Digest.String(), true)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ggcrPull(ctx, c.addr(), set.refs[0], set.digests[0]); err == nil {
		t.Fatalf("a pull of a blob the upstream corrupts succeeded")
	}
	ref := c.addr() + "/" + set.refs[0]
	t.Cleanup(func() { dockerRmi(t, ref) })
	if r := runDocker(t, "", "pull", ref); r.code == 0 {
		t.Errorf("docker pull of a blob the upstream corrupts succeeded:\n%s", r)
	}
	if _, err := os.Stat(blobPath(c.dataDir, layer.Digest.String())); err == nil {
		t.Errorf("the cache stored the wrong bytes of %s", layer.Digest)
	}
	if st := c.frontStatus(t); st.Counters.DigestMismatches == 0 {
		t.Errorf("the front counted no digest mismatch: %+v", st.Counters)
	}

	relay.Corrupt(layer.Digest.String(), false)
	if err := ggcrPull(ctx, c.addr(), set.refs[0], set.digests[0]); err != nil {
		t.Fatalf("pull after the upstream was fixed: %v", err)
	}
	mustDocker(t, "pull", ref)
}

// The upstream goes down and the cache is restarted: cached images pull by
// tag and by digest, an uncached one fails within seconds with a registry
// error naming the outage, status says so; when the upstream comes back a new
// image pulls through, with no operator action and no upstream blob traffic
// for what the cache holds.
func TestFrontServesThroughOutageAndRestart(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/outage", 2, 1, 512<<10, 1, 256<<10)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	cached := c.addr() + "/" + set.refs[0]
	byDigest := c.addr() + "/" + strings.Split(set.refs[0], ":")[0] + "@" + set.digests[0].String()
	t.Cleanup(func() { dockerRmi(t, cached, byDigest) })
	mustDocker(t, "pull", "-q", cached)
	mustDocker(t, "pull", "-q", byDigest)

	relay.Down()
	mustDocker(t, "restart", "proxy-"+c.name)
	waitHTTP(t, "http://"+c.addr()+"/v2/")
	dockerRmi(t, cached, byDigest)
	mustDocker(t, "pull", "-q", cached)
	mustDocker(t, "pull", "-q", byDigest)

	start := time.Now()
	resp, err := http.Get("http://" + c.addr() + "/v2/" + strings.Split(set.refs[1], ":")[0] + "/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "UNAVAILABLE") || !strings.Contains(string(body), "unreachable") || took > 5*time.Second {
		t.Errorf("uncached manifest during the outage: %s in %s: %s", resp.Status, took, body)
	}
	uncached := c.addr() + "/" + set.refs[1]
	if r := runDocker(t, "", "pull", uncached); r.code == 0 {
		t.Errorf("docker pull of an uncached image succeeded during the outage")
	}
	st := c.status(t)
	if st.Mode != cache.ModeOffline || !strings.HasPrefix(st.ModeText, "upstream unreachable since ") || !strings.HasSuffix(st.ModeText, ", serving cached content") {
		t.Errorf("status during the outage: mode %q, %q", st.Mode, st.ModeText)
	}
	table := mustDocker(t, "bkcache", "status", c.name)
	if !strings.Contains(table.stdout, "cache "+c.name+": upstream unreachable since ") {
		t.Errorf("status table does not say the upstream is unreachable:\n%s", table.stdout)
	}

	if err := relay.Up(); err != nil {
		t.Fatal(err)
	}
	relay.ResetLog()
	deadline := time.Now().Add(90 * time.Second)
	for c.frontStatus(t).Mode != cache.ModeOnline {
		if time.Now().After(deadline) {
			t.Fatalf("the front did not see the upstream come back within 90 s: %+v", c.frontStatus(t))
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() { dockerRmi(t, uncached) })
	mustDocker(t, "pull", "-q", uncached)
	dockerRmi(t, cached)
	mustDocker(t, "pull", "-q", cached)
	// The cached image, and the base layer the new one shares with it, were
	// served from the cache: the upstream sent only the new image's own blobs.
	for _, d := range set.layers[0] {
		if n := relay.BlobGets(d.Digest.String()); n != 0 {
			t.Errorf("after the outage the upstream was asked %d times for cached blob %s", n, d.Digest)
		}
	}
}

// An existing cache of registry:2 alone (up --plain, as every cache before the
// front) is converted by the next up, its data kept: every cached image pulls
// without upstream blob traffic.
func TestFrontConvertsAPlainCache(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/conv", 3, 1, 256<<10, 1, 128<<10)
	c := newTestCache(t)
	plain := mustDocker(t, c.upArgs(relay.URL, "--plain")...)
	if !strings.Contains(plain.stdout, "plain (registry:2 alone)") {
		t.Fatalf("up --plain:\n%s", plain)
	}
	if ep := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{json .Config.Entrypoint}}", "proxy-"+c.name).stdout); strings.Contains(ep, "bkcache") {
		t.Errorf("--plain runs the front: entrypoint %s", ep)
	}
	var refs []string
	for i, r := range set.refs {
		ref := c.addr() + "/" + r
		refs = append(refs, ref)
		// Every blob of every repository, one image at a time: registry:2
		// alone stores a blob in the background after serving it.
		if err := ggcrPull(context.Background(), c.addr(), r, set.digests[i]); err != nil {
			t.Fatal(err)
		}
		img, _ := remote.Image(mustRef(t, ref))
		waitStored(t, c.dataDir, strings.Split(set.refs[i], ":")[0], img)
	}
	t.Cleanup(func() { dockerRmi(t, refs...) })

	r := mustDocker(t, withoutFlag(c.upArgs(relay.URL), "--data-dir")...)
	if !strings.Contains(r.stdout, "cache "+c.name+": converted") || !strings.Contains(r.stdout, "converted: plain -> front") || !strings.Contains(r.stdout, c.dataDir) {
		t.Fatalf("up after --plain did not say it converted, keeping the data:\n%s", r)
	}
	if st := c.status(t); st.Layout != cache.LayoutFront || st.Mode != cache.ModeOnline {
		t.Errorf("status after conversion: layout %q mode %q", st.Layout, st.Mode)
	}
	relay.ResetLog()
	dockerRmi(t, refs...)
	for i, ref := range refs {
		mustDocker(t, "pull", "-q", ref)
		if err := ggcrPull(context.Background(), c.addr(), set.refs[i], set.digests[i]); err != nil {
			t.Error(err)
		}
	}
	if n := relay.BlobGets(""); n != 0 {
		t.Errorf("pulls of cached images after the conversion fetched %d blobs from the upstream", n)
	}
	again := mustDocker(t, withoutFlag(c.upArgs(relay.URL), "--data-dir")...)
	if !strings.Contains(again.stdout, "unchanged") {
		t.Errorf("up after the conversion is not idempotent:\n%s", again)
	}
}

func mustRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// containerd adds ?ns=<registry> to mirror requests. A cache answers 404 for a
// registry it does not proxy, so a node whose _default hosts.toml lists the
// cache first moves on to its next host, instead of getting the cache
// upstream's image of the same name.
func TestFrontRefusesAnotherRegistrysNamespace(t *testing.T) {
	dist, relay := frontUpstream(t)
	// The cache's upstream has an image of the same name: it must not be served.
	impostor := pushSet(t, dist.Addr, "library/busybox", 1, 0, 0, 1, 64<<10)
	other := registrytest.StartDistribution(t)
	real := pushSet(t, other.Addr, "library/busybox", 1, 0, 0, 1, 64<<10)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)

	resp, err := http.Get("http://" + c.addr() + "/v2/library/busybox-0/manifests/v1?ns=docker.io")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "NAME_UNKNOWN") || !strings.Contains(string(body), "docker.io") {
		t.Errorf("?ns=docker.io on a cache of %s: %s %s", relay.Addr, resp.Status, body)
	}

	ctrd := containerdtest.Start(t, "")
	if err := ctrd.WriteHosts("_default", "", "http://"+c.addr(), "http://"+other.Addr); err != nil {
		t.Fatal(err)
	}
	relay.ResetLog()
	ref := "docker.io/" + real.refs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := ctrPull(ctx, ctrd, ref); err != nil {
		t.Fatalf("containerd did not fall back to the next host: %v\n%s\n%s", err, out, ctrd.Log())
	}
	if got := ctrImageDigest(ctrd, ref); got != real.digests[0].String() {
		t.Errorf("containerd pulled %s as %s, want the next host's %s (the cache upstream's impostor is %s)", ref, got, real.digests[0], impostor.digests[0])
	}
	for _, q := range relay.Log() {
		if strings.Contains(q.Path, "busybox") {
			t.Errorf("the cache asked its upstream for another registry's image: %+v", q)
		}
	}
	if st := c.frontStatus(t); st.Counters.NsRejected == 0 {
		t.Errorf("the front counted no rejected namespace: %+v", st.Counters)
	}
}

// With the front, up starts the cache while its upstream is unreachable and
// says so; registry:2 alone (--plain) is refused, and started anyway it
// crash-loops, which up names.
func TestFrontStartsWithoutItsUpstream(t *testing.T) {
	c := newTestCache(t)
	dead := "http://127.0.0.1:" + itoa(freePort(t))
	r := runDocker(t, "", c.upArgs(dead)...)
	if r.code != 0 || !strings.Contains(r.stdout, cache.UnreachableWarning) {
		t.Fatalf("up of a front cache with its upstream down:\n%s", r)
	}
	if st := c.status(t); st.Mode != cache.ModeOffline || st.Health != "ok" {
		t.Errorf("status: mode %q health %q", st.Mode, st.Health)
	}

	p := newTestCache(t)
	plain := runDocker(t, "", append(withoutFlag(p.upArgs(dead), "--wait"), "--plain")...)
	if plain.code == 0 || !strings.Contains(plain.stderr, "unreachable") || !strings.Contains(plain.stderr, "leave out --plain") {
		t.Errorf("up --plain with the upstream down:\n%s", plain)
	}
	crash := runDocker(t, "", append(p.upArgs(dead), "--plain", "--skip-upstream-check")...)
	if crash.code == 0 || !strings.Contains(crash.stderr, "crashed on start") || !strings.Contains(crash.stderr, "cannot reach its upstream") {
		t.Errorf("crash loop of --plain:\n%s", crash)
	}
}
