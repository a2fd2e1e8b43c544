//go:build e2e

package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/containerdtest"
	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/cache"
)

// These tests try the cache front as a user would: through the real docker
// CLI (up, restart, status, pull), with real clients (docker pull,
// go-containerregistry, containerd 1.6's ctr), in front of a real upstream
// registry (distribution 2.8 on 127.0.0.1) behind a relay that counts what
// crosses the "slow link" and can throttle, cut, corrupt it or go down.

// frontUpstream is a real registry behind a counting relay; caches use relay.URL.
func frontUpstream(t *testing.T) (*registrytest.Distribution, *registrytest.Relay) {
	t.Helper()
	dist := registrytest.StartDistribution(t)
	return dist, registrytest.StartRelay(t, "http://"+dist.Addr)
}

// imageSet is what a test pushed to the upstream.
type imageSet struct {
	refs    []string // repo:tag
	digests []v1.Hash
	blobs   map[string]int64 // distinct blob digest -> size
	bytes   int64            // of the distinct blobs
	layers  [][]v1.Descriptor
}

// pushSet pushes n images to addr, each with its own layers on a shared base
// of baseLayers layers (none when baseLayers is 0).
func pushSet(t *testing.T, addr, prefix string, n, baseLayers int, baseSize int64, ownLayers int, ownSize int64) imageSet {
	t.Helper()
	s := imageSet{blobs: map[string]int64{}}
	var base v1.Image
	if baseLayers > 0 {
		var err error
		if base, err = registrytest.Image(baseLayers, baseSize, "amd64"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		img, err := registrytest.Image(ownLayers, ownSize, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		if base != nil {
			if img, err = registrytest.WithBase(base, img); err != nil {
				t.Fatal(err)
			}
		}
		ref := fmt.Sprintf("%s-%d:v1", prefix, i)
		if err := registrytest.PushTo(addr, ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		m, _ := img.Manifest()
		descs := append([]v1.Descriptor{m.Config}, m.Layers...)
		for _, b := range descs {
			if _, ok := s.blobs[b.Digest.String()]; !ok {
				s.blobs[b.Digest.String()] = b.Size
				s.bytes += b.Size
			}
		}
		s.refs, s.digests, s.layers = append(s.refs, ref), append(s.digests, d), append(s.layers, descs)
	}
	return s
}

// ggcrPull fetches an image through the cache as go-containerregistry does,
// reading every blob to its end (which checks its digest), and checks the
// image's digest.
func ggcrPull(ctx context.Context, cacheAddr, ref string, want v1.Hash) error {
	r, err := name.ParseReference(cacheAddr+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("pull %s: %w", r, err)
	}
	if d, _ := img.Digest(); d != want {
		return fmt.Errorf("pull %s: digest %s, want %s", r, d, want)
	}
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("pull %s: config: %w", r, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("pull %s: %w", r, err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("pull %s: %w", r, err)
		}
	}
	return nil
}

// frontStatus reads the front's own status from the cache's metrics port.
func (c *testCache) frontStatus(t *testing.T) cache.FrontStatus {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/bkcache/status", c.metricsPort))
	if err != nil {
		t.Fatalf("front status of %s: %v", c.name, err)
	}
	defer resp.Body.Close()
	var fs cache.FrontStatus
	if err := json.NewDecoder(resp.Body).Decode(&fs); err != nil {
		t.Fatalf("front status of %s: %v", c.name, err)
	}
	return fs
}

// status is `docker bkcache status NAME -o json`.
func (c *testCache) status(t *testing.T) cache.Status {
	t.Helper()
	r := mustDocker(t, "bkcache", "status", c.name, "-o", "json")
	var sts []cache.Status
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil || len(sts) != 1 {
		t.Fatalf("status -o json: %v\n%s", err, r)
	}
	return sts[0]
}

func blobPath(dataDir, digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(dataDir, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
}

// N concurrent cold pulls of images sharing layers, by docker pull and by
// go-containerregistry: the upstream serves each distinct blob exactly once,
// and every client gets the upstream's content.
func TestFrontConcurrentColdPulls(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/svc", 4, 2, 1<<20, 1, 512<<10)
	c := newTestCache(t)
	up := mustDocker(t, c.upArgs(relay.URL)...)
	if !strings.Contains(up.stdout, "layout    front + registry:2") {
		t.Fatalf("up did not run the front layout:\n%s", up)
	}
	relay.SetRate(16 << 20) // a link slow enough that the pulls overlap
	relay.ResetLog()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ggcrClients = 4
	var wg sync.WaitGroup
	errs := make(chan error, ggcrClients*len(set.refs)+len(set.refs))
	start := make(chan struct{})
	for k := 0; k < ggcrClients; k++ {
		for i := range set.refs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs <- ggcrPull(ctx, c.addr(), set.refs[i], set.digests[i])
			}()
		}
	}
	for i, ref := range set.refs {
		full := c.addr() + "/" + ref
		t.Cleanup(func() { dockerRmi(t, full) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if r := runDocker(t, "", "pull", "-q", full); r.code != 0 {
				errs <- fmt.Errorf("docker pull %s: %s", full, r)
				return
			}
			got := strings.TrimSpace(runDocker(t, "", "image", "inspect", "-f", "{{index .RepoDigests 0}}", full).stdout)
			if want := c.addr() + "/" + strings.Split(ref, ":")[0] + "@" + set.digests[i].String(); got != want {
				errs <- fmt.Errorf("docker pulled %s as %s, want %s", full, got, want)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	gets := relay.BlobGetsByDigest()
	for d := range set.blobs {
		if gets[d] != 1 {
			t.Errorf("the upstream served blob %s %d times to %d clients, want exactly once", d, gets[d], ggcrClients+1)
		}
	}
	if len(gets) != len(set.blobs) {
		t.Errorf("the upstream served %d distinct blobs, the set has %d: %v", len(gets), len(set.blobs), gets)
	}
	if got := relay.BlobBytes(""); got != set.bytes {
		t.Errorf("upstream blob bytes %d = %.2fx the set (%d), want 1.00x", got, float64(got)/float64(set.bytes), set.bytes)
	}
	st := c.status(t)
	if st.Layout != cache.LayoutFront || st.Mode != cache.ModeOnline || st.ModeText != "online" || st.Front == nil ||
		st.Front.Counters.BlobFetches != int64(len(set.blobs)) || st.Front.SharedDownloads == 0 || st.Front.BytesSaved <= 0 {
		t.Errorf("status after the pulls: %+v %+v", st, st.Front)
	}
	table := mustDocker(t, "bkcache", "status", c.name)
	if !strings.Contains(table.stdout, "front") || !strings.Contains(table.stdout, "online") || !strings.Contains(table.stdout, "% of ") {
		t.Errorf("status table does not show layout, mode and hits:\n%s", table.stdout)
	}
}

// A blob that takes the upstream longer than 30 s to send: every client gets
// its headers within 1 s of the upstream's (or of asking, when it asks later)
// and reads the bytes as they come; containerd 1.6 pulls the image through
// the cache meanwhile.
func TestFrontSlowUpstreamAnswersAtOnce(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/slow", 1, 0, 0, 1, 6<<20)
	layer := set.layers[0][1]
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	ctrd := containerdtest.Start(t, "")
	// Nodes name the upstream; its hosts.toml sends them to the cache first.
	if err := ctrd.WriteHosts(relay.Addr, relay.URL, "http://"+c.addr()); err != nil {
		t.Fatal(err)
	}
	relay.SetRate(180 << 10) // 6 MiB at 180 KiB/s: about 34 s
	relay.ResetLog()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	ctrDone := make(chan error, 1)
	ref := relay.Addr + "/" + set.refs[0]
	go func() {
		out, err := ctrPull(ctx, ctrd, ref)
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, out)
		}
		ctrDone <- err
	}()
	type client struct {
		asked, headers time.Time
		sum            string
		err            error
	}
	clients := make([]client, 3)
	var wg sync.WaitGroup
	for i, delay := range []time.Duration{2 * time.Second, 5 * time.Second, 12 * time.Second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(t0.Add(delay)))
			cl := &clients[i]
			cl.asked = time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr()+"/v2/"+strings.Split(set.refs[0], ":")[0]+"/blobs/"+layer.Digest.String(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cl.err = err
				return
			}
			defer resp.Body.Close()
			cl.headers = time.Now()
			if resp.StatusCode != http.StatusOK {
				cl.err = fmt.Errorf("status %s", resp.Status)
				return
			}
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				cl.err = err
				return
			}
			cl.sum = "sha256:" + hex.EncodeToString(h.Sum(nil))
		}()
	}
	wg.Wait()
	if err := <-ctrDone; err != nil {
		t.Fatalf("containerd 1.6 pull through the cache: %v\ncontainerd log:\n%s", err, ctrd.Log())
	}
	if got := ctrImageDigest(ctrd, ref); got != set.digests[0].String() {
		t.Errorf("containerd recorded %s as %q, want %s", ref, got, set.digests[0])
	}
	var upstream *registrytest.RelayRequest
	for _, q := range relay.Log() {
		if strings.HasSuffix(q.Path, layer.Digest.String()) && q.Method == http.MethodGet {
			if upstream != nil {
				t.Fatalf("the upstream was asked for the slow blob twice: %+v", relay.Log())
			}
			q := q
			upstream = &q
		}
	}
	if upstream == nil || upstream.Headers.IsZero() {
		t.Fatalf("the upstream never answered for the slow blob: %+v", relay.Log())
	}
	if took := upstream.End.Sub(upstream.Headers); took < 30*time.Second {
		t.Errorf("the slow blob took only %s to send; the test needs more than 30 s", took)
	}
	for i, cl := range clients {
		if cl.err != nil || cl.sum != layer.Digest.String() {
			t.Errorf("client %d: %v, content %s, want %s", i, cl.err, cl.sum, layer.Digest)
			continue
		}
		from := upstream.Headers
		if cl.asked.After(from) {
			from = cl.asked
		}
		if wait := cl.headers.Sub(from); wait > time.Second {
			t.Errorf("client %d (asked %s after the start) got headers %s after the upstream's / its request, want <= 1s",
				i, cl.asked.Sub(t0).Round(time.Millisecond), wait)
		}
		if cl.headers.After(upstream.End) {
			t.Errorf("client %d got headers only after the whole blob arrived", i)
		}
	}
}

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

// containerd resumes a broken blob download with Range from its partial
// ingest. A relay between containerd 1.6 and the cache cuts the connection
// mid-blob: the next pull asks the cache for the rest with Range, completes,
// and the upstream sent the blob once.
func TestFrontServesContainerdsResumedRange(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/resume", 1, 0, 0, 1, 4<<20)
	layer := set.layers[0][1]
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	nodeLink := registrytest.StartRelay(t, "http://"+c.addr())
	nodeLink.CutAfter(layer.Digest.String(), 1<<20, 1)
	ctrd := containerdtest.Start(t, "")
	if err := ctrd.WriteHosts(relay.Addr, relay.URL, nodeLink.URL); err != nil {
		t.Fatal(err)
	}
	relay.ResetLog()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ref := relay.Addr + "/" + set.refs[0]
	var out string
	var err error
	for attempt := 1; attempt <= 3; attempt++ { // as kubelet pulls again after a failed pull
		if out, err = ctrPull(ctx, ctrd, ref); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("containerd pull through a cut link: %v\n%s", err, out)
	}
	if got := ctrImageDigest(ctrd, ref); got != set.digests[0].String() {
		t.Errorf("containerd recorded %s as %q, want %s", ref, got, set.digests[0])
	}
	var cut *registrytest.RelayRequest
	resumed := false
	for _, q := range nodeLink.Log() {
		if !strings.HasSuffix(q.Path, layer.Digest.String()) || q.Method != http.MethodGet {
			continue
		}
		if q.Cut {
			q := q
			cut = &q
		} else if cut != nil && q.Status == http.StatusPartialContent && strings.HasPrefix(q.Range, "bytes=") && q.Range != "bytes=0-" {
			resumed = true
		}
	}
	if cut == nil || !resumed {
		t.Errorf("containerd did not resume the cut blob with Range from the cache:\n%+v", nodeLink.Log())
	}
	if n, b := relay.BlobGets(layer.Digest.String()), relay.BlobBytes(layer.Digest.String()); n != 1 || b != layer.Size {
		t.Errorf("the upstream served the blob %d times, %d bytes of %d; want once", n, b, layer.Size)
	}
}

// ctrPull is a node's pull through hosts.toml, bounded by ctx.
func ctrPull(ctx context.Context, c *containerdtest.Containerd, ref string) (string, error) {
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.Pull("default", ref)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("ctr pull %s: %w", ref, ctx.Err())
	}
}

// ctrImageDigest is the digest containerd recorded for ref ("" when none).
func ctrImageDigest(c *containerdtest.Containerd, ref string) string {
	out, err := c.Ctr("-n", "default", "images", "ls")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	return ""
}
