//go:build e2e

// containerd 1.6 (Debian's, a private instance) pulling through the front
// with `ctr --hosts-dir`, as nodes do after `kubectl bkcache mirror`.
//
//	go test -tags e2e -run Containerd -v ./pkg/front/
package front

import (
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/internal/containerdtest"
	"github.com/bkcache/bkcache/internal/registrytest"
)

func TestContainerdThroughFront(t *testing.T) {
	e := newEnv(t)
	// containerd -> nodeLink (a relay: the node's link to the cache) -> front -> e.relay -> upstream
	nodeLink := registrytest.StartRelay(t, "http://"+e.host)
	ctrd := containerdtest.Start(t, "")
	// The images are named after the upstream (e.relay); their own server
	// refuses, so only the cache can serve them.
	if err := ctrd.WriteHosts(e.relay.Addr, "http://"+freePort(t), "http://"+nodeLink.Addr); err != nil {
		t.Fatal(err)
	}
	push := func(repoTag string) (layer string, size int64) {
		img, err := registrytest.Image(2, 1<<20, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		e.push(repoTag, img)
		layers, _ := img.Layers()
		d, _ := layers[1].Digest()
		size, _ = layers[1].Size()
		return d.String(), size
	}
	pull := func(repoTag string) (string, error) {
		return ctrd.Pull("bkcache-test", e.relay.Addr+"/"+repoTag)
	}

	t.Run("node link cut mid-blob: containerd resumes with Range", func(t *testing.T) {
		layer, size := push("blueking/cut-node:1")
		nodeLink.CutAfter(layer, 600<<10, 1)
		var out string
		var err error
		for range 3 { // ctr gives up on a broken read; the next pull resumes from its partial ingest
			if out, err = pull("blueking/cut-node:1"); err == nil {
				break
			}
			t.Logf("pull: %v: %s", err, strings.TrimSpace(out))
		}
		if err != nil {
			t.Fatalf("pull never completed: %s\n%s", out, ctrd.Log())
		}
		var ranges []string
		for _, q := range nodeLink.Log() {
			if strings.HasSuffix(q.Path, layer) && q.Method == http.MethodGet {
				ranges = append(ranges, q.Range)
			}
		}
		t.Logf("containerd's GETs of the cut layer: Range %q", ranges)
		if len(ranges) < 2 || !strings.HasPrefix(ranges[len(ranges)-1], "bytes=") || strings.HasPrefix(ranges[len(ranges)-1], "bytes=0-") {
			t.Errorf("containerd's requests for the cut layer had Range %q: want a resume from the cut", ranges)
		}
		if n := e.relay.BlobGets(layer); n != 1 {
			t.Errorf("the upstream served the layer %d times, want once", n)
		}
		if got := e.relay.BlobBytes(layer); got != size {
			t.Errorf("the upstream sent %d bytes of a %d-byte layer", got, size)
		}
	})

	t.Run("upstream link cut mid-blob: the front resumes, containerd sees nothing", func(t *testing.T) {
		layer, size := push("blueking/cut-upstream:1")
		before := e.status().Counters.Resumes
		e.relay.CutAfter(layer, 600<<10, 1)
		if out, err := pull("blueking/cut-upstream:1"); err != nil {
			t.Fatalf("pull: %v: %s", err, out)
		}
		if got := e.relay.BlobBytes(layer); got > size+64<<10 {
			t.Errorf("the upstream sent %d bytes of a %d-byte layer", got, size)
		}
		if st := e.status(); st.Counters.Resumes != before+1 {
			t.Errorf("resumes %d -> %d, want one more", before, st.Counters.Resumes)
		}
	})

	t.Run("another registry's image: 404 for its ns, containerd falls back", func(t *testing.T) {
		other := registrytest.Start(t)
		img, err := registrytest.Image(1, 4096, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Push("lib/other:1", img); err != nil {
			t.Fatal(err)
		}
		// A catch-all hosts.toml sends every other registry to the cache first.
		if err := ctrd.WriteHosts("_default", "", "http://"+nodeLink.Addr); err != nil {
			t.Fatal(err)
		}
		before := e.status().Counters.NsRejected
		out, err := ctrd.Pull("bkcache-test", other.Addr+"/lib/other:1", "--plain-http")
		if err != nil {
			t.Fatalf("pull of %s/lib/other:1 with the cache first: %v: %s", other.Addr, err, out)
		}
		if st := e.status(); st.Counters.NsRejected == before {
			t.Errorf("the front refused no ns=%s request", other.Addr)
		}
		for _, q := range nodeLink.Log() {
			if strings.Contains(q.Query, "ns="+url.QueryEscape(other.Addr)) && q.Status != http.StatusNotFound {
				t.Errorf("the cache answered %d to %s?%s", q.Status, q.Path, q.Query)
			}
		}
	})
}
