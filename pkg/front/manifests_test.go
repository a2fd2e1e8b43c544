package front

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// manifestReq is one raw manifest request for concurrently.
type manifestReq struct {
	method, path, accept string
	ctx                  context.Context // nil: background
	delay                time.Duration   // before sending
}

type manifestAnswer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// concurrently sends every request at once (each after its delay) and
// returns the answers in order.
func (e *frontEnv) concurrently(reqs []manifestReq) []manifestAnswer {
	out := make([]manifestAnswer, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, q := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(q.delay)
			ctx := q.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			req, err := http.NewRequestWithContext(ctx, q.method, "http://"+e.host+q.path, nil)
			if err != nil {
				out[i].err = err
				return
			}
			if q.accept != "" {
				req.Header.Set("Accept", q.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out[i].err = err
				return
			}
			defer resp.Body.Close()
			out[i].status, out[i].header = resp.StatusCode, resp.Header
			out[i].body, out[i].err = io.ReadAll(resp.Body)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// upstreamManifestRequests counts the manifest requests of repo the relay passed on.
func upstreamManifestRequests(r *registrytest.Relay, repo string) int {
	n := 0
	for _, q := range r.Log() {
		if strings.HasPrefix(q.Path, "/v2/"+repo+"/manifests/") {
			n++
		}
	}
	return n
}

var acceptImage = strings.Join([]string{string(types.DockerManifestSchema2), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.OCIImageIndex)}, ", ")

// N clients resolving one tag at once cost the upstream what one client
// costs: one burst of manifest requests, not N; every client gets the
// manifest.
func TestConcurrentManifestRequestsShareOneCall(t *testing.T) {
	e := newEnv(t)
	imgOne, _ := registrytest.Image(1, 1000, "amd64")
	imgTwo, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/one:1", imgOne)
	e.push("lib/two:1", imgTwo)
	// Every upstream answer takes a while, so that all clients arrive while
	// the first request is still in flight.
	e.relay.SetHeaderDelay(500 * time.Millisecond)

	e.relay.ResetLog()
	if a := e.concurrently([]manifestReq{{method: http.MethodGet, path: "/v2/lib/two/manifests/1", accept: acceptImage}}); a[0].err != nil || a[0].status != 200 {
		t.Fatalf("one client: %+v", a[0])
	}
	one := upstreamManifestRequests(e.relay, "lib/two")
	if one == 0 {
		t.Fatalf("a cold manifest GET sent no manifest request upstream: %+v", e.relay.Log())
	}

	const clients = 16
	e.relay.ResetLog()
	reqs := make([]manifestReq, clients)
	for i := range reqs {
		reqs[i] = manifestReq{method: http.MethodGet, path: "/v2/lib/one/manifests/1", accept: acceptImage}
	}
	want, _ := imgOne.Digest()
	raw, _ := imgOne.RawManifest()
	for i, a := range e.concurrently(reqs) {
		if a.err != nil || a.status != 200 || a.header.Get("Docker-Content-Digest") != want.String() || string(a.body) != string(raw) ||
			a.header.Get("Content-Type") != string(types.DockerManifestSchema2) {
			t.Errorf("client %d: %v %d %v %.200s", i, a.err, a.status, a.header, a.body)
		}
	}
	if n := upstreamManifestRequests(e.relay, "lib/one"); n != one {
		t.Errorf("%d clients at once sent %d manifest requests upstream; one client sends %d", clients, n, one)
	}
	if st := e.status(); st.Counters.ManifestShared != clients-1 {
		t.Errorf("manifestShared = %d, want %d", st.Counters.ManifestShared, clients-1)
	}
	resp, err := http.Get("http://" + e.srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "bkcache_front_manifest_shared_total " + strconv.Itoa(clients-1) + "\n"; !strings.Contains(string(m), want) {
		t.Errorf("/metrics lacks %q", want)
	}

	// Afterwards nothing is kept: the next request asks the registry again.
	e.relay.ResetLog()
	if a := e.concurrently(reqs[:1]); a[0].status != 200 || upstreamManifestRequests(e.relay, "lib/one") == 0 {
		t.Errorf("a later request was answered without asking the upstream: %d, %+v", a[0].status, e.relay.Log())
	}
}

// A HEAD and a GET, or two Accept headers, are different questions: they
// are never merged, and each gets its own answer.
func TestManifestRequestsMergedOnlyWhenIdentical(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/img:1", img)
	if _, err := e.upstream.PushIndex("lib/multi:1", 1, 1000); err != nil {
		t.Fatal(err)
	}
	e.relay.SetHeaderDelay(500 * time.Millisecond)
	raw, _ := img.RawManifest()
	digest, _ := img.Digest()

	var reqs []manifestReq
	for range 6 {
		// The HEADs first: a GET merged into a HEAD would get no body.
		reqs = append(reqs, manifestReq{method: http.MethodHead, path: "/v2/lib/img/manifests/1", accept: acceptImage},
			manifestReq{method: http.MethodGet, path: "/v2/lib/img/manifests/1", accept: acceptImage, delay: 50 * time.Millisecond})
	}
	for i, a := range e.concurrently(reqs) {
		bad := a.err != nil || a.status != 200 || a.header.Get("Docker-Content-Digest") != digest.String() ||
			a.header.Get("Content-Length") != strconv.Itoa(len(raw))
		if reqs[i].method == http.MethodHead {
			bad = bad || len(a.body) != 0
		} else {
			bad = bad || string(a.body) != string(raw)
		}
		if bad {
			t.Errorf("%s %d: %v %d %v %.100s", reqs[i].method, i, a.err, a.status, a.header, a.body)
		}
	}
	if n := e.status().Counters.ManifestShared; n != 10 {
		t.Errorf("6 HEADs and 6 GETs at once: manifestShared = %d, want 10 (one call each)", n)
	}

	// A client that takes an index and one that does not get different answers.
	list, single := string(types.DockerManifestList)+", "+string(types.DockerManifestSchema2), string(types.DockerManifestSchema2)
	reqs = nil
	for range 6 {
		reqs = append(reqs, manifestReq{method: http.MethodGet, path: "/v2/lib/multi/manifests/1", accept: list},
			manifestReq{method: http.MethodGet, path: "/v2/lib/multi/manifests/1", accept: single})
	}
	for i, a := range e.concurrently(reqs) {
		want := types.DockerManifestList
		if reqs[i].accept == single {
			want = types.DockerManifestSchema2 // registry:2 picks linux/amd64 for a client without index support
		}
		if a.err != nil || a.status != 200 || a.header.Get("Content-Type") != string(want) {
			t.Errorf("Accept %q: %v %d %v %.100s", reqs[i].accept, a.err, a.status, a.header, a.body)
		}
	}
	if n := e.status().Counters.ManifestShared; n != 20 {
		t.Errorf("two Accept headers, 6 clients each: manifestShared = %d, want 20", n)
	}
}

// A client that gives up does not take the answer from those still waiting,
// and when every client has gone, a new request starts a new call.
func TestManifestCallOutlivesCancelledClient(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/c:1", img)
	other, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/d:1", other)
	e.relay.SetHeaderDelay(time.Second)
	digest, _ := img.Digest()

	quitter, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	a := e.concurrently([]manifestReq{
		{method: http.MethodGet, path: "/v2/lib/c/manifests/1", accept: acceptImage, ctx: quitter},
		{method: http.MethodGet, path: "/v2/lib/c/manifests/1", accept: acceptImage, delay: 100 * time.Millisecond},
	})
	if a[0].err == nil {
		t.Errorf("the quitting client got an answer: %d", a[0].status)
	}
	if a[1].err != nil || a[1].status != 200 || a[1].header.Get("Docker-Content-Digest") != digest.String() {
		t.Errorf("the client still waiting: %v %d %v %s", a[1].err, a[1].status, a[1].header, a[1].body)
	}
	if n := e.status().Counters.ManifestShared; n != 1 {
		t.Errorf("manifestShared = %d, want 1", n)
	}

	alone, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if a := e.concurrently([]manifestReq{{method: http.MethodGet, path: "/v2/lib/d/manifests/1", accept: acceptImage, ctx: alone}}); a[0].err == nil {
		t.Errorf("the quitting client got an answer: %d", a[0].status)
	}
	want, _ := other.Digest()
	a = e.concurrently([]manifestReq{{method: http.MethodGet, path: "/v2/lib/d/manifests/1", accept: acceptImage}})
	if a[0].err != nil || a[0].status != 200 || a[0].header.Get("Docker-Content-Digest") != want.String() {
		t.Errorf("after every client gave up, a new one: %v %d %s", a[0].err, a[0].status, a[0].body)
	}
	if n := e.status().Counters.ManifestShared; n != 1 {
		t.Errorf("a request after the call was abandoned joined it: manifestShared = %d, want 1", n)
	}
}

// An answer above the buffer cap is not shared: each client asks the
// registry itself and gets the whole manifest.
func TestLargeManifestNotBuffered(t *testing.T) {
	e := newEnv(t)
	e.srv.manifests.mu.Lock()
	e.srv.manifests.max = 64 // bytes: any manifest is larger
	e.srv.manifests.mu.Unlock()
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/big:1", img)
	e.relay.SetHeaderDelay(300 * time.Millisecond)
	raw, _ := img.RawManifest()
	reqs := make([]manifestReq, 4)
	for i := range reqs {
		reqs[i] = manifestReq{method: http.MethodGet, path: "/v2/lib/big/manifests/1", accept: acceptImage}
	}
	for i, a := range e.concurrently(reqs) {
		if a.err != nil || a.status != 200 || string(a.body) != string(raw) {
			t.Errorf("client %d: %v %d %.100s", i, a.err, a.status, a.body)
		}
	}
}
