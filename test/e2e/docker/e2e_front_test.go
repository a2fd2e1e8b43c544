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
