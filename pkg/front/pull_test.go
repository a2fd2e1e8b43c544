package front

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// sharedImages pushes n images built on one two-layer base, one repository
// each, and returns them by repo:tag.
func sharedImages(t *testing.T, e *frontEnv, n int, baseLayer, ownLayer int64) map[string]v1.Image {
	t.Helper()
	base, err := registrytest.Image(2, baseLayer, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]v1.Image{}
	for i := range n {
		own, err := registrytest.Image(1, ownLayer, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		img, err := registrytest.WithBase(base, own)
		if err != nil {
			t.Fatal(err)
		}
		repoTag := fmt.Sprintf("blueking/app%d:1", i)
		e.push(repoTag, img)
		imgs[repoTag] = img
	}
	return imgs
}

// N clients each pull every image at once, cold: each distinct blob crosses
// the upstream link once, every client gets the right bytes, and afterwards
// storage links every blob into every repository so a second pull costs no
// blob request upstream.
func TestConcurrentColdPulls(t *testing.T) {
	for _, clients := range []int{8, 32} {
		t.Run(fmt.Sprintf("%d clients", clients), func(t *testing.T) {
			e := newEnv(t)
			imgs := sharedImages(t, e, 4, 512<<10, 256<<10)
			e.relay.ResetLog()
			pullAll := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				var wg sync.WaitGroup
				errs := make(chan error, clients*len(imgs))
				for range clients {
					for repoTag, img := range imgs {
						wg.Add(1)
						go func() {
							defer wg.Done()
							got, err := e.pull(ctx, repoTag)
							if err != nil {
								errs <- err
								return
							}
							if want := blobDigests(t, img); !slices.Equal(got, want) {
								errs <- fmt.Errorf("%s: got blobs %v, want %v", repoTag, got, want)
							}
						}()
					}
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			}
			pullAll()
			if t.Failed() {
				t.FailNow()
			}
			distinct := map[string]bool{}
			for _, img := range imgs {
				for _, d := range blobDigests(t, img) {
					distinct[d] = true
				}
			}
			gets := e.relay.BlobGetsByDigest()
			for d := range distinct {
				if gets[d] != 1 {
					t.Errorf("upstream served %s %d times, want once", d, gets[d])
				}
			}
			if len(gets) != len(distinct) {
				t.Errorf("upstream served %d distinct blobs, the images have %d", len(gets), len(distinct))
			}
			e.settle()
			for repoTag, img := range imgs {
				repo, _, _ := strings.Cut(repoTag, ":")
				for _, d := range blobDigests(t, img) {
					if !e.linked(repo, d) {
						t.Errorf("storage does not link %s into %s", d, repo)
					}
				}
			}
			st := e.status()
			if st.Counters.BlobFetches != int64(len(distinct)) || st.Counters.SharedWaiters == 0 {
				t.Errorf("counters %+v: want %d fetches and some shared waiters", st.Counters, len(distinct))
			}

			e.relay.ResetLog()
			pullAll()
			if n := e.relay.BlobGets(""); n != 0 {
				t.Errorf("a warm pull sent %d blob GETs upstream, want 0", n)
			}
		})
	}
}

// A blob stored for one repository is linked into another that asks for it,
// never fetched again; the first pull of an image sharing a base costs only
// its own blobs.
func TestStoredBlobLinkedIntoAnotherRepository(t *testing.T) {
	e := newEnv(t)
	imgs := sharedImages(t, e, 2, 100<<10, 100<<10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "blueking/app0:1"); err != nil {
		t.Fatal(err)
	}
	e.settle()
	e.relay.ResetLog()
	if _, err := e.pull(ctx, "blueking/app1:1"); err != nil {
		t.Fatal(err)
	}
	// app1 shares the two base layers; its config and own layer are new.
	if n := e.relay.BlobGets(""); n != 2 {
		t.Errorf("pulling a second image on the same base sent %d blob GETs upstream, want 2", n)
	}
	e.settle()
	for _, d := range blobDigests(t, imgs["blueking/app1:1"]) {
		if !e.linked("blueking/app1", d) {
			t.Errorf("%s not linked into blueking/app1", d)
		}
	}
	if st := e.status(); st.Counters.BlobLinks != 2 || st.Counters.BlobHits < 2 {
		t.Errorf("counters %+v: want 2 links", st.Counters)
	}

	// A stored blob that no repository links (left by an interrupted upload)
	// is uploaded from storage, not fetched.
	d := blobDigests(t, imgs["blueking/app0:1"])[1]
	layerDir := filepath.Join(e.root, "docker/registry/v2/repositories")
	for _, repo := range []string{"blueking/app0", "blueking/app1"} {
		if err := os.RemoveAll(filepath.Join(layerDir, repo, "_layers/sha256", strings.TrimPrefix(d, "sha256:"))); err != nil {
			t.Fatal(err)
		}
	}
	e.srv.flights.holders = map[string]string{}
	e.relay.ResetLog()
	resp, _, err := e.get(http.MethodGet, "/v2/other/repo/blobs/"+d, nil)
	if err != nil || resp.StatusCode != 200 || e.relay.BlobGets("") != 0 || !e.linked("other/repo", d) {
		t.Errorf("orphan blob: %v %v, upstream GETs %d", err, resp, e.relay.BlobGets(""))
	}
}

// The upstream's error answers reach the client as registry errors.
func TestUpstreamErrorRelayed(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/x:1", img)
	missing := "sha256:" + strings.Repeat("0", 64)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body, err := e.get(method, "/v2/lib/x/blobs/"+missing, nil)
		if err != nil || resp.StatusCode != 404 || (method == http.MethodGet && !strings.Contains(string(body), "BLOB_UNKNOWN")) {
			t.Errorf("%s of a blob the upstream lacks: %v %v %s", method, err, resp, body)
		}
	}
	if st := e.status(); st.Mode != "online" {
		t.Errorf("a 404 turned the front %s", st.Mode)
	}
}

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
