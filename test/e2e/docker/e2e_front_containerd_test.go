//go:build e2e

package docker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/containerdtest"
	"github.com/bkcache/bkcache/internal/registrytest"
)

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
